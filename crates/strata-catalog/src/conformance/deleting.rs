//! Scenarios about deletion: scopes, emptied parents, counters, events, unknown UIDs.

use std::sync::Arc;

use crate::{Catalog, CatalogErrorKind, DeleteScope, EventKind, QueryLevel, StoreOutcome};

use super::{
    query_at, store_all, synthetic_record, synthetic_series_uid, synthetic_sop_instance_uid,
    synthetic_study_uid,
};

/// Returns `(num_study_series, num_study_instances)` of every study, in storage order.
async fn study_counts(catalog: &dyn Catalog) -> Vec<(String, i64, i64)> {
    let matches = catalog
        .query(&query_at(QueryLevel::Study, vec![]))
        .await
        .expect("study query succeeds");
    matches
        .iter()
        .map(|found| {
            (
                found.study.study_instance_uid.to_string(),
                found.num_study_series,
                found.num_study_instances,
            )
        })
        .collect()
}

/// Returns `(series uid, num_series_instances)` of every series, in storage order.
async fn series_counts(catalog: &dyn Catalog) -> Vec<(String, i64)> {
    let matches = catalog
        .query(&query_at(QueryLevel::Series, vec![]))
        .await
        .expect("series query succeeds");
    matches
        .iter()
        .map(|found| {
            (
                found
                    .series
                    .as_ref()
                    .expect("series level has series")
                    .series_instance_uid
                    .to_string(),
                found.num_series_instances.expect("series level counts"),
            )
        })
        .collect()
}

fn instance_scope(study: u32, series: u32, instance: u32) -> DeleteScope {
    DeleteScope::Instance {
        study_instance_uid: synthetic_study_uid(study),
        series_instance_uid: synthetic_series_uid(study, series),
        sop_instance_uid: synthetic_sop_instance_uid(study, series, instance),
    }
}

