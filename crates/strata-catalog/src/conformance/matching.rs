//! Scenarios about reading: every match key and matcher, scopes, paging, computed attributes.

use std::sync::Arc;

use crate::{Catalog, InstanceRecord, MatchKey, Matcher, QueryLevel, RequestAttributes};

use super::{
    CT_IMAGE_STORAGE, MR_IMAGE_STORAGE, matched_uids, matching_studies, query_at, range, single,
    store_all, study_uid_text, synthetic_record, synthetic_series_uid, synthetic_sop_instance_uid,
    wildcard,
};

/// The filters of one query.
type Filters = Vec<(MatchKey, Matcher)>;

const ALL_LEVELS: [QueryLevel; 3] = [QueryLevel::Study, QueryLevel::Series, QueryLevel::Instance];

/// Every key, so a new `MatchKey` without a test fails to compile in `key_value`.
const ALL_KEYS: [MatchKey; 24] = [
    MatchKey::PatientId,
    MatchKey::IssuerOfPatientId,
    MatchKey::PatientName,
    MatchKey::PatientBirthDate,
    MatchKey::PatientSex,
    MatchKey::StudyInstanceUid,
    MatchKey::StudyDate,
    MatchKey::StudyTime,
    MatchKey::AccessionNumber,
    MatchKey::ReferringPhysicianName,
    MatchKey::StudyId,
    MatchKey::StudyDescription,
    MatchKey::ModalitiesInStudy,
    MatchKey::SeriesInstanceUid,
    MatchKey::Modality,
    MatchKey::SeriesNumber,
    MatchKey::SeriesDescription,
    MatchKey::PerformedProcedureStepStartDate,
    MatchKey::PerformedProcedureStepStartTime,
    MatchKey::ScheduledProcedureStepId,
    MatchKey::RequestedProcedureId,
    MatchKey::SopInstanceUid,
    MatchKey::SopClassUid,
    MatchKey::InstanceNumber,
];

/// Returns the value `record` has for `key`.
fn key_value(record: &InstanceRecord, key: MatchKey) -> String {
    let number = |value: Option<i64>| value.map(|number| number.to_string()).unwrap_or_default();
    match key {
        MatchKey::PatientId => record.patient.patient_id.clone(),
        MatchKey::IssuerOfPatientId => record.patient.issuer_of_patient_id.clone(),
        MatchKey::PatientName | MatchKey::PatientNameFuzzy => record.patient.patient_name.clone(),
        MatchKey::PatientBirthDate => record.patient.patient_birth_date.clone(),
        MatchKey::PatientSex => record.patient.patient_sex.clone(),
        MatchKey::StudyInstanceUid => record.study.study_instance_uid.to_string(),
        MatchKey::StudyDate => record.study.study_date.clone(),
        MatchKey::StudyTime => record.study.study_time.clone(),
        MatchKey::AccessionNumber => record.study.accession_number.clone(),
        MatchKey::ReferringPhysicianName | MatchKey::ReferringPhysicianNameFuzzy => {
            record.study.referring_physician_name.clone()
        }
        MatchKey::StudyId => record.study.study_id.clone(),
        MatchKey::StudyDescription => record.study.study_description.clone(),
        MatchKey::ModalitiesInStudy | MatchKey::Modality => record.series.modality.clone(),
        MatchKey::SeriesInstanceUid => record.series.series_instance_uid.to_string(),
        MatchKey::SeriesNumber => number(record.series.series_number),
        MatchKey::SeriesDescription => record.series.series_description.clone(),
        MatchKey::PerformedProcedureStepStartDate => {
            record.series.performed_procedure_step_start_date.clone()
        }
        MatchKey::PerformedProcedureStepStartTime => {
            record.series.performed_procedure_step_start_time.clone()
        }
        MatchKey::ScheduledProcedureStepId => record.series.request_attributes[0]
            .scheduled_procedure_step_id
            .clone(),
        MatchKey::RequestedProcedureId => record.series.request_attributes[0]
            .requested_procedure_id
            .clone(),
        MatchKey::SopInstanceUid => record.instance.sop_instance_uid.to_string(),
        MatchKey::SopClassUid => record.instance.sop_class_uid.clone(),
        MatchKey::InstanceNumber => number(record.instance.instance_number),
        MatchKey::PatientKey | MatchKey::LastUpdated => {
            unreachable!("computed keys have their own scenario (fhir_search_support)")
        }
    }
}

fn entity_uid_of(record: &InstanceRecord, level: QueryLevel) -> String {
    match level {
        QueryLevel::Study => record.study.study_instance_uid.to_string(),
        QueryLevel::Series => record.series.series_instance_uid.to_string(),
        QueryLevel::Instance => record.instance.sop_instance_uid.to_string(),
    }
}

