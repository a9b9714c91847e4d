//! Search follows the catalog: studies stored through STOW-RS and DIMSE C-STORE (dcmtk
//! `storescu`), updated (an additional instance in a known study; an identical re-send; a
//! conflicting re-send) and deleted through DICOMweb `DELETE` show up in `GET /api/search`
//! within a bounded delay, and replaying the event log after a restart (over an empty index,
//! and over an index whose cursor was rewound) neither loses nor duplicates a document.
//! See docs/search.md, "Consistency".

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use strata_tests::synthetic::SyntheticInstance;
use strata_tests::{Backend, TestArchive};

/// The documented bound (docs/search.md, "Consistency"): poll interval (500 ms) plus one
/// commit, with ample slack for a loaded CI machine.
const MAX_SEARCH_DELAY: Duration = Duration::from_secs(10);

/// UIDs of this file's studies are unique to it.
const SEED: u64 = 90_417;

async fn search(archive: &TestArchive, query: &str) -> serde_json::Value {
    archive.search(&format!("{query}&limit=100")).await
}

/// The Study Instance UIDs and instance counts of the hits of `query`, failing on a duplicate.
async fn hits(archive: &TestArchive, query: &str) -> Vec<(String, u64)> {
    let body = search(archive, query).await;
    let hits: Vec<(String, u64)> = body["hits"]
        .as_array()
        .expect("hits")
        .iter()
        .map(|hit| {
            (
                hit["study_instance_uid"].as_str().expect("uid").to_owned(),
                hit["num_instances"].as_u64().expect("num_instances"),
            )
        })
        .collect();
    let distinct: BTreeSet<&String> = hits.iter().map(|(uid, _)| uid).collect();
    assert_eq!(distinct.len(), hits.len(), "duplicate documents: {hits:?}");
    assert_eq!(body["total"].as_u64(), Some(hits.len() as u64), "{body}");
    hits
}

