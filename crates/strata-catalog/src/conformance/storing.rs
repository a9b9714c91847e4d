//! Scenarios about writing: store outcomes, identity, concurrency, merging, events, locations.

use std::sync::Arc;

use crate::{Catalog, EventKind, MatchKey, QueryLevel, StoreOutcome};

use super::{
    matching_studies, query_at, single, store_all, study_uid_text, synthetic_record,
    synthetic_series_uid, synthetic_sop_instance_uid, synthetic_study_uid, with_other_content,
};

/// Identical re-store is `AlreadyStored` without a new event; different content under the same
/// SOP Instance UID is `Conflict` and changes nothing.
pub async fn store_outcomes(catalog: Arc<dyn Catalog>) {
    let record = synthetic_record(1, 1, 1);
    let sop_instance_uid = &record.instance.sop_instance_uid;
    assert_eq!(
        catalog.instance_sha256(sop_instance_uid).await.unwrap(),
        None
    );

    assert_eq!(
        catalog.store_instance(&record).await.unwrap(),
        StoreOutcome::Created
    );
    assert_eq!(
        catalog
            .instance_sha256(sop_instance_uid)
            .await
            .unwrap()
            .as_deref(),
        Some(record.object.sha256.as_str())
    );
    assert_eq!(
        catalog.store_instance(&record).await.unwrap(),
        StoreOutcome::AlreadyStored
    );
    assert_eq!(
        catalog.events_after(0, 100).await.unwrap().len(),
        1,
        "re-store appends no event"
    );

    let other_content = with_other_content(record.clone(), 1);
    assert_eq!(
        catalog.store_instance(&other_content).await.unwrap(),
        StoreOutcome::Conflict {
            existing_sha256: record.object.sha256.clone()
        }
    );
    assert_eq!(catalog.count_instances().await.unwrap(), 1);
    assert_eq!(
        catalog.events_after(0, 100).await.unwrap().len(),
        1,
        "conflict appends no event"
    );
    let locations = catalog
        .instance_locations(
            &record.study.study_instance_uid,
            None,
            Some(sop_instance_uid),
        )
        .await
        .unwrap();
    assert_eq!(locations.len(), 1);
    assert_eq!(
        locations[0].object, record.object,
        "conflict leaves the stored object"
    );
    let studies = catalog
        .query(&query_at(QueryLevel::Study, vec![]))
        .await
        .unwrap();
    assert_eq!(studies.len(), 1);
    assert_eq!(
        (studies[0].num_study_series, studies[0].num_study_instances),
        (1, 1)
    );
}

/// The same Patient ID from two issuers makes two patients that never merge.
pub async fn patients_with_same_id_and_different_issuers(catalog: Arc<dyn Catalog>) {
    let mut from_a = synthetic_record(1, 1, 1);
    from_a.patient.patient_id = "SHARED-ID".to_owned();
    from_a.patient.issuer_of_patient_id = "HOSP-A".to_owned();
    from_a.patient.patient_name = "Alpha^Synthetic".to_owned();
    let mut from_b = synthetic_record(2, 1, 1);
    from_b.patient.patient_id = "SHARED-ID".to_owned();
    from_b.patient.issuer_of_patient_id = "HOSP-B".to_owned();
    from_b.patient.patient_name = "Beta^Synthetic".to_owned();
    let mut from_a_again = synthetic_record(3, 1, 1);
    from_a_again.patient = from_a.patient.clone();
    store_all(
        catalog.as_ref(),
        &[from_a.clone(), from_b.clone(), from_a_again],
    )
    .await;

    let by_id = matching_studies(
        catalog.as_ref(),
        vec![(MatchKey::PatientId, single("SHARED-ID"))],
    )
    .await;
    assert_eq!(
        by_id,
        [study_uid_text(1), study_uid_text(2), study_uid_text(3)]
    );

    for (issuer, expected_studies, expected_name) in [
        ("HOSP-A", vec![1, 3], "Alpha^Synthetic"),
        ("HOSP-B", vec![2], "Beta^Synthetic"),
    ] {
        let query = query_at(
            QueryLevel::Study,
            vec![
                (MatchKey::PatientId, single("SHARED-ID")),
                (MatchKey::IssuerOfPatientId, single(issuer)),
            ],
        );
        let matches = catalog.query(&query).await.unwrap();
        let uids: Vec<String> = matches
            .iter()
            .map(|found| found.study.study_instance_uid.to_string())
            .collect();
        let expected: Vec<String> = expected_studies.into_iter().map(study_uid_text).collect();
        assert_eq!(uids, expected, "issuer {issuer}");
        for found in &matches {
            assert_eq!(
                found.patient.patient_name, expected_name,
                "names of two issuers stay apart"
            );
            assert_eq!(found.patient.issuer_of_patient_id, issuer);
        }
    }
}

