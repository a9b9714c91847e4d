//! SIGKILL in the middle of a large STOW-RS request leaves no catalog row without its object,
//! and a restart serves everything that was acknowledged.

mod common;

use std::time::Duration;

use common::{StrataProcess, streaming_stow_body, wait_until};
use strata_tests::corpus::dataset_bytes;
use strata_tests::multipart::{parse_related, related_body};
use strata_tests::synthetic::SyntheticInstance;

async fn count_instances(client: &reqwest::Client, base_url: &str) -> usize {
    match client
        .get(format!("{base_url}/instances?limit=1000"))
        .send()
        .await
    {
        Ok(response) if response.status() == 200 => response
            .json::<serde_json::Value>()
            .await
            .map(|v| v.as_array().map_or(0, Vec::len))
            .unwrap_or(0),
        _ => 0,
    }
}

/// Retrieves one instance through WADO-RS and returns its bytes.
async fn retrieve_one(client: &reqwest::Client, url: &str) -> Vec<u8> {
    let response = client.get(url).send().await.unwrap();
    assert_eq!(response.status(), 200, "{url}");
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    let mut parts = parse_related(&content_type, &response.bytes().await.unwrap()).unwrap();
    assert_eq!(parts.len(), 1, "{url}");
    parts.remove(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_sigkill_mid_stow_keeps_the_archive_consistent() {
    sigkill_mid_stow(Vec::new()).await;
    match strata_tests::archive::external_backend_env().await.unwrap() {
        Some(env) => sigkill_mid_stow(env).await,
        None => eprintln!("PostgreSQL + S3 variant skipped: STRATA_TEST_* not set"),
    }
}

/// Runs the scenario on the embedded defaults (`env` empty) or on the backend `env` selects.
async fn sigkill_mid_stow(env: Vec<(String, String)>) {
    let data_dir = tempfile::tempdir().unwrap();
    let client = reqwest::Client::new();
    let server = StrataProcess::start(data_dir.path(), &env);

    // Acknowledged before the crash: 3 requests of 10 instances.
    let mut acknowledged = Vec::new();
    for request in 0..3u32 {
        let instances: Vec<SyntheticInstance> = (1..=10)
            .map(|index| SyntheticInstance::ct(9, 1, request + 1, index, 64, 64))
            .collect();
        let objects: Vec<Vec<u8>> = instances.iter().map(SyntheticInstance::to_part10).collect();
        let (content_type, body) = related_body(&objects);
        let response = client
            .post(format!("{}/studies", server.base_url))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        acknowledged.extend(instances.into_iter().zip(objects));
    }

    // A large request, streamed slowly, killed while the archive is storing it.
    let parts =
        (1..=400u32).map(|index| SyntheticInstance::ct(9, 2, 1, index, 512, 512).to_part10());
    let (content_type, body) = streaming_stow_body(parts, Duration::from_millis(20));
    let request = client
        .post(format!("{}/studies", server.base_url))
        .header("content-type", content_type)
        .body(body)
        .send();
    let in_flight = tokio::spawn(request);
    let base_url = server.base_url.clone();
    let num_acknowledged = acknowledged.len();
    let progressed = wait_until(Duration::from_secs(60), async || {
        count_instances(&client, &base_url).await >= num_acknowledged + 50
    })
    .await;
    assert!(
        progressed,
        "the large request made progress before the kill"
    );
    server.kill();
    let outcome = in_flight.await.unwrap();
    assert!(
        outcome.is_err() || !outcome.unwrap().status().is_success(),
        "the killed request was not acknowledged"
    );

    // Restart on the same data directory.
    let server = StrataProcess::start(data_dir.path(), &env);
    let instances: serde_json::Value = client
        .get(format!("{}/instances?limit=1000", server.base_url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let instances = instances.as_array().unwrap();
    assert!(
        instances.len() >= acknowledged.len() + 50,
        "{} instances after restart",
        instances.len()
    );
    // Every catalogued instance (acknowledged or stored just before the kill) has its object.
    for instance in instances {
        let url = instance["00081190"]["Value"][0].as_str().unwrap();
        let object = retrieve_one(&client, url).await;
        assert!(object.len() > 1000, "{url}: object present and whole");
    }
    // Every acknowledged instance is served byte for byte.
    for (instance, original) in &acknowledged {
        let url = format!(
            "{}/studies/{}/series/{}/instances/{}",
            server.base_url,
            instance.study_instance_uid,
            instance.series_instance_uid,
            instance.sop_instance_uid
        );
        let object = retrieve_one(&client, &url).await;
        assert_eq!(dataset_bytes(&object), dataset_bytes(original), "{url}");
    }
    // The spool of the killed request was cleaned at start-up (subdirectories belong to other
    // services, e.g. the tiering worker's staging area).
    let leftovers: Vec<String> = std::fs::read_dir(data_dir.path().join("spool"))
        .unwrap()
        .map(|entry| entry.unwrap())
        .filter(|entry| entry.file_type().unwrap().is_file())
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        leftovers.is_empty(),
        "spool files left after restart: {leftovers:?}"
    );
}
