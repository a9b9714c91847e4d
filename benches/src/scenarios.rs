//! The measured scenarios, each against one DICOMweb archive.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde::{Deserialize, Serialize};
use strata_tests::multipart::related_body;
use strata_tests::synthetic::SyntheticInstance;

use crate::rss::RssSampler;

/// One measurement, printed as a JSON line.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BenchResult {
    /// The archive measured (`strata`, `orthanc`) or `machine` for limits.
    pub target: String,
    pub scenario: String,
    pub params: BTreeMap<String, serde_json::Value>,
    pub metrics: BTreeMap<String, f64>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    /// STOW-RS of a CT series, one instance per request, `--concurrency` clients.
    Stow,
    /// STOW-RS of `--studies` small one-instance studies (batched), for the query scenarios.
    Populate,
    /// QIDO-RS study searches by PatientID, PatientName wildcard, date range and modality.
    Qido,
    /// WADO-RS retrieval of the study stored by `stow` (same `--seed`).
    Retrieve,
    /// WADO-RS series metadata of the series stored by `stow` (same `--seed`).
    Metadata,
    /// WADO-RS frame 1 of each of `--instances` instances stored by `stow` (same `--seed`),
    /// then `--repeat` times frame 1 of one of them.
    Frame,
    /// A mixed load for `--duration-secs`, to check that memory stays flat.
    Mixed,
    /// DIMSE C-STORE of a CT series over `--concurrency` parallel associations to `--dimse`.
    Cstore,
}

impl Scenario {
    /// Whether the scenario sends one request at a time (its client runs on one thread).
    pub fn is_one_request_at_a_time(self) -> bool {
        matches!(
            self,
            Scenario::Qido | Scenario::Retrieve | Scenario::Metadata | Scenario::Frame
        )
    }
}

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Name of the archive in the report (`strata`, `orthanc`).
    #[arg(long)]
    pub target: String,
    /// DICOMweb base URL, e.g. http://127.0.0.1:8080/dicomweb (unused by `cstore`).
    #[arg(long, default_value = "")]
    pub dicomweb: String,
    /// DIMSE address `HOST:PORT` (cstore).
    #[arg(long)]
    pub dimse: Option<String>,
    /// Called AE title of the archive (cstore).
    #[arg(long, default_value = "STRATA")]
    pub called_ae: String,
    /// Process id of the archive, to sample its resident memory.
    #[arg(long)]
    pub pid: Option<u32>,
    #[arg(long, value_enum)]
    pub scenario: Scenario,
    /// Instances of the CT series (stow).
    #[arg(long, default_value_t = 1000)]
    pub instances: u32,
    /// Concurrent clients (stow, populate).
    #[arg(long, default_value_t = 1)]
    pub concurrency: usize,
    /// Studies in the archive (populate, qido).
    #[arg(long, default_value_t = 10_000)]
    pub studies: u32,
    /// First study to populate, so that an archive can be grown in steps (populate).
    #[arg(long, default_value_t = 1)]
    pub from: u32,
    /// Requests per query kind (qido, metadata, frame).
    #[arg(long, default_value_t = 200)]
    pub repeat: u32,
    /// Seed of the synthetic UIDs; `retrieve`, `metadata` and `frame` use the series `stow`
    /// stored with the same seed.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Rows and columns of the synthetic CT images.
    #[arg(long, default_value_t = 512)]
    pub size: u16,
    /// Duration of the mixed load.
    #[arg(long, default_value_t = 600)]
    pub duration_secs: u64,
}

/// The populated studies all use this seed so that the query scenario knows their values.
const POPULATE_SEED: u64 = 900;

/// Runs the scenario and returns its measurement.
/// The HTTP client of every scenario (and of the machine's frame floor).
pub(crate) fn http_client() -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()?)
}