/// Concurrent writers: different instances all land, racing copies of one instance leave one
/// row, and counters and events stay exact.
pub async fn concurrent_stores(catalog: Arc<dyn Catalog>) {
    async fn store_concurrently(
        catalog: &Arc<dyn Catalog>,
        records: Vec<crate::InstanceRecord>,
    ) -> Vec<StoreOutcome> {
        let tasks: Vec<_> = records
            .into_iter()
            .map(|record| {
                let catalog = Arc::clone(catalog);
                tokio::spawn(async move { catalog.store_instance(&record).await })
            })
            .collect();
        let mut outcomes = Vec::new();
        for task in tasks {
            outcomes.push(
                task.await
                    .expect("store task does not panic")
                    .expect("store succeeds"),
            );
        }
        outcomes
    }

    // Eight instances of one new series, study and patient.
    let outcomes = store_concurrently(
        &catalog,
        (1..=8)
            .map(|instance| synthetic_record(1, 1, instance))
            .collect(),
    )
    .await;
    assert!(
        outcomes
            .iter()
            .all(|outcome| *outcome == StoreOutcome::Created),
        "{outcomes:?}"
    );

    // One instance from four tasks.
    let same_instance = synthetic_record(1, 1, 9);
    let outcomes = store_concurrently(&catalog, vec![same_instance.clone(); 4]).await;
    assert_eq!(
        outcomes
            .iter()
            .filter(|outcome| **outcome == StoreOutcome::Created)
            .count(),
        1,
        "{outcomes:?}"
    );
    assert_eq!(
        outcomes
            .iter()
            .filter(|outcome| **outcome == StoreOutcome::AlreadyStored)
            .count(),
        3
    );

    // One SOP Instance UID with four different contents: one wins, the others conflict with it.
    let contents: Vec<_> = (1..=4)
        .map(|variant| with_other_content(synthetic_record(1, 1, 10), variant))
        .collect();
    let outcomes = store_concurrently(&catalog, contents.clone()).await;
    let winner = outcomes
        .iter()
        .position(|outcome| *outcome == StoreOutcome::Created)
        .expect("one store wins");
    let winning_sha256 = contents[winner].object.sha256.clone();
    for (position, outcome) in outcomes
        .iter()
        .enumerate()
        .filter(|(position, _)| *position != winner)
    {
        assert_eq!(
            *outcome,
            StoreOutcome::Conflict {
                existing_sha256: winning_sha256.clone()
            },
            "task {position}"
        );
    }
    let sop_instance_uid = synthetic_sop_instance_uid(1, 1, 10);
    assert_eq!(
        catalog.instance_sha256(&sop_instance_uid).await.unwrap(),
        Some(winning_sha256)
    );

    let study = &catalog
        .query(&query_at(QueryLevel::Series, vec![]))
        .await
        .unwrap()[0];
    assert_eq!(
        (
            study.num_study_series,
            study.num_study_instances,
            study.num_series_instances
        ),
        (1, 10, Some(10))
    );

    // Eight new series of one new study, and six new studies of one new patient, at once.
    let outcomes = store_concurrently(
        &catalog,
        (1..=8)
            .map(|series| synthetic_record(2, series, 1))
            .collect(),
    )
    .await;
    assert!(
        outcomes
            .iter()
            .all(|outcome| *outcome == StoreOutcome::Created),
        "{outcomes:?}"
    );
    let same_patient: Vec<_> = (3..=8)
        .map(|study| {
            let mut record = synthetic_record(study, 1, 1);
            record.patient = synthetic_record(3, 1, 1).patient;
            record
        })
        .collect();
    let outcomes = store_concurrently(&catalog, same_patient).await;
    assert!(
        outcomes
            .iter()
            .all(|outcome| *outcome == StoreOutcome::Created),
        "{outcomes:?}"
    );

    // Sixteen instances of four series of one study, half of them changing study and series
    // attributes, so some writers lock the study row early and some late.
    let mixed: Vec<_> = (1..=16)
        .map(|instance| {
            let mut record = synthetic_record(9, instance % 4 + 1, instance);
            if instance % 2 == 0 {
                record.study.study_description = format!("Changed {instance}");
                record.series.series_description = format!("Changed {instance}");
            }
            record
        })
        .collect();
    let outcomes = store_concurrently(&catalog, mixed).await;
    assert!(
        outcomes
            .iter()
            .all(|outcome| *outcome == StoreOutcome::Created),
        "{outcomes:?}"
    );

    let studies = catalog
        .query(&query_at(QueryLevel::Study, vec![]))
        .await
        .unwrap();
    let counts: Vec<(i64, i64)> = studies
        .iter()
        .map(|found| (found.num_study_series, found.num_study_instances))
        .collect();
    assert_eq!(
        counts,
        [
            (1, 10),
            (8, 8),
            (1, 1),
            (1, 1),
            (1, 1),
            (1, 1),
            (1, 1),
            (1, 1),
            (4, 16)
        ]
    );
    let patient_id = synthetic_record(3, 1, 1).patient.patient_id;
    assert_eq!(
        matching_studies(
            catalog.as_ref(),
            vec![(MatchKey::PatientId, single(&patient_id))]
        )
        .await
        .len(),
        6
    );
    assert_eq!(catalog.count_instances().await.unwrap(), 40);
    assert_eq!(
        catalog.events_after(0, 1_000).await.unwrap().len(),
        40,
        "one event per created instance"
    );
}

