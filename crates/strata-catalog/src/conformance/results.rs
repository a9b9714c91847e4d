//! Scenarios about result sets: scopes, paging, computed attributes and round-trips.

use std::sync::Arc;

use crate::{Catalog, CatalogQuery, MatchKey, QueryLevel, RequestAttributes};

use super::{
    CT_IMAGE_STORAGE, MR_IMAGE_STORAGE, SECONDARY_CAPTURE_IMAGE_STORAGE, entity_uid, matched_uids,
    query_at, single, store_all, study_uid_text, synthetic_record, synthetic_series_uid,
    synthetic_sop_instance_uid, synthetic_study_uid,
};

/// `study_scope` and `series_scope` restrict the search, alone and with filters.
pub async fn scopes(catalog: Arc<dyn Catalog>) {
    let mut records = Vec::new();
    for (study, series, instance) in [(1, 1, 1), (1, 1, 2), (1, 2, 1), (1, 2, 2), (2, 1, 1)] {
        let mut record = synthetic_record(study, series, instance);
        record.series.modality = if series == 1 { "CT" } else { "MR" }.to_owned();
        records.push(record);
    }
    store_all(catalog.as_ref(), &records).await;
    let scoped = |level, study: Option<u32>, series: Option<(u32, u32)>, filters| CatalogQuery {
        study_scope: study.map(synthetic_study_uid),
        series_scope: series.map(|(study, series)| synthetic_series_uid(study, series)),
        ..query_at(level, filters)
    };
    let sop =
        |study, series, instance| synthetic_sop_instance_uid(study, series, instance).to_string();
    let cases: [(CatalogQuery, Vec<String>); 6] = [
        (
            scoped(QueryLevel::Study, Some(2), None, vec![]),
            vec![study_uid_text(2)],
        ),
        (
            scoped(QueryLevel::Series, Some(1), None, vec![]),
            vec![
                synthetic_series_uid(1, 1).to_string(),
                synthetic_series_uid(1, 2).to_string(),
            ],
        ),
        (
            scoped(
                QueryLevel::Series,
                Some(1),
                None,
                vec![(MatchKey::Modality, single("MR"))],
            ),
            vec![synthetic_series_uid(1, 2).to_string()],
        ),
        (
            scoped(QueryLevel::Instance, Some(1), None, vec![]),
            vec![sop(1, 1, 1), sop(1, 1, 2), sop(1, 2, 1), sop(1, 2, 2)],
        ),
        (
            scoped(QueryLevel::Instance, Some(1), Some((1, 2)), vec![]),
            vec![sop(1, 2, 1), sop(1, 2, 2)],
        ),
        (
            scoped(QueryLevel::Instance, Some(2), Some((1, 2)), vec![]),
            vec![],
        ),
    ];
    for (query, expected) in cases {
        assert_eq!(
            matched_uids(catalog.as_ref(), &query).await,
            expected,
            "{query:?}"
        );
    }
}

/// Pages of limit / offset neither skip nor repeat and follow storage order.
pub async fn paging(catalog: Arc<dyn Catalog>) {
    let records: Vec<_> = [7, 3, 5, 1, 6, 2, 4]
        .into_iter()
        .map(|study| synthetic_record(study, 1, 1))
        .collect();
    store_all(catalog.as_ref(), &records).await;
    store_all(
        catalog.as_ref(),
        &(2..=5)
            .map(|instance| synthetic_record(3, 1, instance))
            .collect::<Vec<_>>(),
    )
    .await;
    for (level, page_size) in [(QueryLevel::Study, 3), (QueryLevel::Instance, 4)] {
        let everything = matched_uids(catalog.as_ref(), &query_at(level, vec![])).await;
        let mut paged = Vec::new();
        for page in 0.. {
            let query = CatalogQuery {
                limit: Some(page_size),
                offset: page * page_size,
                ..query_at(level, vec![])
            };
            let found = matched_uids(catalog.as_ref(), &query).await;
            assert!(found.len() as u64 <= page_size);
            if found.is_empty() {
                break;
            }
            paged.extend(found);
        }
        assert_eq!(paged, everything, "{level:?}");
        let unlimited = CatalogQuery {
            offset: 2,
            ..query_at(level, vec![])
        };
        assert_eq!(
            matched_uids(catalog.as_ref(), &unlimited).await,
            everything[2..]
        );
        let zero = CatalogQuery {
            limit: Some(0),
            ..query_at(level, vec![])
        };
        assert!(matched_uids(catalog.as_ref(), &zero).await.is_empty());
        let beyond = CatalogQuery {
            offset: 1_000,
            ..query_at(level, vec![])
        };
        assert!(matched_uids(catalog.as_ref(), &beyond).await.is_empty());
    }
    let studies = matched_uids(catalog.as_ref(), &query_at(QueryLevel::Study, vec![])).await;
    let expected: Vec<String> = [7, 3, 5, 1, 6, 2, 4]
        .into_iter()
        .map(study_uid_text)
        .collect();
    assert_eq!(studies, expected, "storage order, not UID order");
}

