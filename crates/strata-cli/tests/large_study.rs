//! Memory stays bounded while storing and retrieving a study larger than 1 GB.
//!
//! Runs when `STRATA_TEST_LARGE=1` (it writes about 2.5 GB to disk); `.ci/run` sets it. The
//! peak resident set size of the server is printed for the docs.

mod common;

use std::time::{Duration, Instant};

use common::{StrataProcess, streaming_stow_body};
use futures::StreamExt;
use strata_tests::synthetic::SyntheticInstance;

/// 100 instances of 2,400 x 2,400 x 16-bit pixels: 1.15 GB.
const NUM_INSTANCES: u32 = 100;
const SIZE: u16 = 2400;
/// The bound asserted on the server's peak RSS while moving a 1.15 GB study.
const MAX_PEAK_RSS_BYTES: u64 = 400 << 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_a_study_over_1_gb_round_trips_in_bounded_memory() {
    if std::env::var("STRATA_TEST_LARGE").as_deref() != Ok("1") {
        eprintln!("skipped: set STRATA_TEST_LARGE=1 to store and retrieve a 1.15 GB study");
        return;
    }
    round_trip("SQLite + local directory", Vec::new()).await;
    match strata_tests::archive::external_backend_env().await.unwrap() {
        Some(env) => round_trip("PostgreSQL + S3", env).await,
        None => eprintln!("PostgreSQL + S3 variant skipped: STRATA_TEST_* not set"),
    }
}

async fn round_trip(backend: &str, env: Vec<(String, String)>) {
    let data_dir = tempfile::tempdir().unwrap();
    let server = StrataProcess::start(data_dir.path(), &env);
    let client = reqwest::Client::new();
    let baseline = server.peak_rss_bytes();

    let parts = (1..=NUM_INSTANCES)
        .map(|index| SyntheticInstance::ct(11, 1, 1, index, SIZE, SIZE).to_part10());
    let (content_type, body) = streaming_stow_body(parts, Duration::ZERO);
    let started = Instant::now();
    let response = client
        .post(format!("{}/studies", server.base_url))
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status();
    let text = response.text().await.unwrap();
    assert_eq!(status, 200, "{text}");
    let store_seconds = started.elapsed().as_secs_f64();
    let after_store = server.peak_rss_bytes();

    let study = SyntheticInstance::ct(11, 1, 1, 1, SIZE, SIZE).study_instance_uid;
    let started = Instant::now();
    let response = client
        .get(format!("{}/studies/{study}", server.base_url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut num_bytes = 0u64;
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        num_bytes += chunk.unwrap().len() as u64;
    }
    let retrieve_seconds = started.elapsed().as_secs_f64();
    let after_retrieve = server.peak_rss_bytes();
    let expected_min = u64::from(NUM_INSTANCES) * u64::from(SIZE) * u64::from(SIZE) * 2;
    assert!(num_bytes > expected_min, "retrieved {num_bytes} bytes");
    eprintln!(
        "large study on {backend}: {:.2} GB; STOW {store_seconds:.1} s ({:.0} MB/s); WADO {retrieve_seconds:.1} s ({:.0} MB/s); \
         peak RSS: start {} MB, after STOW {} MB, after WADO {} MB",
        num_bytes as f64 / 1e9,
        num_bytes as f64 / 1e6 / store_seconds,
        num_bytes as f64 / 1e6 / retrieve_seconds,
        baseline >> 20,
        after_store >> 20,
        after_retrieve >> 20
    );
    assert!(
        after_retrieve < MAX_PEAK_RSS_BYTES,
        "peak RSS {} MB",
        after_retrieve >> 20
    );
}