/// Non-empty new values replace stored ones, empty ones keep them; a study keeps its patient;
/// patients without an ID are not merged with each other.
pub async fn attribute_merging(catalog: Arc<dyn Catalog>) {
    let first = synthetic_record(1, 1, 1);
    let mut second = synthetic_record(1, 1, 2);
    second.study.study_description = String::new();
    second.study.accession_number = "ACC-NEW".to_owned();
    second.patient.patient_name = String::new();
    second.series.series_description = String::new();
    second.series.series_number = None;
    store_all(catalog.as_ref(), &[first.clone(), second]).await;
    let series = catalog
        .query(&query_at(QueryLevel::Series, vec![]))
        .await
        .unwrap();
    assert_eq!(series.len(), 1);
    assert_eq!(
        series[0].study.study_description,
        first.study.study_description
    );
    assert_eq!(series[0].study.accession_number, "ACC-NEW");
    assert_eq!(series[0].patient.patient_name, first.patient.patient_name);
    let stored_series = series[0].series.as_ref().unwrap();
    assert_eq!(
        stored_series.series_description,
        first.series.series_description
    );
    assert_eq!(stored_series.series_number, first.series.series_number);

    let mut renamed = synthetic_record(1, 1, 3);
    renamed.patient.patient_name = "Renamed^Synthetic".to_owned();
    let mut other_patient = synthetic_record(1, 1, 4);
    other_patient.patient.patient_id = "SYN-OTHER".to_owned();
    store_all(catalog.as_ref(), &[renamed, other_patient]).await;
    let studies = catalog
        .query(&query_at(QueryLevel::Study, vec![]))
        .await
        .unwrap();
    assert_eq!(studies.len(), 1);
    assert_eq!(
        studies[0].patient.patient_name, "Renamed^Synthetic",
        "latest name wins"
    );
    assert_eq!(
        studies[0].patient.patient_id, first.patient.patient_id,
        "a study keeps its patient"
    );

    let mut anonymous_a = synthetic_record(2, 1, 1);
    anonymous_a.patient.patient_id = String::new();
    anonymous_a.patient.patient_name = "Anonymous^A".to_owned();
    let mut anonymous_b = synthetic_record(3, 1, 1);
    anonymous_b.patient.patient_id = String::new();
    anonymous_b.patient.patient_name = "Anonymous^B".to_owned();
    let mut anonymous_a_again = synthetic_record(2, 1, 2);
    anonymous_a_again.patient = anonymous_a.patient.clone();
    anonymous_a_again.patient.patient_sex = "F".to_owned();
    store_all(
        catalog.as_ref(),
        &[anonymous_a, anonymous_b, anonymous_a_again],
    )
    .await;
    let studies = catalog
        .query(&query_at(QueryLevel::Study, vec![]))
        .await
        .unwrap();
    let patients: Vec<(&str, &str)> = studies
        .iter()
        .map(|found| {
            (
                found.patient.patient_name.as_str(),
                found.patient.patient_sex.as_str(),
            )
        })
        .collect();
    assert_eq!(
        patients,
        [
            ("Renamed^Synthetic", "O"),
            ("Anonymous^A", "F"),
            ("Anonymous^B", "O")
        ]
    );
}

