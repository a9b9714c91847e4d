//! The indexer follows deletions: a study losing instances is re-indexed from the instances it
//! keeps, a study losing its last instance leaves the index, and replaying the log (again, or
//! from scratch) gives the same index.

use std::sync::Arc;

use strata_catalog::conformance::{synthetic_record, synthetic_series_uid, synthetic_study_uid};
use strata_catalog::{DeleteScope, InstanceRecord};
use strata_search::{DocumentSettings, Indexer, IndexerSettings, SearchIndex, SearchRequest};
use tokio_util::sync::CancellationToken;

/// A synthetic record whose metadata carries `word` in its Study Description.
fn record_with_word(study: u32, series: u32, instance: u32, word: &str) -> InstanceRecord {
    let mut record = synthetic_record(study, series, instance);
    record.metadata_json = format!(
        r#"{{"00080016":{{"vr":"UI","Value":["{}"]}},"00080018":{{"vr":"UI","Value":["{}"]}},"0020000E":{{"vr":"UI","Value":["{}"]}},"00081030":{{"vr":"LO","Value":["{word}"]}}}}"#,
        record.instance.sop_class_uid,
        record.instance.sop_instance_uid,
        record.series.series_instance_uid,
    );
    record
}

fn search(index: &SearchIndex, query: &str) -> Vec<(String, u64)> {
    let response = index
        .search(&SearchRequest {
            query: query.to_owned(),
            limit: 100,
            ..SearchRequest::default()
        })
        .expect("search");
    let mut hits: Vec<(String, u64)> = response
        .hits
        .into_iter()
        .map(|hit| (hit.study_instance_uid, hit.summary.num_instances))
        .collect();
    hits.sort();
    hits
}

async fn catch_up(indexer: &Indexer) -> u64 {
    indexer
        .catch_up(&CancellationToken::new())
        .await
        .expect("catch up")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_deletes_reindex_or_remove_studies_and_replay_is_idempotent() {
    let directory = tempfile::tempdir().expect("temp dir");
    let uri = format!("sqlite://{}/catalog.db", directory.path().display());
    let catalog = strata_catalog::open_catalog(&uri, 4)
        .await
        .expect("catalog");
    let records = [
        record_with_word(1, 1, 1, "alphaword"),
        record_with_word(1, 2, 1, "zorblax"),
        record_with_word(2, 1, 1, "alphaword"),
        record_with_word(3, 1, 1, "gammaword"),
    ];
    for record in &records {
        catalog.store_instance(record).await.expect("store");
    }
    let index = Arc::new(SearchIndex::in_memory(DocumentSettings::default()).expect("index"));
    let indexer = Indexer::new(catalog.clone(), index.clone(), IndexerSettings::default());
    catch_up(&indexer).await;
    let study = |number: u32| synthetic_study_uid(number).to_string();
    assert_eq!(search(&index, "zorblax"), vec![(study(1), 2)]);
    assert_eq!(index.num_studies(), 3);

    // Deleting the series that carried "zorblax": study 1 is re-indexed from what remains.
    catalog
        .delete(&DeleteScope::Series {
            study_instance_uid: synthetic_study_uid(1),
            series_instance_uid: synthetic_series_uid(1, 2),
        })
        .await
        .expect("delete series");
    assert_eq!(catch_up(&indexer).await, 1, "one InstanceDeleted event");
    assert!(search(&index, "zorblax").is_empty());
    assert_eq!(
        search(&index, "alphaword"),
        vec![(study(1), 1), (study(2), 1)]
    );

    // Deleting a whole study removes its document; the others stay.
    catalog
        .delete(&DeleteScope::Study {
            study_instance_uid: synthetic_study_uid(2),
        })
        .await
        .expect("delete study");
    catch_up(&indexer).await;
    assert_eq!(search(&index, "alphaword"), vec![(study(1), 1)]);
    assert_eq!(index.num_studies(), 2);

    // A deleted instance stored again comes back.
    catalog
        .store_instance(&records[1])
        .await
        .expect("store again");
    catch_up(&indexer).await;
    assert_eq!(search(&index, "zorblax"), vec![(study(1), 2)]);

    // Replays: nothing new to apply, and a rebuild from the whole log (stores, deletes,
    // re-store) gives the same documents, none lost or duplicated.
    let before: Vec<_> = search(&index, "");
    assert_eq!(catch_up(&indexer).await, 0);
    let num_events = indexer
        .rebuild(&CancellationToken::new())
        .await
        .expect("rebuild");
    assert_eq!(num_events, 4 + 1 + 1 + 1);
    assert_eq!(search(&index, ""), before);
    assert_eq!(index.num_studies(), 2);

    // Replaying a suffix of the log over a committed index (a restart that lost its last
    // commit) changes nothing either.
    index.commit(0).expect("rewind the cursor");
    assert_eq!(catch_up(&indexer).await, num_events);
    assert_eq!(search(&index, ""), before);
}