/// Deleting an instance, then a series, then the last instance of a study, then a whole study:
/// emptied series, studies and patients go, counters follow, one event per removed instance
/// names its UIDs and object key, and removed keys are no longer referenced.
pub async fn deletion_scopes(catalog: Arc<dyn Catalog>) {
    let mut records = Vec::new();
    for series in 1..=2 {
        for instance in 1..=2 {
            records.push(synthetic_record(1, series, instance));
        }
    }
    // Study 2 belongs to the patient of study 1: the patient must outlive study 1.
    let mut same_patient = synthetic_record(2, 1, 1);
    same_patient.patient = records[0].patient.clone();
    records.push(same_patient);
    let other_patient = synthetic_record(3, 1, 1);
    records.push(other_patient.clone());
    store_all(&*catalog, &records).await;
    let last_stored = catalog
        .events_after(0, 100)
        .await
        .unwrap()
        .last()
        .unwrap()
        .sequence;

    // One instance.
    let outcome = catalog.delete(&instance_scope(1, 1, 1)).await.unwrap();
    assert_eq!(outcome.instances.len(), 1);
    assert_eq!(
        outcome.instances[0].sop_instance_uid,
        records[0].instance.sop_instance_uid
    );
    assert_eq!(outcome.instances[0].object, records[0].object);
    assert!(outcome.removed_series.is_empty());
    assert!(!outcome.study_removed && !outcome.patient_removed);
    assert_eq!(catalog.count_instances().await.unwrap(), 5);
    assert!(
        !catalog
            .object_key_referenced(&records[0].object.key)
            .await
            .unwrap()
    );
    assert!(
        catalog
            .object_key_referenced(&records[1].object.key)
            .await
            .unwrap()
    );
    let study_1 = synthetic_study_uid(1).to_string();
    assert_eq!(study_counts(&*catalog).await[0], (study_1.clone(), 2, 3));
    assert_eq!(
        series_counts(&*catalog).await[0],
        (synthetic_series_uid(1, 1).to_string(), 1)
    );
    let events = catalog.events_after(last_stored, 100).await.unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].kind, EventKind::InstanceDeleted);
    assert_eq!(
        events[0].study_instance_uid,
        records[0].study.study_instance_uid
    );
    assert_eq!(
        events[0].series_instance_uid,
        records[0].series.series_instance_uid
    );
    assert_eq!(
        events[0].sop_instance_uid,
        records[0].instance.sop_instance_uid
    );
    assert_eq!(events[0].object_key, records[0].object.key);

    // A whole series: both instances, the series goes.
    let outcome = catalog
        .delete(&DeleteScope::Series {
            study_instance_uid: synthetic_study_uid(1),
            series_instance_uid: synthetic_series_uid(1, 2),
        })
        .await
        .unwrap();
    assert_eq!(outcome.instances.len(), 2);
    assert_eq!(outcome.removed_series, vec![synthetic_series_uid(1, 2)]);
    assert!(!outcome.study_removed);
    assert_eq!(study_counts(&*catalog).await[0], (study_1.clone(), 1, 1));
    let events = catalog.events_after(last_stored, 100).await.unwrap();
    assert_eq!(events.len(), 3);
    assert!(
        events
            .iter()
            .all(|event| event.kind == EventKind::InstanceDeleted)
    );
    assert!(
        events
            .windows(2)
            .all(|pair| pair[0].sequence < pair[1].sequence)
    );

    // The last instance of study 1: series and study go, the patient (of study 2) stays.
    let outcome = catalog.delete(&instance_scope(1, 1, 2)).await.unwrap();
    assert_eq!(outcome.removed_series, vec![synthetic_series_uid(1, 1)]);
    assert!(outcome.study_removed);
    assert!(!outcome.patient_removed);
    let remaining: Vec<String> = study_counts(&*catalog)
        .await
        .into_iter()
        .map(|(uid, _, _)| uid)
        .collect();
    assert_eq!(
        remaining,
        vec![
            synthetic_study_uid(2).to_string(),
            synthetic_study_uid(3).to_string()
        ]
    );
    assert!(
        catalog
            .instance_locations(&synthetic_study_uid(1), None, None)
            .await
            .unwrap()
            .is_empty()
    );

    // Whole studies: each leaves its patient without studies.
    for study in [2, 3] {
        let outcome = catalog
            .delete(&DeleteScope::Study {
                study_instance_uid: synthetic_study_uid(study),
            })
            .await
            .unwrap();
        assert_eq!(outcome.instances.len(), 1);
        assert!(
            outcome.study_removed && outcome.patient_removed,
            "study {study}"
        );
    }
    assert_eq!(catalog.count_instances().await.unwrap(), 0);
    assert!(study_counts(&*catalog).await.is_empty());
    assert!(
        catalog
            .query(&query_at(QueryLevel::Instance, vec![]))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        catalog.events_after(last_stored, 100).await.unwrap().len(),
        records.len()
    );
}

/// Unknown UIDs, and known UIDs under the wrong parent, are `NotFound` and change nothing.
pub async fn deleting_unknown_uids(catalog: Arc<dyn Catalog>) {
    store_all(
        &*catalog,
        &[synthetic_record(1, 1, 1), synthetic_record(2, 1, 1)],
    )
    .await;
    let unknown_scopes = [
        DeleteScope::Study {
            study_instance_uid: synthetic_study_uid(9),
        },
        DeleteScope::Series {
            study_instance_uid: synthetic_study_uid(1),
            series_instance_uid: synthetic_series_uid(1, 9),
        },
        // The series of study 2 under study 1.
        DeleteScope::Series {
            study_instance_uid: synthetic_study_uid(1),
            series_instance_uid: synthetic_series_uid(2, 1),
        },
        instance_scope(1, 1, 9),
        DeleteScope::Instance {
            study_instance_uid: synthetic_study_uid(1),
            series_instance_uid: synthetic_series_uid(1, 1),
            sop_instance_uid: synthetic_sop_instance_uid(2, 1, 1),
        },
    ];
    for scope in &unknown_scopes {
        let error = catalog.delete(scope).await.unwrap_err();
        assert_eq!(error.kind, CatalogErrorKind::NotFound, "{scope:?}: {error}");
    }
    assert_eq!(catalog.count_instances().await.unwrap(), 2);
    assert_eq!(catalog.events_after(0, 100).await.unwrap().len(), 2);
}