/// Every created instance appends exactly one event, in store order, with strictly increasing
/// sequence numbers; `events_after` pages through them.
pub async fn events_follow_stores(catalog: Arc<dyn Catalog>) {
    assert!(catalog.events_after(0, 10).await.unwrap().is_empty());
    let records: Vec<_> = (1..=3)
        .flat_map(|study| {
            (1..=2).flat_map(move |series| {
                (1..=2).map(move |instance| synthetic_record(study, series, instance))
            })
        })
        .collect();
    for record in &records {
        assert_eq!(
            catalog.store_instance(record).await.unwrap(),
            StoreOutcome::Created
        );
        // Re-stores and conflicts in between must not add events.
        assert_eq!(
            catalog.store_instance(record).await.unwrap(),
            StoreOutcome::AlreadyStored
        );
        let conflict = catalog
            .store_instance(&with_other_content(record.clone(), 7))
            .await
            .unwrap();
        assert!(matches!(conflict, StoreOutcome::Conflict { .. }));
    }
    let events = catalog.events_after(0, 1_000).await.unwrap();
    assert_eq!(
        events.len() as u64,
        catalog.count_instances().await.unwrap()
    );
    assert_eq!(events.len(), records.len());
    for (event, record) in events.iter().zip(&records) {
        assert_eq!(event.kind, EventKind::InstanceStored);
        assert_eq!(event.study_instance_uid, record.study.study_instance_uid);
        assert_eq!(event.series_instance_uid, record.series.series_instance_uid);
        assert_eq!(event.sop_instance_uid, record.instance.sop_instance_uid);
        assert_eq!(event.object_key, record.object.key);
        assert!(
            event.created_at_ms > 1_600_000_000_000,
            "created_at is unix milliseconds"
        );
    }
    assert!(
        events
            .windows(2)
            .all(|pair| pair[0].sequence < pair[1].sequence)
    );

    let page = catalog.events_after(events[4].sequence, 3).await.unwrap();
    assert_eq!(page, events[5..8]);
    let last = events.last().unwrap().sequence;
    assert!(catalog.events_after(last, 10).await.unwrap().is_empty());
    assert_eq!(
        catalog.events_after(i64::MIN, 2).await.unwrap(),
        events[..2]
    );
}

