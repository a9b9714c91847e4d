//! The indexer's incremental rollups: while a study is being stored, each new instance is
//! added to the study's kept rollup instead of the whole study being read again. The
//! documents must be exactly those a full rebuild gives, events applied twice must not count
//! an instance twice, and the kept rollups stay bounded.

mod common;

use std::sync::Arc;

use strata_catalog::Catalog;
use strata_catalog::conformance::synthetic_study_uid;
use strata_search::{DocumentSettings, Indexer, IndexerSettings, MAX_ROLLUPS, SearchIndex};
use tokio_util::sync::CancellationToken;

use common::{catch_up, record_with_word, search};

const WORDS: [&str; 5] = ["wordone", "wordtwo", "wordthree", "wordfour", "wordfive"];

async fn open_catalog(directory: &std::path::Path) -> Arc<dyn Catalog> {
    let uri = format!("sqlite://{}/catalog.db", directory.display());
    strata_catalog::open_catalog(&uri, 4)
        .await
        .expect("catalog")
}

/// What the index answers for every word: the studies and their instance counts.
fn answers(index: &SearchIndex) -> Vec<Vec<(String, u64)>> {
    WORDS.iter().map(|word| search(index, word)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_instances_stored_later_are_added_to_the_kept_rollup() {
    let directory = tempfile::tempdir().expect("temp dir");
    let catalog = open_catalog(directory.path()).await;
    let index = Arc::new(SearchIndex::in_memory(DocumentSettings::default()).expect("index"));
    let indexer = Indexer::new(catalog.clone(), index.clone(), IndexerSettings::default());
    let study = synthetic_study_uid(1).to_string();

    // Two instances, then one at a time, each catch-up reading only what is new.
    for (number, word) in WORDS.iter().enumerate().take(2) {
        catalog
            .store_instance(&record_with_word(1, 1, number as u32 + 1, word))
            .await
            .expect("store");
    }
    assert_eq!(catch_up(&indexer).await, 2);
    assert_eq!(indexer.num_cached_rollups(), 1);
    for (number, word) in WORDS.iter().enumerate().skip(2) {
        // A second series for the last one: the series summaries are rolled up too.
        let series = if number == 4 { 2 } else { 1 };
        catalog
            .store_instance(&record_with_word(1, series, number as u32 + 1, word))
            .await
            .expect("store");
        assert_eq!(catch_up(&indexer).await, 1);
        // Every word stored so far finds the study, with the count of instances so far.
        for earlier in &WORDS[..=number] {
            assert_eq!(
                search(&index, earlier),
                vec![(study.clone(), number as u64 + 1)],
                "{earlier} after {word}"
            );
        }
    }
    let incremental = answers(&index);
    let summary = index
        .search(&strata_search::SearchRequest {
            query: "wordfive".to_owned(),
            ..strata_search::SearchRequest::default()
        })
        .expect("search")
        .hits
        .remove(0)
        .summary;
    assert_eq!(summary.series.len(), 2);
    assert_eq!(
        summary
            .series
            .iter()
            .map(|series| series.num_instances)
            .sum::<u64>(),
        5
    );

    // Replaying the log over the kept rollups (a restart that lost its last commit) counts
    // nothing twice; a rebuild from the catalog gives the same answers.
    index.commit(0).expect("rewind the cursor");
    assert_eq!(catch_up(&indexer).await, 5);
    assert_eq!(answers(&index), incremental);
    indexer
        .rebuild(&CancellationToken::new())
        .await
        .expect("rebuild");
    assert_eq!(answers(&index), incremental);
    // A fresh indexer (no kept rollups) over a fresh index agrees as well.
    let fresh_index = Arc::new(SearchIndex::in_memory(DocumentSettings::default()).expect("index"));
    catch_up(&Indexer::new(
        catalog.clone(),
        fresh_index.clone(),
        IndexerSettings::default(),
    ))
    .await;
    assert_eq!(answers(&fresh_index), incremental);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_kept_rollups_are_bounded_and_a_delete_reads_the_study_again() {
    let directory = tempfile::tempdir().expect("temp dir");
    let catalog = open_catalog(directory.path()).await;
    let index = Arc::new(SearchIndex::in_memory(DocumentSettings::default()).expect("index"));
    let indexer = Indexer::new(catalog.clone(), index.clone(), IndexerSettings::default());
    let num_studies = MAX_ROLLUPS as u32 + 5;
    for study in 1..=num_studies {
        catalog
            .store_instance(&record_with_word(study, 1, 1, "commonword"))
            .await
            .expect("store");
    }
    assert_eq!(catch_up(&indexer).await, u64::from(num_studies));
    assert_eq!(indexer.num_cached_rollups(), MAX_ROLLUPS);
    assert_eq!(search(&index, "commonword").len(), num_studies as usize);

    // A study whose rollup is kept loses an instance: its document is rebuilt from what the
    // catalog holds, not from the kept rollup.
    catalog
        .store_instance(&record_with_word(num_studies, 1, 2, "onlyinsecond"))
        .await
        .expect("store");
    catch_up(&indexer).await;
    let last = synthetic_study_uid(num_studies).to_string();
    assert_eq!(search(&index, "onlyinsecond"), vec![(last.clone(), 2)]);
    catalog
        .delete(&strata_catalog::DeleteScope::Instance {
            study_instance_uid: synthetic_study_uid(num_studies),
            series_instance_uid: record_with_word(num_studies, 1, 2, "")
                .series
                .series_instance_uid,
            sop_instance_uid: record_with_word(num_studies, 1, 2, "")
                .instance
                .sop_instance_uid,
        })
        .await
        .expect("delete");
    assert_eq!(catch_up(&indexer).await, 1);
    assert!(search(&index, "onlyinsecond").is_empty());
    assert!(search(&index, "commonword").contains(&(last, 1)));
}
