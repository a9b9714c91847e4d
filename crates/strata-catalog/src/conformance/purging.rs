//! Scenarios about object purges: a purge begins only for an unreferenced key, and fences off
//! every store whose writer read the key's purge state before it (see
//! [`crate::Catalog::begin_object_purge`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::{Catalog, DeleteScope, InstanceRecord, ObjectPurgeState, PURGE_LEASE_MS, StoreOutcome};

use super::{store_all, synthetic_record};

fn now_ms() -> i64 {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970");
    i64::try_from(since_epoch.as_millis()).expect("time fits")
}

fn scope_of(record: &InstanceRecord) -> DeleteScope {
    DeleteScope::Instance {
        study_instance_uid: record.study.study_instance_uid.clone(),
        series_instance_uid: record.series.series_instance_uid.clone(),
        sop_instance_uid: record.instance.sop_instance_uid.clone(),
    }
}

async fn store(
    catalog: &dyn Catalog,
    record: &InstanceRecord,
    purge_generation: i64,
) -> StoreOutcome {
    let mut record = record.clone();
    record.purge_generation = purge_generation;
    catalog.store_instance(&record).await.expect("store runs")
}

/// One key through its purge life: refused while referenced; a purge in progress and one that
/// began after the writer's read both refuse the store, which then leaves nothing behind; the
/// generation read after the purge is admitted; finishing an older purge leaves a newer one
/// running.
pub async fn purges_fence_stores(catalog: Arc<dyn Catalog>) {
    let catalog = catalog.as_ref();
    let record = synthetic_record(1, 1, 1);
    let key = record.object.key.clone();
    assert_eq!(
        catalog.object_purge_state(&key).await.unwrap(),
        ObjectPurgeState::default(),
        "a key never purged has generation 0"
    );
    store_all(catalog, std::slice::from_ref(&record)).await;
    assert_eq!(
        catalog.begin_object_purge(&key).await.unwrap(),
        None,
        "a purge must not begin while a row refers to the key"
    );
    assert_eq!(
        catalog.object_purge_state(&key).await.unwrap().generation,
        0
    );

    catalog.delete(&scope_of(&record)).await.unwrap();
    let generation = catalog
        .begin_object_purge(&key)
        .await
        .unwrap()
        .expect("an unreferenced key is purged");
    assert_eq!(generation, 1);
    let running = catalog.object_purge_state(&key).await.unwrap();
    assert_eq!(running.generation, 1);
    assert!(running.in_progress(now_ms()), "{running:?}");

    // Read before the purge began, or while it runs: the object may be gone.
    assert_eq!(store(catalog, &record, 0).await, StoreOutcome::ObjectPurged);
    assert_eq!(store(catalog, &record, 1).await, StoreOutcome::ObjectPurged);
    assert_eq!(
        catalog
            .instance_sha256(&record.instance.sop_instance_uid)
            .await
            .unwrap(),
        None
    );
    assert_eq!(catalog.count_instances().await.unwrap(), 0);
    assert!(!catalog.object_key_referenced(&key).await.unwrap());

    catalog.finish_object_purge(&key, generation).await.unwrap();
    let finished = catalog.object_purge_state(&key).await.unwrap();
    assert_eq!(finished.generation, 1);
    assert!(!finished.in_progress(now_ms()), "{finished:?}");
    assert_eq!(
        store(catalog, &record, 0).await,
        StoreOutcome::ObjectPurged,
        "a writer that read the state before a whole purge may have lost its object"
    );
    assert_eq!(store(catalog, &record, 1).await, StoreOutcome::Created);
    assert_eq!(catalog.begin_object_purge(&key).await.unwrap(), None);

    // A second purge of the key; the first one's late finish must not end it.
    catalog.delete(&scope_of(&record)).await.unwrap();
    let second = catalog
        .begin_object_purge(&key)
        .await
        .unwrap()
        .expect("unreferenced again");
    assert_eq!(second, 2);
    catalog.finish_object_purge(&key, generation).await.unwrap();
    assert!(
        catalog
            .object_purge_state(&key)
            .await
            .unwrap()
            .in_progress(now_ms())
    );
    catalog.finish_object_purge(&key, second).await.unwrap();
    let state = catalog.object_purge_state(&key).await.unwrap();
    assert_eq!((state.generation, state.in_progress(now_ms())), (2, false));

    // Other keys are not affected by this key's purges.
    let other = synthetic_record(1, 1, 2);
    assert_eq!(store(catalog, &other, 0).await, StoreOutcome::Created);

    // A mark older than the lease is taken for abandoned (the purger died mid-way).
    let abandoned = ObjectPurgeState {
        generation: 3,
        purging_since_ms: Some(now_ms() - PURGE_LEASE_MS - 1),
    };
    assert!(!abandoned.in_progress(now_ms()));
    assert!(abandoned.admits(3, now_ms()));
    assert!(!abandoned.admits(2, now_ms()));
}

/// Deletes and stores again one instance while a purger removes its object, many times over,
/// with an in-memory flag standing for the object: the writer sets it, then stores as the
/// ingest pipeline does (reads the state first, waits while a purge runs, writes again when
/// refused); the purger clears it between beginning and finishing. After each round the
/// instance is stored and its object exists.
pub async fn concurrent_purges_and_stores(catalog: Arc<dyn Catalog>) {
    for round in 0..24_u32 {
        let record = synthetic_record(2, 1, round);
        let key = record.object.key.clone();
        store_all(catalog.as_ref(), std::slice::from_ref(&record)).await;
        catalog.delete(&scope_of(&record)).await.unwrap();
        let object_exists = Arc::new(AtomicBool::new(true));

        let writer = {
            let (catalog, record, object_exists) =
                (catalog.clone(), record.clone(), object_exists.clone());
            tokio::spawn(async move {
                if round % 3 == 1 {
                    tokio::time::sleep(Duration::from_millis(u64::from(round % 4))).await;
                }
                for _attempt in 0..50 {
                    let state = catalog
                        .object_purge_state(&record.object.key)
                        .await
                        .unwrap();
                    if state.in_progress(now_ms()) {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                        continue;
                    }
                    object_exists.store(true, Ordering::SeqCst);
                    tokio::task::yield_now().await;
                    match store(catalog.as_ref(), &record, state.generation).await {
                        StoreOutcome::Created => return,
                        StoreOutcome::ObjectPurged => continue,
                        other => panic!("unexpected store outcome {other:?}"),
                    }
                }
                panic!("the store never got through");
            })
        };
        let purger = {
            let (catalog, key, object_exists) =
                (catalog.clone(), key.clone(), object_exists.clone());
            tokio::spawn(async move {
                if round % 3 == 2 {
                    tokio::time::sleep(Duration::from_millis(u64::from(round % 4))).await;
                }
                if let Some(generation) = catalog.begin_object_purge(&key).await.unwrap() {
                    tokio::task::yield_now().await;
                    object_exists.store(false, Ordering::SeqCst);
                    catalog.finish_object_purge(&key, generation).await.unwrap();
                }
            })
        };
        writer.await.expect("writer");
        purger.await.expect("purger");
        assert!(
            catalog.object_key_referenced(&key).await.unwrap(),
            "round {round}: the instance is stored"
        );
        assert!(
            object_exists.load(Ordering::SeqCst),
            "round {round}: a row refers to an object the purge deleted"
        );
    }
}
