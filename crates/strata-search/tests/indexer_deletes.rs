//! The indexer follows deletions: a study losing instances is re-indexed from the instances it
//! keeps, a study losing its last instance leaves the index, and replaying the log (again, or
//! from scratch) gives the same index.

mod common;

use std::sync::Arc;

use strata_catalog::DeleteScope;
use strata_catalog::conformance::{synthetic_series_uid, synthetic_study_uid};
use strata_search::{DocumentSettings, Indexer, IndexerSettings, SearchIndex};
use tokio_util::sync::CancellationToken;

use common::{catch_up, record_with_word, search};

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