/// Locations and metadata come in series number, instance number order (missing numbers last,
/// then storage order) and honour the series / instance selection.
pub async fn instance_locations_order(catalog: Arc<dyn Catalog>) {
    // (series, series number, [(instance, instance number)]) in store order.
    type SeriesLayout = (u32, Option<i64>, Vec<(u32, Option<i64>)>);
    let layout: [SeriesLayout; 3] = [
        (1, Some(2), vec![(1, Some(3)), (2, None), (3, Some(1))]),
        (2, None, vec![(1, Some(1))]),
        (
            3,
            Some(1),
            vec![(1, Some(2)), (2, Some(1)), (3, None), (4, Some(1))],
        ),
    ];
    for (series, series_number, instances) in &layout {
        for (instance, instance_number) in instances {
            let mut record = synthetic_record(1, *series, *instance);
            record.series.series_number = *series_number;
            record.instance.instance_number = *instance_number;
            store_all(catalog.as_ref(), &[record]).await;
        }
    }
    store_all(catalog.as_ref(), &[synthetic_record(2, 1, 1)]).await;

    let expected = [
        (3, 2),
        (3, 4),
        (3, 1),
        (3, 3),
        (1, 3),
        (1, 1),
        (1, 2),
        (2, 1),
    ];
    let expected_uids: Vec<String> = expected
        .iter()
        .map(|&(series, instance)| synthetic_sop_instance_uid(1, series, instance).to_string())
        .collect();
    let study_uid = synthetic_study_uid(1);
    let locations = catalog
        .instance_locations(&study_uid, None, None)
        .await
        .unwrap();
    let uids: Vec<String> = locations
        .iter()
        .map(|location| location.sop_instance_uid.to_string())
        .collect();
    assert_eq!(uids, expected_uids);
    let expected_record = synthetic_record(1, 3, 2);
    let location = &locations[0];
    assert_eq!(location.study_instance_uid, study_uid);
    assert_eq!(
        location.series_instance_uid,
        expected_record.series.series_instance_uid
    );
    assert_eq!(
        location.sop_class_uid,
        expected_record.instance.sop_class_uid
    );
    assert_eq!(
        location.transfer_syntax_uid,
        expected_record.instance.transfer_syntax_uid
    );
    assert_eq!(location.object, expected_record.object);

    let metadata = catalog
        .instance_metadata(&study_uid, None, None)
        .await
        .unwrap();
    let expected_metadata: Vec<String> = expected
        .iter()
        .map(|&(series, instance)| synthetic_record(1, series, instance).metadata_json)
        .collect();
    assert_eq!(metadata, expected_metadata);

    let series_uid = synthetic_series_uid(1, 1);
    let in_series = catalog
        .instance_locations(&study_uid, Some(&series_uid), None)
        .await
        .unwrap();
    let uids: Vec<String> = in_series
        .iter()
        .map(|location| location.sop_instance_uid.to_string())
        .collect();
    assert_eq!(uids, expected_uids[4..7]);
    let sop_instance_uid = synthetic_sop_instance_uid(1, 1, 2);
    let one = catalog
        .instance_locations(&study_uid, Some(&series_uid), Some(&sop_instance_uid))
        .await
        .unwrap();
    assert_eq!(one.len(), 1);
    assert_eq!(one[0].sop_instance_uid, sop_instance_uid);
    let one_metadata = catalog
        .instance_metadata(&study_uid, None, Some(&sop_instance_uid))
        .await
        .unwrap();
    assert_eq!(one_metadata, [synthetic_record(1, 1, 2).metadata_json]);

    let other_study = synthetic_study_uid(2);
    assert!(
        catalog
            .instance_locations(&other_study, None, Some(&sop_instance_uid))
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        catalog
            .instance_locations(&other_study, Some(&series_uid), None)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        catalog
            .instance_locations(&synthetic_study_uid(99), None, None)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        catalog
            .instance_metadata(&synthetic_study_uid(99), None, None)
            .await
            .unwrap()
            .is_empty()
    );
}

/// A fresh catalog answers and is empty.
pub async fn ping_and_count(catalog: Arc<dyn Catalog>) {
    catalog.ping().await.unwrap();
    assert_eq!(catalog.count_instances().await.unwrap(), 0);
    assert!(
        catalog
            .query(&query_at(QueryLevel::Instance, vec![]))
            .await
            .unwrap()
            .is_empty()
    );
    store_all(
        catalog.as_ref(),
        &[synthetic_record(1, 1, 1), synthetic_record(1, 1, 2)],
    )
    .await;
    assert_eq!(catalog.count_instances().await.unwrap(), 2);
    catalog.ping().await.unwrap();
}