/// Polls until the hits of `query` are `expected` (sorted); returns the delay.
async fn wait_for_hits(archive: &TestArchive, query: &str, expected: &[(String, u64)]) -> Duration {
    let mut expected = expected.to_vec();
    expected.sort();
    let started = Instant::now();
    loop {
        let mut found = hits(archive, query).await;
        found.sort();
        if found == expected {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < MAX_SEARCH_DELAY,
            "{query}: {found:?} after {:?}, expected {expected:?}",
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn instance(study: u32, series: u32, index: u32, patient_name: &str) -> SyntheticInstance {
    let mut instance = SyntheticInstance::ct(SEED, study, series, index, 8, 8);
    instance.patient_name = patient_name.to_owned();
    instance
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// Sends `object` with dcmtk `storescu` to the archive's DIMSE port.
fn c_store(port: u16, directory: &Path, object: &[u8]) {
    let path = directory.join(format!("{}.dcm", uuid::Uuid::new_v4().simple()));
    std::fs::write(&path, object).expect("write object");
    let output = std::process::Command::new("storescu")
        .args(["-aet", "CONSISTENCY", "-aec", "STRATA", "127.0.0.1"])
        .arg(port.to_string())
        .arg(&path)
        .output()
        .expect("run storescu (dcmtk)");
    assert!(
        output.status.success(),
        "storescu failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

async fn delete(archive: &TestArchive, path: &str) -> (u16, String, String) {
    let response = archive
        .client
        .delete(format!("{}{path}", archive.base_url))
        .send()
        .await
        .expect("delete request");
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    (status, content_type, response.text().await.expect("body"))
}

async fn consistency_on(backend: Backend) {
    let mut archive = TestArchive::start(backend).await.expect("archive");
    let delete_disabled = delete(&archive, "/studies/1.2.3").await;
    assert_eq!(delete_disabled.0, 405, "deletion is off by default");
    let dimse_port = free_port();
    archive.config.dicomweb.allow_delete = true;
    archive.config.dimse.addr = format!("127.0.0.1:{dimse_port}");
    archive
        .restart()
        .await
        .expect("restart with deletion allowed");
    let scratch = tempfile::tempdir().expect("scratch dir");
    let mut delays = Vec::new();

    // Stores: study 1 through STOW-RS, study 2 through C-STORE.
    let study_one = instance(1, 1, 1, "Quorvex^Alpha");
    let study_two = instance(2, 1, 1, "Quorvex^Beta");
    let (status, body) = archive
        .stow("/studies", &[study_one.to_part10()])
        .await
        .expect("stow");
    assert_eq!(status, 200, "{body}");
    c_store(dimse_port, scratch.path(), &study_two.to_part10());
    let uid_one = study_one.study_instance_uid.clone();
    let uid_two = study_two.study_instance_uid.clone();
    delays.push(
        wait_for_hits(
            &archive,
            "q=quorvex",
            &[(uid_one.clone(), 1), (uid_two.clone(), 1)],
        )
        .await,
    );

    // Updates: an additional instance (a new series) in each study, one per protocol.
    let mut report = instance(1, 2, 1, "Quorvex^Alpha");
    report.series_description = "ZANTHIC REPORT".to_owned();
    let (status, body) = archive
        .stow("/studies", &[report.to_part10()])
        .await
        .expect("stow");
    assert_eq!(status, 200, "{body}");
    let mut addendum = instance(2, 2, 1, "Quorvex^Beta");
    addendum.series_description = "VELTRIX ADDENDUM".to_owned();
    c_store(dimse_port, scratch.path(), &addendum.to_part10());
    delays.push(wait_for_hits(&archive, "q=zanthic", &[(uid_one.clone(), 2)]).await);
    delays.push(wait_for_hits(&archive, "q=veltrix", &[(uid_two.clone(), 2)]).await);

    // An identical re-send changes nothing; different content under a stored SOP Instance UID
    // is refused (409, Duplicate SOP Instance), so the document keeps what the catalog holds.
    let (status, _) = archive
        .stow("/studies", &[report.to_part10()])
        .await
        .expect("stow");
    assert_eq!(status, 200);
    let mut changed = report.clone();
    changed.series_description = "WRONGWORD".to_owned();
    let (status, body) = archive
        .stow("/studies", &[changed.to_part10()])
        .await
        .expect("stow");
    assert_eq!(status, 409, "{body}");
    assert_eq!(
        body["00081198"]["Value"][0]["00081197"]["Value"][0], 0x0111,
        "{body}"
    );
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert!(hits(&archive, "q=wrongword").await.is_empty());
    assert_eq!(
        hits(&archive, "q=zanthic").await,
        vec![(uid_one.clone(), 2)]
    );

    // Deletes through DICOMweb: a series (re-index from what remains), then a whole study.
    let (status, _, body) = delete(
        &archive,
        &format!("/studies/{uid_one}/series/{}", report.series_instance_uid),
    )
    .await;
    assert_eq!(status, 204, "{body}");
    delays.push(wait_for_hits(&archive, "q=zanthic", &[]).await);
    let mut remaining = hits(&archive, "q=quorvex").await;
    remaining.sort();
    let mut expected_remaining = vec![(uid_one.clone(), 1), (uid_two.clone(), 2)];
    expected_remaining.sort();
    assert_eq!(remaining, expected_remaining);
    let (status, _, body) = delete(&archive, &format!("/studies/{uid_two}")).await;
    assert_eq!(status, 204, "{body}");
    delays.push(wait_for_hits(&archive, "q=quorvex", &[(uid_one.clone(), 1)]).await);
    assert!(hits(&archive, "q=veltrix").await.is_empty());
    let (status, content_type, body) = delete(&archive, &format!("/studies/{uid_two}")).await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(content_type, "application/problem+json");
    // Objects of deleted instances are gone from the store; the remaining one is kept.
    let objects = archive.store.list("").await.expect("list objects");
    assert_eq!(objects.len(), 1, "{objects:?}");
    // A leftover of a crash between a delete's commit and its object deletion is reported
    // as unreferenced; the referenced object is not.
    let catalog = strata_catalog::open_catalog(&archive.config.catalog.uri, 1)
        .await
        .expect("open the catalog beside the node");
    let leftover_path = scratch.path().join("leftover.dcm");
    std::fs::write(&leftover_path, b"leftover object").expect("write");
    let leftover_sha256 = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(b"leftover object"))
    };
    let leftover_key = strata_types::ObjectKey::for_content(&leftover_sha256);
    archive
        .store
        .put_file(&leftover_key, &leftover_path, &leftover_sha256)
        .await
        .expect("put a leftover object");
    let unreferenced =
        strata_dicomweb::find_unreferenced_objects(catalog.as_ref(), archive.store.as_ref())
            .await
            .expect("find unreferenced objects");
    assert_eq!(unreferenced, vec![leftover_key.clone()]);
    archive.store.delete(&leftover_key).await.expect("delete");
    let expected = [(uid_one.clone(), 1)];

    // A plain restart: the committed index and cursor are reused.
    archive.restart().await.expect("restart");
    wait_for_hits(&archive, "q=quorvex", &expected).await;

    // A replay of the whole log into an empty index.
    let first_index_dir = archive.config.search.index_dir.clone().expect("index dir");
    archive.config.search.index_dir = Some(scratch.path().join("replayed-index"));
    archive.restart().await.expect("restart on an empty index");
    wait_for_hits(&archive, "q=quorvex", &expected).await;
    assert!(hits(&archive, "q=zanthic").await.is_empty());
    assert!(hits(&archive, "q=veltrix").await.is_empty());

    // A replay over the old index with its cursor rewound to 0: every event (stores and
    // deletes) is applied again over existing documents; nothing is duplicated or revived.
    {
        let old_index = strata_search::SearchIndex::open(
            &first_index_dir,
            strata_search::DocumentSettings::default(),
        )
        .expect("open the old index while no node uses it");
        old_index.commit(0).expect("rewind the cursor");
    }
    archive.config.search.index_dir = Some(first_index_dir);
    archive
        .restart()
        .await
        .expect("restart on the rewound index");
    wait_for_hits(&archive, "q=quorvex", &expected).await;
    assert!(hits(&archive, "q=zanthic").await.is_empty());

    let max_delay = delays.iter().max().expect("delays");
    eprintln!(
        "{backend:?}: search followed stores, updates and deletes within {max_delay:?} (all: {delays:?})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_search_follows_stores_updates_and_deletes() {
    for backend in Backend::available() {
        consistency_on(backend).await;
    }
}