pub async fn run(args: RunArgs) -> anyhow::Result<BenchResult> {
    let client = http_client()?;
    let mut params = BTreeMap::new();
    let sampler = RssSampler::start(args.pid);
    let outcome = match args.scenario {
        Scenario::Stow => {
            params.insert("instances".into(), args.instances.into());
            params.insert("concurrency".into(), args.concurrency.into());
            stow(&client, &args).await
        }
        Scenario::Populate => {
            params.insert("studies".into(), args.studies.into());
            populate(&client, &args).await
        }
        Scenario::Qido => {
            params.insert("studies".into(), args.studies.into());
            qido(&client, &args).await
        }
        Scenario::Retrieve => retrieve(&client, &args).await,
        Scenario::Metadata => {
            params.insert("instances".into(), args.instances.into());
            latency(&client, &args, &series_url(&args, "/metadata"), JSON).await
        }
        Scenario::Frame => {
            params.insert("instances".into(), args.instances.into());
            frame(&client, &args).await
        }
        Scenario::Mixed => {
            params.insert("duration_secs".into(), args.duration_secs.into());
            Ok(BTreeMap::new())
        }
        Scenario::Cstore => {
            params.insert("instances".into(), args.instances.into());
            params.insert("associations".into(), args.concurrency.into());
            cstore(&args).await
        }
    };
    let mixed = if args.scenario == Scenario::Mixed {
        Some(mixed(&client, &args).await)
    } else {
        None
    };
    let (peak_rss_mb, samples) = sampler.finish().await;
    let (mut metrics, error) = match mixed.unwrap_or(outcome) {
        Ok(metrics) => (metrics, None),
        Err(error) => (BTreeMap::new(), Some(format!("{error:#}"))),
    };
    if let Some(peak) = peak_rss_mb {
        metrics.insert("peak_rss_mb".into(), peak);
    }
    if args.scenario == Scenario::Mixed && !samples.is_empty() {
        let window = 60.0_f64.min(args.duration_secs as f64 / 4.0);
        let end = samples
            .last()
            .map(|(seconds, _)| *seconds)
            .unwrap_or_default();
        let average = |from: f64, to: f64| {
            let chosen: Vec<f64> = samples
                .iter()
                .filter(|(s, _)| *s >= from && *s <= to)
                .map(|(_, kib)| *kib as f64 / 1024.0)
                .collect();
            chosen.iter().sum::<f64>() / chosen.len().max(1) as f64
        };
        let first = average(0.0, window);
        let last = average(end - window, end);
        metrics.insert("rss_first_window_mb".into(), first);
        metrics.insert("rss_last_window_mb".into(), last);
        metrics.insert("rss_growth_pct".into(), (last - first) / first * 100.0);
    }
    let scenario = scenario_name(&args);
    Ok(BenchResult {
        target: args.target,
        scenario,
        params,
        metrics,
        error,
    })
}

fn scenario_name(args: &RunArgs) -> String {
    match args.scenario {
        Scenario::Stow => format!("stow-c{}", args.concurrency),
        Scenario::Cstore => format!("cstore-a{}", args.concurrency),
        Scenario::Qido => format!("qido-{}", args.studies),
        Scenario::Populate => format!("populate-{}-{}", args.from.max(1), args.studies),
        other => format!("{other:?}").to_lowercase(),
    }
}

fn series_url(args: &RunArgs, suffix: &str) -> String {
    let instance = SyntheticInstance::ct(args.seed, 1, 1, 1, args.size, args.size);
    format!(
        "{}/studies/{}/series/{}{suffix}",
        args.dicomweb, instance.study_instance_uid, instance.series_instance_uid
    )
}

async fn post(client: &reqwest::Client, base: &str, objects: &[Vec<u8>]) -> anyhow::Result<()> {
    let (content_type, body) = related_body(objects);
    let response = client
        .post(format!("{base}/studies"))
        .header("content-type", content_type)
        .header("accept", "application/dicom+json")
        .body(body)
        .send()
        .await?;
    let status = response.status();
    let text = response.text().await?;
    anyhow::ensure!(
        status.is_success(),
        "STOW-RS answered {status}: {}",
        text.chars().take(300).collect::<String>()
    );
    Ok(())
}

