//! Full-text search end to end (issue 5): studies stored through STOW-RS become searchable at
//! `GET /api/search` within a bounded delay, and a node restarted mid-indexing loses and
//! duplicates nothing. See docs/search.md.

use std::time::{Duration, Instant};

use strata_tests::synthetic::SyntheticInstance;
use strata_tests::{Backend, TestArchive};

/// The documented bound: poll interval (500 ms) + one commit, with ample slack for a loaded
/// CI machine.
const MAX_SEARCH_DELAY: Duration = Duration::from_secs(10);

async fn search(archive: &TestArchive, query: &str) -> serde_json::Value {
    archive.search(query).await
}

/// Polls until `query` returns `expected_total` studies; returns the delay.
async fn wait_for_total(archive: &TestArchive, query: &str, expected_total: u64) -> Duration {
    let started = Instant::now();
    loop {
        let body = search(archive, query).await;
        if body["total"].as_u64() == Some(expected_total) {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < MAX_SEARCH_DELAY,
            "{query}: total {} after {:?}, expected {expected_total}",
            body["total"],
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn study(study: u32, patient_name: &str, description: &str) -> Vec<u8> {
    let mut instance = SyntheticInstance::ct(77, study, 1, 1, 8, 8);
    instance.patient_name = patient_name.to_owned();
    instance.study_description = description.to_owned();
    instance.to_part10()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_stored_study_is_searchable_within_bounded_delay() {
    let archive = TestArchive::start(Backend::SqliteLocal)
        .await
        .expect("archive");
    let (status, _) = archive
        .stow(
            "/studies",
            &[study(1, "Zyxwert^Hélène", "CT THORAX LOW DOSE")],
        )
        .await
        .expect("stow");
    assert_eq!(status, 200);
    let delay = wait_for_total(&archive, "q=zyxwert+helene", 1).await;
    eprintln!("stored study searchable after {delay:?}");

    // Typo, accents, filters, links, snippets.
    let body = search(&archive, "q=Zyxwret&modality=CT&date=20240101-20251231").await;
    assert_eq!(body["total"], 1, "{body}");
    let hit = &body["hits"][0];
    let study_uid = hit["study_instance_uid"].as_str().expect("uid");
    assert_eq!(
        hit["dicomweb_url"],
        format!("/dicomweb/studies/{study_uid}")
    );
    assert_eq!(hit["fhir_url"], format!("/fhir/ImagingStudy/{study_uid}"));
    let body = search(&archive, "q=%22low+dose%22").await;
    assert!(
        body["hits"][0]["snippet"]
            .as_str()
            .expect("snippet")
            .contains("<b>LOW</b>"),
        "{body}"
    );
    assert_eq!(body["facets"]["modality"]["CT"], 1);

    // Bad parameters: 400 problem+json naming the parameter.
    for (query, parameter) in [
        ("limit=0", "limit"),
        ("date=2024", "date"),
        ("sort=size", "sort"),
        ("color=red", "color"),
    ] {
        let response = archive
            .client
            .get(archive.api_url(&format!("/search?{query}")))
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), 400, "{query}");
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json"
        );
        let problem: serde_json::Value = response.json().await.expect("json");
        assert!(
            problem["detail"]
                .as_str()
                .expect("detail")
                .contains(parameter),
            "{problem}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_restart_mid_indexing_loses_and_duplicates_nothing() {
    let mut archive = TestArchive::start(Backend::SqliteLocal)
        .await
        .expect("archive");
    let num_studies = 40;
    for batch in 0..2 {
        let objects: Vec<Vec<u8>> = (1..=num_studies / 2)
            .map(|number| {
                let study_number = batch * 100 + number;
                study(
                    study_number,
                    &format!("Restart^Patient{study_number}"),
                    "MR KNEE",
                )
            })
            .collect();
        let (status, _) = archive.stow("/studies", &objects).await.expect("stow");
        assert_eq!(status, 200);
        if batch == 0 {
            // Stop the node while the indexer is (probably) still applying the first batch.
            archive.restart().await.expect("restart");
        }
    }
    wait_for_total(&archive, "q=restart", u64::from(num_studies)).await;
    let body = search(&archive, "q=restart&limit=200").await;
    let uids: std::collections::BTreeSet<_> = body["hits"]
        .as_array()
        .expect("hits")
        .iter()
        .map(|hit| hit["study_instance_uid"].as_str().expect("uid").to_owned())
        .collect();
    assert_eq!(uids.len(), num_studies as usize, "each study exactly once");
    // Stored again (idempotent STOW): still one document per study.
    let (status, _) = archive
        .stow("/studies", &[study(1, "Restart^Patient1", "MR KNEE")])
        .await
        .expect("stow");
    assert_eq!(status, 200);
    archive.restart().await.expect("restart");
    wait_for_total(&archive, "q=restart", u64::from(num_studies)).await;
}
