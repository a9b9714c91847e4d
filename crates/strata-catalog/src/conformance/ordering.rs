//! Scenarios for what FHIR search needs from the one catalog query: ordering by study date,
//! match counts, the patient key and the last-updated time.

use std::sync::Arc;

use crate::{Catalog, MatchKey, Matcher, QueryLevel, QueryOrder};

use super::{entity_uid, query_at, range, single, store_all, study_uid_text, synthetic_record};

/// Studies sort by date both ways (undated last, ties by storage order), counts ignore paging,
/// the patient key groups a patient's studies, and the last-updated time filters.
pub async fn fhir_search_support(catalog: Arc<dyn Catalog>) {
    // Study 1 and 3 share a patient; study 4 has no date.
    let mut records = vec![
        synthetic_record(1, 1, 1),
        synthetic_record(2, 1, 1),
        synthetic_record(3, 1, 1),
        synthetic_record(4, 1, 1),
        synthetic_record(1, 2, 1),
    ];
    records[0].study.study_date = "20240301".to_owned();
    records[4].study.study_date = "20240301".to_owned();
    records[1].study.study_date = "20230101".to_owned();
    records[2].study.study_date = "20250101".to_owned();
    records[2].patient = records[0].patient.clone();
    records[3].study.study_date = String::new();
    records[3].series.performed_procedure_step_start_date = String::new();
    store_all(catalog.as_ref(), &records).await;

    let all_studies = query_at(QueryLevel::Study, vec![]);
    let in_order = |order| {
        let catalog = catalog.clone();
        let query = all_studies.clone();
        async move {
            let found = catalog
                .query_in_order(&query, order)
                .await
                .expect("ordered query succeeds");
            found
                .iter()
                .map(|found| entity_uid(QueryLevel::Study, found))
                .collect::<Vec<_>>()
        }
    };
    let uids = |studies: &[u32]| {
        studies
            .iter()
            .map(|study| study_uid_text(*study))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        in_order(QueryOrder::StudyDateAscending).await,
        uids(&[2, 1, 3, 4])
    );
    assert_eq!(
        in_order(QueryOrder::StudyDateDescending).await,
        uids(&[3, 1, 2, 4])
    );
    assert_eq!(in_order(QueryOrder::Storage).await, uids(&[1, 2, 3, 4]));

    // Paging over an ordered query neither skips nor repeats.
    let mut paged = Vec::new();
    for offset in 0..4 {
        let mut page = all_studies.clone();
        page.limit = Some(1);
        page.offset = offset;
        let found = catalog
            .query_in_order(&page, QueryOrder::StudyDateDescending)
            .await
            .expect("page");
        paged.extend(
            found
                .iter()
                .map(|found| entity_uid(QueryLevel::Study, found)),
        );
    }
    assert_eq!(paged, uids(&[3, 1, 2, 4]));

    // Counts ignore limit and offset; series level counts series.
    let mut limited = all_studies.clone();
    limited.limit = Some(1);
    limited.offset = 1;
    assert_eq!(catalog.count_matches(&limited).await.expect("count"), 4);
    let series_query = query_at(QueryLevel::Series, vec![]);
    assert_eq!(
        catalog.count_matches(&series_query).await.expect("count"),
        5
    );
    let dated = query_at(
        QueryLevel::Study,
        vec![(MatchKey::StudyDate, range("20240101", ""))],
    );
    assert_eq!(catalog.count_matches(&dated).await.expect("count"), 2);

    // The patient key is shared by the studies of one patient and selects them.
    let found = catalog.query(&all_studies).await.expect("query");
    assert_eq!(found[0].patient_key, found[2].patient_key);
    assert_ne!(found[0].patient_key, found[1].patient_key);
    let by_patient = query_at(
        QueryLevel::Study,
        vec![(
            MatchKey::PatientKey,
            single(&found[0].patient_key.to_string()),
        )],
    );
    let by_patient_uids: Vec<String> = catalog
        .query(&by_patient)
        .await
        .expect("query")
        .iter()
        .map(|found| entity_uid(QueryLevel::Study, found))
        .collect();
    assert_eq!(by_patient_uids, uids(&[1, 3]));

    // The last-updated time is the newest instance's storage time and filters inclusively.
    let newest = found
        .iter()
        .map(|found| found.last_updated_ms)
        .max()
        .expect("studies");
    let oldest = found
        .iter()
        .map(|found| found.last_updated_ms)
        .min()
        .expect("studies");
    assert!(
        oldest > 1_600_000_000_000,
        "last_updated_ms is Unix milliseconds"
    );
    assert!(
        found[0].last_updated_ms >= found[1].last_updated_ms,
        "study 1 got an instance last"
    );
    let since_newest = query_at(
        QueryLevel::Study,
        vec![(MatchKey::LastUpdated, range(&newest.to_string(), ""))],
    );
    let since_newest_found = catalog.query(&since_newest).await.expect("query");
    assert!(!since_newest_found.is_empty());
    assert!(
        since_newest_found
            .iter()
            .all(|found| found.last_updated_ms == newest)
    );
    let until_oldest = query_at(
        QueryLevel::Study,
        vec![(MatchKey::LastUpdated, range("", &oldest.to_string()))],
    );
    assert_eq!(
        catalog.count_matches(&until_oldest).await.expect("count"),
        found
            .iter()
            .filter(|found| found.last_updated_ms == oldest)
            .count() as u64
    );
    let nothing = query_at(
        QueryLevel::Study,
        vec![(
            MatchKey::LastUpdated,
            Matcher::Range {
                from: Some((newest + 1).to_string()),
                to: None,
            },
        )],
    );
    assert_eq!(catalog.count_matches(&nothing).await.expect("count"), 0);
}