async fn stow(client: &reqwest::Client, args: &RunArgs) -> anyhow::Result<BTreeMap<String, f64>> {
    let (objects, num_bytes) = generate_series(args);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..args.concurrency.max(1))
        .map(|_| {
            let (client, objects, next, base) = (
                client.clone(),
                objects.clone(),
                next.clone(),
                args.dicomweb.clone(),
            );
            tokio::spawn(async move {
                loop {
                    let index = next.fetch_add(1, Ordering::Relaxed);
                    let Some(object) = objects.get(index) else {
                        return Ok::<(), anyhow::Error>(());
                    };
                    post(&client, &base, std::slice::from_ref(object)).await?;
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await??;
    }
    let seconds = started.elapsed().as_secs_f64();
    Ok(BTreeMap::from([
        ("seconds".into(), seconds),
        (
            "instances_per_s".into(),
            f64::from(args.instances) / seconds,
        ),
        ("mb_per_s".into(), num_bytes as f64 / 1e6 / seconds),
    ]))
}

/// Generates the CT series of `--seed` before the clock starts (the client must not compete
/// with the server for the CPU while it is measured); returns it and its size in bytes.
fn generate_series(args: &RunArgs) -> (Arc<Vec<Vec<u8>>>, usize) {
    let objects: Vec<Vec<u8>> = (1..=args.instances)
        .map(|index| {
            SyntheticInstance::ct(args.seed, 1, 1, index, args.size, args.size).to_part10()
        })
        .collect();
    let num_bytes = objects.iter().map(Vec::len).sum();
    (Arc::new(objects), num_bytes)
}

/// The attributes of populated study `index`, so that queries can target them.
fn populated_study(index: u32) -> SyntheticInstance {
    let mut instance = SyntheticInstance::ct(POPULATE_SEED, index, 1, 1, 16, 16);
    instance.patient_id = format!("PID{index:07}");
    instance.patient_name = format!("SYNTH^NAME{index:07}");
    instance.study_date = format!(
        "{}{:02}{:02}",
        2020 + index % 5,
        1 + index % 12,
        1 + index % 28
    );
    instance.modality = ["CT", "MR", "CR", "US"][(index % 4) as usize].to_owned();
    instance.accession_number = format!("A{index:08}");
    instance
}

async fn populate(
    client: &reqwest::Client,
    args: &RunArgs,
) -> anyhow::Result<BTreeMap<String, f64>> {
    const BATCH: u32 = 100;
    let next = Arc::new(AtomicUsize::new(0));
    let first_study = args.from.max(1);
    anyhow::ensure!(first_study <= args.studies, "--from is beyond --studies");
    let num_studies = args.studies - first_study + 1;
    let num_batches = num_studies.div_ceil(BATCH) as usize;
    let started = Instant::now();
    let workers: Vec<_> = (0..args.concurrency.max(1))
        .map(|_| {
            let (client, next, base, studies) = (
                client.clone(),
                next.clone(),
                args.dicomweb.clone(),
                args.studies,
            );
            tokio::spawn(async move {
                loop {
                    let batch = next.fetch_add(1, Ordering::Relaxed);
                    if batch >= num_batches {
                        return Ok::<(), anyhow::Error>(());
                    }
                    let first = first_study + batch as u32 * BATCH;
                    let objects: Vec<Vec<u8>> = (first..(first + BATCH).min(studies + 1))
                        .map(|index| populated_study(index).to_part10())
                        .collect();
                    post(&client, &base, &objects).await?;
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await??;
    }
    let seconds = started.elapsed().as_secs_f64();
    Ok(BTreeMap::from([
        ("seconds".into(), seconds),
        ("studies_per_s".into(), f64::from(num_studies) / seconds),
    ]))
}

/// A small deterministic generator for picking query values.
struct Picker(u64);

impl Picker {
    fn next(&mut self, below: u32) -> u32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % u64::from(below.max(1))) as u32 + 1
    }
}

const JSON: &str = "application/dicom+json";
const DICOM: &str = "multipart/related; type=\"application/dicom\"; transfer-syntax=*";

pub(crate) async fn timed_get(
    client: &reqwest::Client,
    url: &str,
    accept: &str,
) -> anyhow::Result<(f64, usize)> {
    let started = Instant::now();
    let response = client.get(url).header("accept", accept).send().await?;
    let status = response.status();
    let body = response.bytes().await?;
    anyhow::ensure!(status.is_success(), "GET {url} answered {status}");
    Ok((started.elapsed().as_secs_f64() * 1000.0, body.len()))
}

pub(crate) fn percentile(sorted: &[f64], fraction: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((sorted.len() as f64 - 1.0) * fraction).round() as usize;
    sorted[rank]
}

async fn qido(client: &reqwest::Client, args: &RunArgs) -> anyhow::Result<BTreeMap<String, f64>> {
    let mut picker = Picker(args.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let mut metrics = BTreeMap::new();
    for kind in ["patient_id", "name_wildcard", "date_range", "modality"] {
        let mut latencies = Vec::with_capacity(args.repeat as usize);
        let mut num_results = 0usize;
        for _ in 0..args.repeat {
            let study = picker.next(args.studies);
            let query = match kind {
                "patient_id" => format!("PatientID=PID{study:07}"),
                // Ten to a hundred matches: a prefix of the six leading digits.
                "name_wildcard" => format!("PatientName=SYNTH%5ENAME{:06}*", study / 10),
                "date_range" => {
                    let study = populated_study(study);
                    let month = &study.study_date[..6];
                    format!("StudyDate={month}01-{month}10&limit=100")
                }
                _ => format!(
                    "ModalitiesInStudy={}&limit=100",
                    ["CT", "MR", "CR", "US"][(study % 4) as usize]
                ),
            };
            let (milliseconds, bytes) =
                timed_get(client, &format!("{}/studies?{query}", args.dicomweb), JSON).await?;
            latencies.push(milliseconds);
            num_results += bytes;
        }
        anyhow::ensure!(
            num_results > 0,
            "no query of kind {kind} returned anything: is the archive populated?"
        );
        latencies.sort_by(f64::total_cmp);
        metrics.insert(format!("{kind}_p50_ms"), percentile(&latencies, 0.5));
        metrics.insert(format!("{kind}_p95_ms"), percentile(&latencies, 0.95));
    }
    Ok(metrics)
}

async fn latency(
    client: &reqwest::Client,
    args: &RunArgs,
    url: &str,
    accept: &str,
) -> anyhow::Result<BTreeMap<String, f64>> {
    let mut latencies = Vec::with_capacity(args.repeat as usize);
    let mut num_bytes = 0;
    for _ in 0..args.repeat {
        let (milliseconds, bytes) = timed_get(client, url, accept).await?;
        latencies.push(milliseconds);
        num_bytes = bytes;
    }
    latencies.sort_by(f64::total_cmp);
    Ok(BTreeMap::from([
        ("p50_ms".into(), percentile(&latencies, 0.5)),
        ("p95_ms".into(), percentile(&latencies, 0.95)),
        ("response_bytes".into(), num_bytes as f64),
    ]))
}

/// Frame 1 of the first `--instances` instances of the `stow` series, once each (`first_`
/// metrics: every request is the first for its instance, as when a viewer opens a series),
/// then `--repeat` times frame 1 of the first instance (as when it scrolls the frames of one
/// multi-frame instance; the headline `p50_ms` and `p95_ms`).
async fn frame(client: &reqwest::Client, args: &RunArgs) -> anyhow::Result<BTreeMap<String, f64>> {
    const ACCEPT: &str = "multipart/related; type=\"application/octet-stream\"; transfer-syntax=*";
    let frame_url = |index: u32| {
        let instance = SyntheticInstance::ct(args.seed, 1, 1, index, args.size, args.size);
        format!(
            "{}/studies/{}/series/{}/instances/{}/frames/1",
            args.dicomweb,
            instance.study_instance_uid,
            instance.series_instance_uid,
            instance.sop_instance_uid
        )
    };
    let mut first = Vec::with_capacity(args.instances as usize);
    for index in 1..=args.instances.max(1) {
        first.push(timed_get(client, &frame_url(index), ACCEPT).await?.0);
    }
    first.sort_by(f64::total_cmp);
    let mut metrics = latency(client, args, &frame_url(1), ACCEPT).await?;
    metrics.insert("first_p50_ms".into(), percentile(&first, 0.5));
    metrics.insert("first_p95_ms".into(), percentile(&first, 0.95));
    Ok(metrics)
}

async fn retrieve(
    client: &reqwest::Client,
    args: &RunArgs,
) -> anyhow::Result<BTreeMap<String, f64>> {
    let instance = SyntheticInstance::ct(args.seed, 1, 1, 1, args.size, args.size);
    let url = format!("{}/studies/{}", args.dicomweb, instance.study_instance_uid);
    let started = Instant::now();
    let response = client.get(&url).header("accept", DICOM).send().await?;
    anyhow::ensure!(
        response.status().is_success(),
        "GET {url} answered {}",
        response.status()
    );
    let mut num_bytes = 0u64;
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        num_bytes += chunk?.len() as u64;
    }
    let seconds = started.elapsed().as_secs_f64();
    Ok(BTreeMap::from([
        ("seconds".into(), seconds),
        ("mb".into(), num_bytes as f64 / 1e6),
        ("mb_per_s".into(), num_bytes as f64 / 1e6 / seconds),
    ]))
}

/// Stores, queries and reads in a loop for the duration; the memory samples are the result.
async fn mixed(client: &reqwest::Client, args: &RunArgs) -> anyhow::Result<BTreeMap<String, f64>> {
    let deadline = Instant::now() + Duration::from_secs(args.duration_secs);
    let mut round = 0u32;
    let mut num_requests = 0u64;
    while Instant::now() < deadline {
        round += 1;
        let objects: Vec<Vec<u8>> = (1..=10)
            .map(|index| {
                SyntheticInstance::ct(args.seed + 7_000, round, 1, index, 256, 256).to_part10()
            })
            .collect();
        post(client, &args.dicomweb, &objects).await?;
        let instance = SyntheticInstance::ct(args.seed + 7_000, round, 1, 1, 256, 256);
        timed_get(
            client,
            &format!(
                "{}/studies?PatientID={}",
                args.dicomweb, instance.patient_id
            ),
            JSON,
        )
        .await?;
        let series = format!(
            "{}/studies/{}/series/{}",
            args.dicomweb, instance.study_instance_uid, instance.series_instance_uid
        );
        timed_get(client, &format!("{series}/metadata"), JSON).await?;
        timed_get(client, &series, DICOM).await?;
        num_requests += 4;
    }
    Ok(BTreeMap::from([
        ("requests".into(), num_requests as f64),
        ("instances_stored".into(), f64::from(round) * 10.0),
    ]))
}

/// C-STORE of the series over parallel associations, one thread each (the SCU is blocking).
async fn cstore(args: &RunArgs) -> anyhow::Result<BTreeMap<String, f64>> {
    let address = args
        .dimse
        .clone()
        .ok_or_else(|| anyhow::anyhow!("--dimse HOST:PORT is required for cstore"))?;
    let (objects, num_bytes) = generate_series(args);
    let first = strata_dimse::read_part10(&objects[0])?;
    let pairs = vec![(
        first.sop_class_uid.clone(),
        first.transfer_syntax_uid.clone(),
    )];
    let next = Arc::new(AtomicUsize::new(0));
    let called_ae = args.called_ae.clone();
    let started = Instant::now();
    let workers: Vec<_> = (0..args.concurrency.max(1))
        .map(|_| {
            let (objects, next, address, called_ae, pairs) = (
                objects.clone(),
                next.clone(),
                address.clone(),
                called_ae.clone(),
                pairs.clone(),
            );
            tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
                let mut scu =
                    strata_dimse::StoreScu::connect(&address, "STRATABENCH", &called_ae, &pairs)?;
                loop {
                    let index = next.fetch_add(1, Ordering::Relaxed);
                    let Some(object) = objects.get(index) else {
                        break;
                    };
                    let parts = strata_dimse::read_part10(object)?;
                    let outcome = scu.store(
                        &parts.sop_class_uid,
                        &parts.sop_instance_uid,
                        &parts.transfer_syntax_uid,
                        &object[parts.data_set_offset..],
                        None,
                    )?;
                    match outcome {
                        strata_dimse::StoreScuOutcome::Status(0x0000 | 0xB000..=0xBFFF) => {}
                        other => anyhow::bail!("C-STORE answered {other:?}"),
                    }
                }
                scu.release()?;
                Ok(())
            })
        })
        .collect();
    for worker in workers {
        worker.await??;
    }
    let seconds = started.elapsed().as_secs_f64();
    Ok(BTreeMap::from([
        ("seconds".into(), seconds),
        (
            "instances_per_s".into(),
            f64::from(args.instances) / seconds,
        ),
        ("mb_per_s".into(), num_bytes as f64 / 1e6 / seconds),
    ]))
}
