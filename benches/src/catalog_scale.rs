//! Catalog growth: fills a catalog through `Catalog::store_instance` in steps (10k, 100k, 1M
//! instances) and measures, at each step, the database size, the commit rate and the latency
//! of the QIDO study searches. The figures back the 10M / 100M estimates in the docs.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Instant;

use strata_catalog::conformance::synthetic_record;
use strata_catalog::{Catalog, CatalogQuery, MatchKey, Matcher, QueryLevel};

use crate::scenarios::BenchResult;

#[derive(Debug, clap::Args)]
pub struct CatalogScaleArgs {
    /// `postgres://...` (or `sqlite://PATH`) of an empty database.
    #[arg(long)]
    pub catalog_uri: String,
    /// Instance counts at which to measure.
    #[arg(long, value_delimiter = ',', default_value = "10000,100000,1000000")]
    pub steps: Vec<u32>,
    /// Instances per study (one series per study).
    #[arg(long, default_value_t = 10)]
    pub instances_per_study: u32,
    /// Concurrent writers.
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
    /// Queries per kind at each step.
    #[arg(long, default_value_t = 100)]
    pub repeat: u32,
}

/// A realistic CT metadata document (a real CT header with 179 private elements), so that
/// the catalog's size per instance is not underestimated.
fn metadata_template() -> String {
    let corpus = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/corpus/valid/ct_explicit_le_private_tags.dcm");
    strata_dicom::inspect_file(&corpus, strata_dicom::InspectLimits::default())
        .map(|inspected| inspected.metadata.to_string())
        .unwrap_or_else(|_| {
            format!(
                "{{\"00081030\":{{\"vr\":\"LO\",\"Value\":[\"{}\"]}}}}",
                "x".repeat(8000)
            )
        })
}

pub async fn run(args: CatalogScaleArgs) -> anyhow::Result<Vec<BenchResult>> {
    let catalog =
        strata_catalog::open_catalog(&args.catalog_uri, args.concurrency as u32 + 2).await?;
    let metadata = Arc::new(metadata_template());
    let per_study = args.instances_per_study.max(1);
    let mut results = Vec::new();
    let mut stored = 0u32;
    for step in &args.steps {
        let next = Arc::new(AtomicU32::new(stored));
        let target = *step;
        let started = Instant::now();
        let writers: Vec<_> = (0..args.concurrency.max(1))
            .map(|_| {
                let (catalog, next, metadata) = (catalog.clone(), next.clone(), metadata.clone());
                tokio::spawn(async move {
                    loop {
                        let index = next.fetch_add(1, Ordering::Relaxed);
                        if index >= target {
                            return Ok::<(), anyhow::Error>(());
                        }
                        let study = index / per_study + 1;
                        let mut record = synthetic_record(study, 1, index % per_study + 1);
                        record.patient.patient_id = format!("PID{study:08}");
                        record.patient.patient_name = format!("SYNTH^NAME{study:08}");
                        record.study.study_date = format!(
                            "{}{:02}{:02}",
                            2015 + study % 10,
                            1 + study % 12,
                            1 + study % 28
                        );
                        record.series.modality =
                            ["CT", "MR", "CR", "US"][(study % 4) as usize].to_owned();
                        record.metadata_json = metadata.as_str().to_owned();
                        catalog.store_instance(&record).await?;
                    }
                })
            })
            .collect();
        for writer in writers {
            writer.await??;
        }
        let seconds = started.elapsed().as_secs_f64();
        let added = target.saturating_sub(stored);
        stored = stored.max(target);
        let num_studies = stored / per_study;
        let mut metrics = BTreeMap::from([
            ("instances".to_owned(), f64::from(stored)),
            ("commits_per_s".to_owned(), f64::from(added) / seconds),
        ]);
        if let Some(bytes) = database_bytes(&args.catalog_uri).await? {
            metrics.insert("database_mb".to_owned(), bytes as f64 / 1e6);
            metrics.insert(
                "bytes_per_instance".to_owned(),
                bytes as f64 / f64::from(stored),
            );
        }
        metrics.extend(query_latencies(catalog.as_ref(), num_studies, args.repeat).await?);
        results.push(BenchResult {
            target: "strata".to_owned(),
            scenario: format!("catalog-{}", engine(&args.catalog_uri)),
            params: BTreeMap::from([("instances".to_owned(), stored.into())]),
            metrics,
            error: None,
        });
        eprintln!(
            "{}",
            serde_json::to_string(results.last().expect("just pushed"))?
        );
    }
    Ok(results)
}

fn engine(uri: &str) -> &'static str {
    if uri.starts_with("sqlite") {
        "sqlite"
    } else {
        "postgres"
    }
}

async fn database_bytes(uri: &str) -> anyhow::Result<Option<u64>> {
    if engine(uri) == "sqlite" {
        let path = uri
            .trim_start_matches("sqlite://")
            .trim_start_matches("sqlite:");
        let size = ["", "-wal"]
            .iter()
            .filter_map(|suffix| std::fs::metadata(format!("{path}{suffix}")).ok())
            .map(|m| m.len())
            .sum();
        return Ok(Some(size));
    }
    use sqlx::Connection;
    let mut connection = sqlx::PgConnection::connect(uri).await?;
    let (bytes,): (i64,) = sqlx::query_as("SELECT pg_database_size(current_database())")
        .fetch_one(&mut connection)
        .await?;
    Ok(Some(bytes as u64))
}

async fn query_latencies(
    catalog: &dyn Catalog,
    num_studies: u32,
    repeat: u32,
) -> anyhow::Result<BTreeMap<String, f64>> {
    let mut metrics = BTreeMap::new();
    let mut state = 0x2545_F491_4F6C_DD1D_u64;
    for kind in ["patient_id", "name_wildcard", "date_range", "modality"] {
        let mut latencies = Vec::new();
        for _ in 0..repeat {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let study = (state % u64::from(num_studies.max(1))) as u32 + 1;
            let filter = match kind {
                "patient_id" => (
                    MatchKey::PatientId,
                    Matcher::Single(format!("PID{study:08}")),
                ),
                "name_wildcard" => (
                    MatchKey::PatientName,
                    Matcher::Wildcard(format!("SYNTH^NAME{:07}*", study / 10)),
                ),
                "date_range" => {
                    let month = format!("{}{:02}", 2015 + study % 10, 1 + study % 12);
                    (
                        MatchKey::StudyDate,
                        Matcher::Range {
                            from: Some(format!("{month}01")),
                            to: Some(format!("{month}10")),
                        },
                    )
                }
                _ => (
                    MatchKey::ModalitiesInStudy,
                    Matcher::Single(["CT", "MR", "CR", "US"][(study % 4) as usize].to_owned()),
                ),
            };
            let query = CatalogQuery {
                level: QueryLevel::Study,
                study_scope: None,
                series_scope: None,
                filters: vec![filter],
                limit: Some(100),
                offset: 0,
                with_metadata: false,
            };
            let started = Instant::now();
            let found = catalog.query(&query).await?;
            latencies.push(started.elapsed().as_secs_f64() * 1000.0);
            anyhow::ensure!(
                !found.is_empty() || kind == "date_range",
                "{kind} query found nothing"
            );
        }
        latencies.sort_by(f64::total_cmp);
        metrics.insert(format!("{kind}_p50_ms"), latencies[latencies.len() / 2]);
        metrics.insert(
            format!("{kind}_p95_ms"),
            latencies[(latencies.len() * 95 / 100).min(latencies.len() - 1)],
        );
    }
    Ok(metrics)
}