/// Two studies that differ in every key, A's values sorting before B's.
fn two_distinct_records() -> (InstanceRecord, InstanceRecord) {
    let mut record_a = synthetic_record(1, 1, 1);
    let mut record_b = synthetic_record(2, 2, 2);
    let distinct = [
        (
            &mut record_a,
            "ISSUER-A",
            "Alpha^Synthetic",
            "19600101",
            "F",
            "093000",
            "Referring^Alpha",
            "CT",
            "0830",
            "A",
            CT_IMAGE_STORAGE,
        ),
        (
            &mut record_b,
            "ISSUER-B",
            "Beta^Synthetic",
            "19700101",
            "M",
            "143000",
            "Referring^Beta",
            "MR",
            "1530",
            "B",
            MR_IMAGE_STORAGE,
        ),
    ];
    for (
        record,
        issuer,
        name,
        birth_date,
        sex,
        study_time,
        referring,
        modality,
        pps_time,
        item,
        sop_class,
    ) in distinct
    {
        record.patient.issuer_of_patient_id = issuer.to_owned();
        record.patient.patient_name = name.to_owned();
        record.patient.patient_birth_date = birth_date.to_owned();
        record.patient.patient_sex = sex.to_owned();
        record.study.study_time = study_time.to_owned();
        record.study.referring_physician_name = referring.to_owned();
        record.series.modality = modality.to_owned();
        record.series.performed_procedure_step_start_time = pps_time.to_owned();
        record.series.request_attributes = vec![RequestAttributes {
            scheduled_procedure_step_id: format!("SPS-{item}1"),
            requested_procedure_id: format!("RP-{item}1"),
        }];
        record.instance.sop_class_uid = sop_class.to_owned();
    }
    (record_a, record_b)
}

/// Every `MatchKey` with Single, Wildcard, List and (for dates, times, numbers) Range, at every
/// level: keys of lower levels match an entity when one of its children matches.
pub async fn every_match_key(catalog: Arc<dyn Catalog>) {
    let (record_a, record_b) = two_distinct_records();
    store_all(catalog.as_ref(), &[record_a.clone(), record_b.clone()]).await;
    for key in ALL_KEYS {
        let value_a = key_value(&record_a, key);
        let value_b = key_value(&record_b, key);
        assert_ne!(value_a, value_b, "{key:?}");
        let mut cases: Vec<(Matcher, &InstanceRecord)> = vec![
            (single(&value_a), &record_a),
            (single(&value_b), &record_b),
            (wildcard(&format!("{value_a}*")), &record_a),
            (wildcard(&format!("*{value_b}")), &record_b),
            (
                Matcher::List(vec![value_b.clone(), "NO-SUCH-VALUE".to_owned()]),
                &record_b,
            ),
        ];
        if value_a.len() >= 2 {
            cases.push((wildcard(&format!("?{}", &value_a[1..])), &record_a));
        }
        let is_ranged = matches!(
            key,
            MatchKey::PatientBirthDate
                | MatchKey::StudyDate
                | MatchKey::StudyTime
                | MatchKey::PerformedProcedureStepStartDate
                | MatchKey::PerformedProcedureStepStartTime
                | MatchKey::SeriesNumber
                | MatchKey::InstanceNumber
        );
        if is_ranged {
            cases.push((range(&value_a, &value_a), &record_a));
            cases.push((range("", &value_a), &record_a));
            cases.push((range(&value_b, ""), &record_b));
        }
        for level in ALL_LEVELS {
            for (matcher, expected) in &cases {
                let found = matched_uids(
                    catalog.as_ref(),
                    &query_at(level, vec![(key, matcher.clone())]),
                )
                .await;
                assert_eq!(
                    found,
                    [entity_uid_of(expected, level)],
                    "{key:?} {matcher:?} at {level:?}"
                );
            }
            let none =
                matched_uids(catalog.as_ref(), &query_at(level, vec![(key, single("9"))])).await;
            assert!(none.is_empty(), "{key:?} = 9 at {level:?} matched {none:?}");
        }
    }
}