/// A deleted instance can be stored again (same content, so the same object key): it is a new
/// instance, with a new `InstanceStored` event after the `InstanceDeleted` one.
pub async fn store_after_delete(catalog: Arc<dyn Catalog>) {
    let record = synthetic_record(1, 1, 1);
    store_all(&*catalog, std::slice::from_ref(&record)).await;
    catalog.delete(&instance_scope(1, 1, 1)).await.unwrap();
    assert!(
        !catalog
            .object_key_referenced(&record.object.key)
            .await
            .unwrap()
    );
    assert_eq!(
        catalog
            .instance_sha256(&record.instance.sop_instance_uid)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        catalog.store_instance(&record).await.unwrap(),
        StoreOutcome::Created
    );
    assert!(
        catalog
            .object_key_referenced(&record.object.key)
            .await
            .unwrap()
    );
    let kinds: Vec<EventKind> = catalog
        .events_after(0, 100)
        .await
        .unwrap()
        .iter()
        .map(|event| event.kind)
        .collect();
    assert_eq!(
        kinds,
        vec![
            EventKind::InstanceStored,
            EventKind::InstanceDeleted,
            EventKind::InstanceStored
        ]
    );
    assert_eq!(
        study_counts(&*catalog).await,
        vec![(synthetic_study_uid(1).to_string(), 1, 1)]
    );
}

/// Deletes and stores of the same study racing each other leave counters equal to the rows.
/// (One instance stays throughout: a store racing the removal of its whole study may fail
/// with a retryable error, see `Catalog::delete`.)
pub async fn concurrent_deletes_and_stores(catalog: Arc<dyn Catalog>) {
    let records: Vec<_> = (1..=9)
        .map(|instance| synthetic_record(1, 1, instance))
        .collect();
    store_all(&*catalog, &records[..4]).await;
    store_all(&*catalog, &records[8..]).await;
    let mut tasks = Vec::new();
    for instance in 1..=4 {
        let catalog = Arc::clone(&catalog);
        tasks.push(tokio::spawn(async move {
            catalog
                .delete(&instance_scope(1, 1, instance))
                .await
                .map(|_| ())
        }));
    }
    for record in &records[4..8] {
        let catalog = Arc::clone(&catalog);
        let owned_record = record.clone();
        tasks.push(tokio::spawn(async move {
            catalog.store_instance(&owned_record).await.map(|_| ())
        }));
    }
    for task in tasks {
        task.await
            .expect("task runs")
            .expect("no deadlock or error");
    }
    assert_eq!(catalog.count_instances().await.unwrap(), 5);
    assert_eq!(
        study_counts(&*catalog).await,
        vec![(synthetic_study_uid(1).to_string(), 1, 5)]
    );
    assert_eq!(series_counts(&*catalog).await[0].1, 5);
}

/// Deletes the last instance of a study (which removes the study, its series and patient rows)
/// while another instance is stored into the same study (even rounds) or into a new study of
/// the same patient (odd rounds), many times over: the store must succeed whichever commits
/// first, and its study ends with exactly the stored instance.
pub async fn store_racing_the_removal_of_its_study(catalog: Arc<dyn Catalog>) {
    for round in 0..40_u32 {
        let study = 100 + round;
        let last = synthetic_record(study, 1, 1);
        let (incoming_study, incoming) = if round % 2 == 0 {
            (study, synthetic_record(study, 1, 2))
        } else {
            let mut incoming = synthetic_record(study + 1000, 1, 1);
            incoming.patient = last.patient.clone();
            (study + 1000, incoming)
        };
        store_all(&*catalog, std::slice::from_ref(&last)).await;
        let deleting = {
            let catalog = Arc::clone(&catalog);
            tokio::spawn(async move { catalog.delete(&instance_scope(study, 1, 1)).await })
        };
        let storing = {
            let catalog = Arc::clone(&catalog);
            let incoming = incoming.clone();
            tokio::spawn(async move { catalog.store_instance(&incoming).await })
        };
        deleting
            .await
            .expect("delete task runs")
            .expect("the delete succeeds");
        let stored = storing.await.expect("store task runs");
        assert_eq!(
            stored.as_ref().ok(),
            Some(&StoreOutcome::Created),
            "round {round}: {stored:?}"
        );
        assert_eq!(
            study_counts(&*catalog)
                .await
                .into_iter()
                .filter(|(uid, _, _)| *uid == synthetic_study_uid(incoming_study).to_string())
                .collect::<Vec<_>>(),
            vec![(synthetic_study_uid(incoming_study).to_string(), 1, 1)],
            "round {round}"
        );
    }
}
