//! The indexer against a real (SQLite) catalog: killed mid-way and restarted, it loses
//! nothing and duplicates nothing; re-applying events changes nothing; updates replace.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use strata_catalog::Catalog;
use strata_catalog::conformance::synthetic_record;
use strata_search::{DocumentSettings, Indexer, IndexerSettings, SearchIndex, SearchRequest};
use tokio_util::sync::CancellationToken;

const NUM_STUDIES: u32 = 300;

async fn catalog_with_studies(directory: &Path) -> Arc<dyn Catalog> {
    let uri = format!("sqlite://{}/catalog.db", directory.display());
    let catalog = strata_catalog::open_catalog(&uri, 4)
        .await
        .expect("catalog");
    for study in 1..=NUM_STUDIES {
        for instance in 1..=2 {
            catalog
                .store_instance(&synthetic_record(study, 1, instance))
                .await
                .expect("store");
        }
    }
    catalog
}

/// Returns every indexed Study Instance UID, failing on a duplicate.
fn all_study_uids(index: &SearchIndex) -> BTreeSet<String> {
    let mut uids = BTreeSet::new();
    let mut offset = 0;
    loop {
        let page = index
            .search(&SearchRequest {
                limit: 200,
                offset,
                ..SearchRequest::default()
            })
            .expect("search");
        if page.hits.is_empty() {
            return uids;
        }
        for hit in &page.hits {
            assert!(
                uids.insert(hit.study_instance_uid.clone()),
                "duplicate {}",
                hit.study_instance_uid
            );
        }
        offset += page.hits.len();
    }
}

async fn reopen(directory: &Path) -> Arc<SearchIndex> {
    // The killed writer releases its lock when its last blocking task ends.
    for _ in 0..100 {
        if let Ok(index) = SearchIndex::open(directory, DocumentSettings::default()) {
            return Arc::new(index);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the index lock was never released");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_indexer_killed_mid_way_loses_and_duplicates_nothing() {
    let directory = tempfile::tempdir().expect("temp dir");
    let catalog = catalog_with_studies(directory.path()).await;
    let last_sequence = catalog
        .events_after(0, 10_000)
        .await
        .expect("events")
        .last()
        .expect("events")
        .sequence;
    let index_dir = directory.path().join("search");
    let index =
        Arc::new(SearchIndex::open(&index_dir, DocumentSettings::default()).expect("index"));
    let settings = IndexerSettings {
        poll_interval: Duration::from_millis(10),
        commit_interval: Duration::ZERO, // commit after every batch: many kill points
        batch_size: 20,
    };
    let task = tokio::spawn(
        Indexer::new(catalog.clone(), index.clone(), settings).run(CancellationToken::new()),
    );
    let mut killed_at = 0;
    // Up to 20 s for the first commit on a loaded machine.
    for _ in 0..10_000 {
        killed_at = index.committed_sequence().expect("cursor");
        if killed_at > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    task.abort();
    let _ = task.await;
    drop(index);
    assert!(killed_at > 0, "the indexer committed nothing");

    let index = reopen(&index_dir).await;
    let cursor_after_kill = index.committed_sequence().expect("cursor");
    eprintln!("killed at cursor {cursor_after_kill} of {last_sequence}");
    assert!(cursor_after_kill <= last_sequence);
    let indexer = Indexer::new(catalog.clone(), index.clone(), settings);
    indexer
        .catch_up(&CancellationToken::new())
        .await
        .expect("catch up");
    assert_eq!(index.committed_sequence().expect("cursor"), last_sequence);
    let expected: BTreeSet<String> = (1..=NUM_STUDIES)
        .map(|study| {
            synthetic_record(study, 1, 1)
                .study
                .study_instance_uid
                .to_string()
        })
        .collect();
    assert_eq!(all_study_uids(&index), expected);

    // Idempotent: nothing new to apply; a full rebuild gives the same index.
    assert_eq!(
        indexer
            .catch_up(&CancellationToken::new())
            .await
            .expect("again"),
        0
    );
    let num_events = indexer
        .rebuild(&CancellationToken::new())
        .await
        .expect("rebuild");
    assert_eq!(num_events, u64::from(NUM_STUDIES) * 2);
    assert_eq!(all_study_uids(&index), expected);

    // An update (a new instance in a known study) replaces the study's document.
    catalog
        .store_instance(&synthetic_record(7, 2, 1))
        .await
        .expect("store");
    indexer
        .catch_up(&CancellationToken::new())
        .await
        .expect("catch up");
    assert_eq!(all_study_uids(&index).len(), NUM_STUDIES as usize);
    let study_seven = synthetic_record(7, 1, 1)
        .study
        .study_instance_uid
        .to_string();
    let page = index
        .search(&SearchRequest {
            limit: 200,
            offset: 0,
            query: String::new(),
            ..SearchRequest::default()
        })
        .expect("search");
    let mut found = page
        .hits
        .iter()
        .find(|hit| hit.study_instance_uid == study_seven)
        .cloned();
    if found.is_none() {
        let second = index
            .search(&SearchRequest {
                limit: 200,
                offset: 200,
                ..SearchRequest::default()
            })
            .expect("search");
        found = second
            .hits
            .into_iter()
            .find(|hit| hit.study_instance_uid == study_seven);
    }
    assert_eq!(found.expect("study 7").summary.num_instances, 3);
}