/// PN keys match case-insensitively (Unicode), everything else case-sensitively; `?` is exactly
/// one character; `%`, `_` and `[` in values and patterns are literals.
pub async fn single_and_wildcard_case_rules(catalog: Arc<dyn Catalog>) {
    let layout = [
        ("CT Chest", "Doe^John", "Müller^Jürgen"),
        ("ct chest", "DOE^JANE", "Referring^Other"),
        ("Chest 100%", "Smith^Anna", "Referring^Other"),
        ("A_B", "Synthetic^A", "Referring^Other"),
        ("AxB", "Synthetic^B", "Referring^Other"),
        ("[x] y", "Synthetic^C", "Referring^Other"),
    ];
    for (position, (description, patient_name, referring)) in (1_u32..).zip(layout) {
        let mut record = synthetic_record(position, 1, 1);
        record.study.study_description = description.to_owned();
        record.patient.patient_name = patient_name.to_owned();
        record.study.referring_physician_name = referring.to_owned();
        store_all(catalog.as_ref(), &[record]).await;
    }
    let cases: [(MatchKey, Matcher, &[u32]); 27] = [
        (MatchKey::StudyDescription, wildcard("ct*"), &[2]),
        (MatchKey::StudyDescription, wildcard("CT*"), &[1]),
        (MatchKey::StudyDescription, single("ct chest"), &[2]),
        (MatchKey::StudyDescription, single("CT CHEST"), &[]),
        (MatchKey::StudyDescription, wildcard("?? Chest"), &[1]),
        (MatchKey::StudyDescription, wildcard("?? chest"), &[2]),
        (MatchKey::StudyDescription, wildcard("? Chest"), &[]),
        (MatchKey::StudyDescription, wildcard("*100%"), &[3]),
        (MatchKey::StudyDescription, wildcard("Chest 1%"), &[]),
        (MatchKey::StudyDescription, wildcard("A_B"), &[4]),
        (MatchKey::StudyDescription, wildcard("A?B"), &[4, 5]),
        (MatchKey::StudyDescription, wildcard("[x]*"), &[6]),
        (MatchKey::StudyDescription, wildcard("x*"), &[]),
        (MatchKey::PatientName, single("doe^john"), &[1]),
        (MatchKey::PatientName, wildcard("doe^*"), &[1, 2]),
        (MatchKey::PatientName, wildcard("d?e^ja*"), &[2]),
        (MatchKey::PatientName, single("DOE^J"), &[]),
        (
            MatchKey::ReferringPhysicianName,
            single("MÜLLER^JÜRGEN"),
            &[1],
        ),
        (MatchKey::ReferringPhysicianName, wildcard("müller^*"), &[1]),
        (MatchKey::ReferringPhysicianName, wildcard("*jürgen"), &[1]),
        // Fuzzy person names: word prefixes, any order, case and accents folded.
        (MatchKey::PatientNameFuzzy, single("john doe"), &[1]),
        (MatchKey::PatientNameFuzzy, single("do"), &[1, 2]),
        (MatchKey::PatientNameFuzzy, wildcard("ja*"), &[2]),
        (MatchKey::PatientNameFuzzy, single("smith anna x"), &[]),
        (
            MatchKey::ReferringPhysicianNameFuzzy,
            single("jurgen muller"),
            &[1],
        ),
        (MatchKey::ReferringPhysicianNameFuzzy, single("ller"), &[]),
        (
            MatchKey::PatientNameFuzzy,
            Matcher::List(vec!["anna".into(), "jane".into()]),
            &[2, 3],
        ),
    ];
    for (key, matcher, expected) in cases {
        let found = matching_studies(catalog.as_ref(), vec![(key, matcher.clone())]).await;
        let expected: Vec<String> = expected
            .iter()
            .map(|&study| study_uid_text(study))
            .collect();
        assert_eq!(found, expected, "{key:?} {matcher:?}");
    }
    let studies = catalog
        .query(&query_at(QueryLevel::Study, vec![]))
        .await
        .unwrap();
    assert_eq!(
        studies[0].patient.patient_name, "Doe^John",
        "names are returned as stored"
    );
}

