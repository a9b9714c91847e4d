//! Scenarios for what WADO-RS retrieval needs: pixel data layouts, change sequences and the
//! precomputed series metadata documents.

use std::sync::Arc;

use crate::{CachedSeriesMetadata, Catalog, DeleteScope};

use super::records::synthetic_record;
use super::store_all;

/// Pixel data layouts round-trip and can be filled in later; change sequences move with every
/// store and delete of the series (and only of it); series metadata documents are kept unless
/// a newer one replaces them; metadata and locations come back together in retrieval order.
pub async fn retrieval_support(catalog: Arc<dyn Catalog>) {
    let mut first = synthetic_record(1, 1, 1);
    first.pixel_data_layout = Some(r#"{"native":[1234,524288]}"#.to_owned());
    let second = synthetic_record(1, 1, 2);
    let other_series = synthetic_record(1, 2, 1);
    store_all(
        &*catalog,
        &[first.clone(), second.clone(), other_series.clone()],
    )
    .await;

    let layout = |record: &crate::InstanceRecord| {
        let catalog = catalog.clone();
        let sop = record.instance.sop_instance_uid.clone();
        async move { catalog.instance_pixel_data_layout(&sop).await.unwrap() }
    };
    assert_eq!(
        layout(&first).await.as_deref(),
        Some(r#"{"native":[1234,524288]}"#)
    );
    assert_eq!(layout(&second).await, None);
    catalog
        .set_instance_pixel_data_layout(&second.instance.sop_instance_uid, r#"{"fragments":[]}"#)
        .await
        .unwrap();
    assert_eq!(
        layout(&second).await.as_deref(),
        Some(r#"{"fragments":[]}"#)
    );

    let study = &first.study.study_instance_uid;
    let series = &first.series.series_instance_uid;
    let series_sequence = catalog.change_sequence(study, Some(series)).await.unwrap();
    let study_sequence = catalog.change_sequence(study, None).await.unwrap();
    assert!(series_sequence.is_some());
    assert!(
        study_sequence > series_sequence,
        "the other series was stored last"
    );
    let unknown = synthetic_record(9, 9, 9);
    assert_eq!(
        catalog
            .change_sequence(&unknown.study.study_instance_uid, None)
            .await
            .unwrap(),
        None
    );

    let entries = catalog
        .instance_metadata_with_locations(study, Some(series), None)
        .await
        .unwrap();
    let sops: Vec<String> = entries
        .iter()
        .map(|(location, _)| location.sop_instance_uid.to_string())
        .collect();
    assert_eq!(
        sops,
        vec![
            first.instance.sop_instance_uid.to_string(),
            second.instance.sop_instance_uid.to_string()
        ]
    );
    assert_eq!(entries[0].1, first.metadata_json);

    // Metadata by UID: only the listed instances of that study, unknown UIDs left out, and
    // more UIDs than one statement binds.
    let mut asked = vec![
        second.instance.sop_instance_uid.clone(),
        other_series.instance.sop_instance_uid.clone(),
        unknown.instance.sop_instance_uid.clone(),
    ];
    asked.extend((1..=600).map(|number| synthetic_record(1, 3, number).instance.sop_instance_uid));
    let mut by_uid = catalog
        .instance_metadata_by_uid(study, &asked)
        .await
        .unwrap();
    by_uid.sort_by(|left, right| left.0.as_str().cmp(right.0.as_str()));
    let mut expected = vec![
        (
            second.instance.sop_instance_uid.clone(),
            second.metadata_json.clone(),
        ),
        (
            other_series.instance.sop_instance_uid.clone(),
            other_series.metadata_json.clone(),
        ),
    ];
    expected.sort_by(|left, right| left.0.as_str().cmp(right.0.as_str()));
    assert_eq!(by_uid, expected);
    assert!(
        catalog
            .instance_metadata_by_uid(&unknown.study.study_instance_uid, &asked)
            .await
            .unwrap()
            .is_empty(),
        "the instances of another study"
    );

    let document = |change_sequence: i64, text: &str| CachedSeriesMetadata {
        series_instance_uid: series.clone(),
        study_instance_uid: study.clone(),
        change_sequence,
        num_instances: 2,
        document: text.to_owned(),
    };
    assert_eq!(catalog.cached_series_metadata(series).await.unwrap(), None);
    let current = series_sequence.unwrap();
    catalog
        .put_series_metadata(&document(current, "[1]"))
        .await
        .unwrap();
    catalog
        .put_series_metadata(&document(current - 1, "[older]"))
        .await
        .unwrap();
    assert_eq!(
        catalog.cached_series_metadata(series).await.unwrap(),
        Some(document(current, "[1]")),
        "an older document never replaces a newer one"
    );

    // A delete in the series moves its sequence; one in another series does not.
    catalog
        .delete(&DeleteScope::Instance {
            study_instance_uid: study.clone(),
            series_instance_uid: other_series.series.series_instance_uid.clone(),
            sop_instance_uid: other_series.instance.sop_instance_uid.clone(),
        })
        .await
        .unwrap();
    assert_eq!(
        catalog.change_sequence(study, Some(series)).await.unwrap(),
        series_sequence
    );
    catalog
        .delete(&DeleteScope::Instance {
            study_instance_uid: study.clone(),
            series_instance_uid: series.clone(),
            sop_instance_uid: second.instance.sop_instance_uid.clone(),
        })
        .await
        .unwrap();
    let after_delete = catalog.change_sequence(study, Some(series)).await.unwrap();
    assert!(after_delete > series_sequence);
    catalog
        .put_series_metadata(&document(after_delete.unwrap(), "[2]"))
        .await
        .unwrap();
    assert_eq!(
        catalog
            .cached_series_metadata(series)
            .await
            .unwrap()
            .map(|cached| cached.document),
        Some("[2]".to_owned())
    );
}