/// Counts, ModalitiesInStudy, SOPClassesInStudy, every attribute and metadata_json round-trip.
pub async fn computed_attributes_and_metadata(catalog: Arc<dyn Catalog>) {
    let mut records = Vec::new();
    for instance in 1..=3 {
        records.push(synthetic_record(1, 1, instance));
    }
    for (instance, sop_class) in [(1, MR_IMAGE_STORAGE), (2, SECONDARY_CAPTURE_IMAGE_STORAGE)] {
        let mut record = synthetic_record(1, 2, instance);
        record.series.modality = "MR".to_owned();
        record.instance.sop_class_uid = sop_class.to_owned();
        record.instance.number_of_frames = Some(4);
        record.metadata_json = format!(r#"{{"note":"ünïcode \"quoted\" {instance}","x":[1,2]}}"#);
        records.push(record);
    }
    records[0].series.request_attributes = vec![RequestAttributes {
        scheduled_procedure_step_id: "SPS-1".to_owned(),
        requested_procedure_id: "RP-1".to_owned(),
    }];
    records[0].source.calling_ae_title = Some("SYNTH_SCU".to_owned());
    store_all(catalog.as_ref(), &records).await;
    store_all(catalog.as_ref(), &[synthetic_record(2, 1, 1)]).await;

    let with_metadata = |level| CatalogQuery {
        with_metadata: true,
        ..query_at(level, vec![])
    };
    let studies = catalog
        .query(&with_metadata(QueryLevel::Study))
        .await
        .unwrap();
    assert_eq!(studies.len(), 2);
    let study = &studies[0];
    assert_eq!(
        (
            study.num_study_series,
            study.num_study_instances,
            study.num_series_instances
        ),
        (2, 5, None)
    );
    assert_eq!(study.modalities_in_study, ["CT", "MR"]);
    let mut expected_classes = vec![
        CT_IMAGE_STORAGE,
        MR_IMAGE_STORAGE,
        SECONDARY_CAPTURE_IMAGE_STORAGE,
    ];
    expected_classes.sort_unstable();
    assert_eq!(study.sop_classes_in_study, expected_classes);
    assert_eq!(study.patient, records[0].patient);
    assert_eq!(study.study, records[0].study);
    assert!(study.series.is_none() && study.instance.is_none());
    assert_eq!(
        study.metadata_json.as_deref(),
        Some(records[0].metadata_json.as_str())
    );
    assert_eq!(
        studies[1].metadata_json.as_deref(),
        Some(synthetic_record(2, 1, 1).metadata_json.as_str())
    );
    assert_eq!(
        (studies[1].num_study_series, studies[1].num_study_instances),
        (1, 1)
    );

    let without = catalog
        .query(&query_at(QueryLevel::Study, vec![]))
        .await
        .unwrap();
    assert!(without.iter().all(|found| found.metadata_json.is_none()));

    let series = catalog
        .query(&with_metadata(QueryLevel::Series))
        .await
        .unwrap();
    assert_eq!(series.len(), 3);
    assert_eq!(series[0].series.as_ref(), Some(&records[0].series));
    assert_eq!(series[1].series.as_ref(), Some(&records[3].series));
    assert_eq!(series[0].num_series_instances, Some(3));
    assert_eq!(series[1].num_series_instances, Some(2));
    assert_eq!(
        series[1].metadata_json.as_deref(),
        Some(records[3].metadata_json.as_str())
    );
    assert_eq!(
        (series[1].num_study_series, series[1].num_study_instances),
        (2, 5)
    );
    assert_eq!(series[1].modalities_in_study, ["CT", "MR"]);

    let instances = catalog
        .query(&with_metadata(QueryLevel::Instance))
        .await
        .unwrap();
    assert_eq!(instances.len(), 6);
    for (found, record) in instances.iter().zip(&records) {
        assert_eq!(
            entity_uid(QueryLevel::Instance, found),
            record.instance.sop_instance_uid.to_string()
        );
        assert_eq!(found.instance.as_ref(), Some(&record.instance));
        assert_eq!(
            found.metadata_json.as_deref(),
            Some(record.metadata_json.as_str())
        );
        assert_eq!(
            found.series.as_ref().unwrap().series_instance_uid,
            record.series.series_instance_uid
        );
    }
    assert_eq!(instances[4].num_series_instances, Some(2));
}