/// Date and time ranges are inclusive, open on either side, honour the precision of the bound
/// and never match an empty value.
pub async fn range_matching(catalog: Arc<dyn Catalog>) {
    let layout = [
        ("20240101", "113000.5"),
        ("20240615", "1200"),
        ("20241231", "120030"),
        ("20230101", "1201"),
        ("20250101", "0930"),
        ("", ""),
    ];
    for (position, (study_date, study_time)) in (1_u32..).zip(layout) {
        let mut record = synthetic_record(position, 1, 1);
        record.study.study_date = study_date.to_owned();
        record.study.study_time = study_time.to_owned();
        record.series.performed_procedure_step_start_time = study_time.to_owned();
        store_all(catalog.as_ref(), &[record]).await;
    }
    let cases: [(MatchKey, Matcher, &[u32]); 12] = [
        (MatchKey::StudyTime, range("1000", "1200"), &[1, 2, 3]),
        (MatchKey::StudyTime, range("1000", ""), &[1, 2, 3, 4]),
        (MatchKey::StudyTime, range("", "1000"), &[5]),
        (MatchKey::StudyTime, range("", "1200"), &[1, 2, 3, 5]),
        (MatchKey::StudyTime, range("1201", "1201"), &[4]),
        (MatchKey::StudyTime, range("1300", "1000"), &[]),
        (MatchKey::StudyDate, range("20240101", "20240615"), &[1, 2]),
        (MatchKey::StudyDate, range("20240615", ""), &[2, 3, 5]),
        (MatchKey::StudyDate, range("", "20240101"), &[1, 4]),
        (
            MatchKey::StudyDate,
            range("20240101", "20241231"),
            &[1, 2, 3],
        ),
        (MatchKey::StudyDate, single("20240615"), &[2]),
        (
            MatchKey::PerformedProcedureStepStartTime,
            range("113000", "120000"),
            &[1, 2],
        ),
    ];
    for (key, matcher, expected) in cases {
        let found = matching_studies(catalog.as_ref(), vec![(key, matcher.clone())]).await;
        let expected: Vec<String> = expected
            .iter()
            .map(|&study| study_uid_text(study))
            .collect();
        assert_eq!(found, expected, "{key:?} {matcher:?}");
    }
    let all = matching_studies(catalog.as_ref(), vec![(MatchKey::StudyDate, range("", ""))]).await;
    assert_eq!(
        all.len(),
        6,
        "a range open on both sides is universal matching"
    );
}

/// List matching on UIDs and other values; an empty list matches nothing.
pub async fn list_matching(catalog: Arc<dyn Catalog>) {
    for study in 1..=4 {
        let mut record = synthetic_record(study, 1, 1);
        record.series.modality = ["CT", "MR", "US", "CT"][study as usize - 1].to_owned();
        let mut second = synthetic_record(study, 1, 2);
        second.series = record.series.clone();
        store_all(catalog.as_ref(), &[record, second]).await;
    }
    let uid_list = Matcher::List(vec![
        study_uid_text(3),
        study_uid_text(1),
        "1.2.3.999".to_owned(),
    ]);
    let found = matching_studies(
        catalog.as_ref(),
        vec![(MatchKey::StudyInstanceUid, uid_list)],
    )
    .await;
    assert_eq!(
        found,
        [study_uid_text(1), study_uid_text(3)],
        "results keep storage order"
    );

    let sop_list = Matcher::List(vec![
        synthetic_sop_instance_uid(2, 1, 2).to_string(),
        synthetic_sop_instance_uid(4, 1, 1).to_string(),
    ]);
    let query = query_at(
        QueryLevel::Instance,
        vec![(MatchKey::SopInstanceUid, sop_list)],
    );
    let found = matched_uids(catalog.as_ref(), &query).await;
    assert_eq!(
        found,
        [
            synthetic_sop_instance_uid(2, 1, 2).to_string(),
            synthetic_sop_instance_uid(4, 1, 1).to_string()
        ]
    );

    let modality_list = Matcher::List(vec!["MR".to_owned(), "US".to_owned()]);
    let query = query_at(
        QueryLevel::Series,
        vec![(MatchKey::Modality, modality_list)],
    );
    let found = matched_uids(catalog.as_ref(), &query).await;
    assert_eq!(
        found,
        [
            synthetic_series_uid(2, 1).to_string(),
            synthetic_series_uid(3, 1).to_string()
        ]
    );

    let empty = matching_studies(
        catalog.as_ref(),
        vec![(MatchKey::StudyInstanceUid, Matcher::List(vec![]))],
    )
    .await;
    assert!(empty.is_empty(), "an empty list matches nothing");
}

/// ModalitiesInStudy matches a study when any of its series matches, and is computed
/// distinct and sorted.
pub async fn modalities_in_study(catalog: Arc<dyn Catalog>) {
    let layout: [(u32, u32, &str); 5] = [
        (1, 1, "MR"),
        (1, 2, "CT"),
        (1, 3, "MR"),
        (2, 1, "US"),
        (3, 1, "CT"),
    ];
    for (study, series, modality) in layout {
        let mut record = synthetic_record(study, series, 1);
        record.series.modality = modality.to_owned();
        store_all(catalog.as_ref(), &[record]).await;
    }
    let cases: [(Matcher, &[u32]); 6] = [
        (single("MR"), &[1]),
        (single("CT"), &[1, 3]),
        (wildcard("M?"), &[1]),
        (wildcard("*T"), &[1, 3]),
        (Matcher::List(vec!["US".to_owned(), "XA".to_owned()]), &[2]),
        (single("mr"), &[]),
    ];
    for (matcher, expected) in cases {
        let found = matching_studies(
            catalog.as_ref(),
            vec![(MatchKey::ModalitiesInStudy, matcher.clone())],
        )
        .await;
        let expected: Vec<String> = expected
            .iter()
            .map(|&study| study_uid_text(study))
            .collect();
        assert_eq!(found, expected, "{matcher:?}");
    }
    let studies = catalog
        .query(&query_at(QueryLevel::Study, vec![]))
        .await
        .unwrap();
    let modalities: Vec<Vec<String>> = studies
        .iter()
        .map(|found| found.modalities_in_study.clone())
        .collect();
    assert_eq!(
        modalities,
        [
            vec!["CT".to_owned(), "MR".to_owned()],
            vec!["US".to_owned()],
            vec!["CT".to_owned()]
        ]
    );

    // At series level it stays a study attribute: every series of a study with an MR series.
    let query = query_at(
        QueryLevel::Series,
        vec![(MatchKey::ModalitiesInStudy, single("MR"))],
    );
    let expected: Vec<String> = (1..=3)
        .map(|series| synthetic_series_uid(1, series).to_string())
        .collect();
    assert_eq!(matched_uids(catalog.as_ref(), &query).await, expected);
}

/// Request Attributes Sequence keys match a series when one item matches all of them.
pub async fn sequence_matching(catalog: Arc<dyn Catalog>) {
    let item = |sps: &str, rp: &str| RequestAttributes {
        scheduled_procedure_step_id: sps.to_owned(),
        requested_procedure_id: rp.to_owned(),
    };
    let mut first = synthetic_record(1, 1, 1);
    first.series.request_attributes = vec![item("SPS-1", "RP-1"), item("SPS-2", "RP-2")];
    let mut second_of_first_series = synthetic_record(1, 1, 2);
    second_of_first_series.series.request_attributes =
        vec![item("SPS-2", "RP-2"), item("SPS-4", "RP-4")];
    let mut other_series = synthetic_record(1, 2, 1);
    other_series.series.request_attributes = vec![item("SPS-3", "RP-1")];
    store_all(
        catalog.as_ref(),
        &[
            first,
            second_of_first_series,
            other_series,
            synthetic_record(2, 1, 1),
        ],
    )
    .await;

    let series_1 = synthetic_series_uid(1, 1).to_string();
    let series_2 = synthetic_series_uid(1, 2).to_string();
    let sps = MatchKey::ScheduledProcedureStepId;
    let rp = MatchKey::RequestedProcedureId;
    let cases: [(Filters, Vec<&String>); 7] = [
        (vec![(sps, single("SPS-2"))], vec![&series_1]),
        (vec![(sps, single("SPS-4"))], vec![&series_1]),
        (vec![(rp, single("RP-1"))], vec![&series_1, &series_2]),
        (vec![(rp, wildcard("RP-?"))], vec![&series_1, &series_2]),
        (
            vec![(sps, single("SPS-2")), (rp, single("RP-2"))],
            vec![&series_1],
        ),
        (vec![(sps, single("SPS-2")), (rp, single("RP-1"))], vec![]),
        (vec![(sps, single("SPS-9"))], vec![]),
    ];
    for (filters, expected) in cases {
        let found = matched_uids(
            catalog.as_ref(),
            &query_at(QueryLevel::Series, filters.clone()),
        )
        .await;
        assert_eq!(
            found,
            expected.into_iter().cloned().collect::<Vec<_>>(),
            "{filters:?}"
        );
    }
    let studies = matching_studies(catalog.as_ref(), vec![(sps, single("SPS-3"))]).await;
    assert_eq!(studies, [study_uid_text(1)]);
    let query = query_at(QueryLevel::Instance, vec![(sps, single("SPS-3"))]);
    assert_eq!(
        matched_uids(catalog.as_ref(), &query).await,
        [synthetic_sop_instance_uid(1, 2, 1).to_string()]
    );

    let series = catalog
        .query(&query_at(QueryLevel::Series, vec![]))
        .await
        .unwrap();
    let items = &series[0].series.as_ref().unwrap().request_attributes;
    assert_eq!(
        items,
        &[
            item("SPS-1", "RP-1"),
            item("SPS-2", "RP-2"),
            item("SPS-4", "RP-4")
        ]
    );
    assert!(
        series[2]
            .series
            .as_ref()
            .unwrap()
            .request_attributes
            .is_empty()
    );
}
