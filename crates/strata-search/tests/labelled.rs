//! Search quality on a labelled set: synthetic studies (misspelled names, accents, report
//! phrases, several sources) plus real files of the shared corpus (SR reports, non-Latin
//! names), indexed through the catalog's event log like in production. Each query lists the
//! studies it must find; everything else it returns is a false positive. Prints precision and
//! recall and asserts the thresholds recorded in docs/search.md.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;

use strata_catalog::Catalog;
use strata_catalog::conformance::{synthetic_record, synthetic_study_uid};
use strata_search::{
    DocumentSettings, Indexer, IndexerSettings, SearchIndex, SearchRequest, SortOrder,
};
use tokio_util::sync::CancellationToken;

struct SyntheticStudy {
    number: u32,
    patient_name: &'static str,
    referring_physician_name: &'static str,
    modality: &'static str,
    study_description: &'static str,
    study_date: &'static str,
    issuer: &'static str,
    institution: &'static str,
    report_text: &'static str,
    finding_code_meaning: &'static str,
}

const SYNTHETIC_STUDIES: &[SyntheticStudy] = &[
    SyntheticStudy {
        number: 1,
        patient_name: "Müller^Jürgen",
        referring_physician_name: "Weber^Klaus",
        modality: "CT",
        study_description: "CT THORAX",
        study_date: "20240315",
        issuer: "HOSP-A",
        institution: "Klinikum Nord",
        report_text: "Small nodule in the right upper lobe, 4 mm",
        finding_code_meaning: "Pulmonary nodule",
    },
    SyntheticStudy {
        number: 2,
        patient_name: "Muller^Anna",
        referring_physician_name: "House^Gregory",
        modality: "MR",
        study_description: "MR KNEE LEFT",
        study_date: "20230102",
        issuer: "HOSP-B",
        institution: "Saint Mary Hospital",
        report_text: "Tear of the medial meniscus posterior horn",
        finding_code_meaning: "Meniscal tear",
    },
    SyntheticStudy {
        number: 3,
        patient_name: "Dupont^Hélène",
        referring_physician_name: "Lefèvre^Marc",
        modality: "MG",
        study_description: "Mammographie de dépistage",
        study_date: "20240601",
        issuer: "HOSP-A",
        institution: "Hôpital Nord",
        report_text: "No suspicious calcifications",
        finding_code_meaning: "Normal breast",
    },
    SyntheticStudy {
        number: 4,
        patient_name: "Smith^John",
        referring_physician_name: "Weber^Klaus",
        modality: "CT",
        study_description: "CT ABDOMEN PELVIS",
        study_date: "20221111",
        issuer: "HOSP-C",
        institution: "Saint Mary Hospital",
        report_text: "Hepatic steatosis without focal lesion",
        finding_code_meaning: "Fatty liver",
    },
    SyntheticStudy {
        number: 5,
        patient_name: "Smyth^Jon",
        referring_physician_name: "House^Gregory",
        modality: "CR",
        study_description: "CHEST PA",
        study_date: "20240720",
        issuer: "HOSP-C",
        institution: "Klinikum Nord",
        report_text: "No acute cardiopulmonary abnormality",
        finding_code_meaning: "Normal chest",
    },
    SyntheticStudy {
        number: 6,
        patient_name: "Nguyễn^Thị Minh",
        referring_physician_name: "Tran^Van",
        modality: "US",
        study_description: "US THYROID",
        study_date: "20240105",
        issuer: "HOSP-B",
        institution: "Saint Mary Hospital",
        report_text: "Thyroid nodule in the left lobe, TI-RADS 3",
        finding_code_meaning: "Thyroid nodule",
    },
    SyntheticStudy {
        number: 7,
        patient_name: "O'Brien^Seán",
        referring_physician_name: "Lefèvre^Marc",
        modality: "PT",
        study_description: "PET CT WHOLE BODY",
        study_date: "20240901",
        issuer: "HOSP-A",
        institution: "Hôpital Nord",
        report_text: "FDG avid lesion in the right lung",
        finding_code_meaning: "Malignant neoplasm of lung",
    },
    SyntheticStudy {
        number: 8,
        patient_name: "Kowalski^Jan",
        referring_physician_name: "Tran^Van",
        modality: "MR",
        study_description: "MR BRAIN",
        study_date: "20231224",
        issuer: "HOSP-B",
        institution: "Klinikum Nord",
        report_text: "Multiple periventricular white matter lesions",
        finding_code_meaning: "Multiple sclerosis",
    },
];

/// Corpus files indexed as studies 101.. (their metadata as the catalog would hold it).
const CORPUS_FILES: &[(u32, &str)] = &[
    (101, "valid/sr_basic_text.dcm"),
    (102, "valid/sr_comprehensive_deep_nesting.dcm"),
    (103, "charset/iso_ir_100_latin1_french.dcm"),
    (104, "charset/iso_ir_192_utf8.dcm"),
    (105, "charset/iso_ir_126_greek.dcm"),
    (106, "valid/ct_explicit_le_private_tags.dcm"),
];

/// (query, filters, expected studies). Every study not listed is a non-hit.
fn labelled_queries() -> Vec<(&'static str, SearchRequest, Vec<u32>)> {
    let query = |text: &str| SearchRequest {
        query: text.to_owned(),
        limit: 50,
        ..SearchRequest::default()
    };
    vec![
        // Names: any component, case and accents folded, one typo tolerated.
        ("exact family name", query("Kowalski"), vec![8]),
        (
            "accent-free spelling of an accented name",
            query("jurgen"),
            vec![1],
        ),
        (
            "accented spelling of the same name",
            query("Jürgen Müller"),
            vec![1],
        ),
        (
            "folded family name shared by two patients",
            query("muller"),
            vec![1, 2],
        ),
        (
            "misspelled name (transposition)",
            query("Kowlaski"),
            vec![8],
        ),
        ("misspelled name (substitution)", query("Dupomt"), vec![3]),
        (
            "misspelled name (phonetic substitution)",
            query("Kovalski"),
            vec![8],
        ),
        // A known limit: one edit also joins a different patient whose name is one letter
        // away (Smyth^Jon); kept as a labelled false positive.
        (
            "two name words, one near-duplicate patient",
            query("Smith John"),
            vec![4],
        ),
        ("misspelled name (deletion)", query("Helen"), vec![3]),
        (
            "Vietnamese name without diacritics",
            query("nguyen"),
            vec![6],
        ),
        ("referring physician", query("Gregory House"), vec![2, 5]),
        (
            "accented referring physician, typed plainly",
            query("lefevre"),
            vec![3, 7],
        ),
        ("corpus French name, folded", query("jerome"), vec![103]),
        ("corpus Chinese ideographic name", query("王"), vec![104]),
        ("corpus Greek name", query("Διονυσιος"), vec![105]),
        (
            "corpus SR verifying observer (nested sequence)",
            query("Riesmeier"),
            vec![102],
        ),
        // Report text and codes.
        ("report phrase", query("\"right upper lobe\""), vec![1]),
        ("report words", query("nodule lobe"), vec![1, 6]),
        ("code meaning", query("\"multiple sclerosis\""), vec![8]),
        ("code meaning word", query("steatosis"), vec![4]),
        (
            "phrase that must not match across words of other studies",
            query("\"right lung\""),
            vec![7],
        ),
        (
            "corpus SR text",
            query("\"This document is completed\""),
            vec![102],
        ),
        (
            "corpus SR code meaning",
            query("\"Report Text\""),
            vec![101],
        ),
        // Descriptions, institutions.
        ("French description folded", query("depistage"), vec![3]),
        ("institution", query("\"Saint Mary\""), vec![2, 4, 6]),
        // Filters.
        (
            "word with a modality filter",
            SearchRequest {
                modalities: vec!["CT".to_owned()],
                ..query("nodule")
            },
            vec![1],
        ),
        (
            "everything from one source",
            SearchRequest {
                sources: vec!["HOSP-C".to_owned()],
                ..query("")
            },
            vec![4, 5],
        ),
        (
            "date range",
            SearchRequest {
                date_from: Some(20240101),
                date_to: Some(20240630),
                ..query("")
            },
            vec![1, 3, 6],
        ),
        (
            "name, typo, and source together",
            SearchRequest {
                sources: vec!["HOSP-A".to_owned()],
                ..query("Mueller")
            },
            vec![1],
        ),
        // Non-hits only.
        (
            "private tag text is not indexed by default",
            query("GEMS_ACQU_01"),
            vec![],
        ),
        ("a word nobody wrote", query("appendicitis"), vec![]),
    ]
}

fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/corpus")
}

fn synthetic_metadata(study: &SyntheticStudy) -> String {
    let person_name = |name: &str| serde_json::json!({"vr": "PN", "Value": [{"Alphabetic": name}]});
    let text = |vr: &str, value: &str| serde_json::json!({"vr": vr, "Value": [value]});
    serde_json::json!({
        "00080020": text("DA", study.study_date),
        "00080060": text("CS", study.modality),
        "00080080": text("LO", study.institution),
        "00080090": person_name(study.referring_physician_name),
        "00081030": text("LO", study.study_description),
        "00100010": person_name(study.patient_name),
        "00100020": text("LO", &format!("PID-{}", study.number)),
        "00100021": text("LO", study.issuer),
        "0020000E": text("UI", &format!("2.25.4242.{}.1", study.number)),
        "00291010": text("LO", "VENDORSECRET"),
        "0040A730": {"vr": "SQ", "Value": [{
            "0040A040": text("CS", "TEXT"),
            "0040A160": text("UT", study.report_text),
            "0040A043": {"vr": "SQ", "Value": [{
                "00080100": text("SH", "F-0001"),
                "00080104": text("LO", study.finding_code_meaning),
            }]},
        }]},
    })
    .to_string()
}

/// Opens a SQLite catalog in `directory` holding the whole labelled set.
async fn labelled_catalog(directory: &std::path::Path) -> Arc<dyn Catalog> {
    let uri = format!("sqlite://{}/catalog.db", directory.display());
    let catalog = strata_catalog::open_catalog(&uri, 4)
        .await
        .expect("catalog");
    for study in SYNTHETIC_STUDIES {
        let mut record = synthetic_record(study.number, 1, 1);
        record.series.modality = study.modality.to_owned();
        record.metadata_json = synthetic_metadata(study);
        catalog.store_instance(&record).await.expect("store");
    }
    for (number, path) in CORPUS_FILES {
        let inspected = strata_dicom::inspect_file(&corpus_dir().join(path), Default::default())
            .unwrap_or_else(|error| panic!("{path}: {error}"));
        let mut record = synthetic_record(*number, 1, 1);
        record.metadata_json = inspected.metadata.to_string();
        catalog.store_instance(&record).await.expect("store");
    }
    catalog
}

fn study_number(study_instance_uid: &str) -> u32 {
    (1..=200)
        .find(|number| synthetic_study_uid(*number).as_str() == study_instance_uid)
        .expect("a labelled study")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_labelled_set_precision_and_recall() {
    let directory = tempfile::tempdir().expect("temp dir");
    let catalog = labelled_catalog(directory.path()).await;
    let index = Arc::new(
        SearchIndex::open(
            &directory.path().join("search"),
            DocumentSettings::default(),
        )
        .expect("index"),
    );
    let indexer = Indexer::new(catalog, index.clone(), IndexerSettings::default());
    let num_applied = indexer
        .catch_up(&CancellationToken::new())
        .await
        .expect("catch up");
    assert_eq!(
        num_applied as usize,
        SYNTHETIC_STUDIES.len() + CORPUS_FILES.len()
    );
    assert_eq!(
        index.num_studies() as usize,
        SYNTHETIC_STUDIES.len() + CORPUS_FILES.len()
    );

    let (mut true_positives, mut false_positives, mut false_negatives) = (0usize, 0usize, 0usize);
    let mut failures = Vec::new();
    for (label, request, expected) in labelled_queries() {
        let response = index.search(&request).expect(label);
        let found: BTreeSet<u32> = response
            .hits
            .iter()
            .map(|hit| study_number(&hit.study_instance_uid))
            .collect();
        let expected: BTreeSet<u32> = expected.into_iter().collect();
        true_positives += found.intersection(&expected).count();
        false_positives += found.difference(&expected).count();
        false_negatives += expected.difference(&found).count();
        if found != expected {
            failures.push(format!(
                "{label} ({:?}): expected {expected:?}, found {found:?}",
                request.query
            ));
        }
    }
    let precision = true_positives as f64 / (true_positives + false_positives).max(1) as f64;
    let recall = true_positives as f64 / (true_positives + false_negatives).max(1) as f64;
    eprintln!(
        "labelled set: {} queries, precision {precision:.3}, recall {recall:.3} (tp {true_positives}, fp {false_positives}, fn {false_negatives})",
        labelled_queries().len()
    );
    for failure in &failures {
        eprintln!("  miss: {failure}");
    }
    // Thresholds (docs/search.md): names are fuzzy, so a rare extra hit is tolerated; a
    // relevant study must practically never be missed.
    assert!(precision >= 0.9, "precision {precision:.3}");
    assert!(recall >= 0.95, "recall {recall:.3}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_results_carry_snippets_facets_and_date_order() {
    let directory = tempfile::tempdir().expect("temp dir");
    let catalog = labelled_catalog(directory.path()).await;
    let index = Arc::new(SearchIndex::in_memory(DocumentSettings::default()).expect("index"));
    Indexer::new(catalog, index.clone(), IndexerSettings::default())
        .catch_up(&CancellationToken::new())
        .await
        .expect("catch up");
    let response = index
        .search(&SearchRequest {
            query: "nodule".to_owned(),
            ..SearchRequest::default()
        })
        .expect("search");
    assert_eq!(response.total, 2);
    assert!(
        response
            .hits
            .iter()
            .all(|hit| hit.snippet.contains("<b>nodule</b>")),
        "{:?}",
        response.hits
    );
    assert_eq!(response.facets["modality"].get("CT"), Some(&1));
    assert_eq!(response.facets["modality"].get("US"), Some(&1));
    assert_eq!(response.facets["source"].get("HOSP-A"), Some(&1));

    let by_date = index
        .search(&SearchRequest {
            sort: SortOrder::DateDesc,
            modalities: vec!["ct".to_owned()],
            ..SearchRequest::default()
        })
        .expect("search");
    let dates: Vec<_> = by_date
        .hits
        .iter()
        .filter_map(|hit| hit.study_date.clone())
        .collect();
    let mut sorted = dates.clone();
    sorted.sort_by(|first, second| second.cmp(first));
    assert_eq!(dates, sorted);
    assert!(dates.len() >= 2);

    let page = index
        .search(&SearchRequest {
            limit: 3,
            offset: 3,
            ..SearchRequest::default()
        })
        .expect("search");
    assert_eq!(page.hits.len(), 3);
    assert_eq!(
        page.total as usize,
        SYNTHETIC_STUDIES.len() + CORPUS_FILES.len()
    );

    let error = index
        .search(&SearchRequest {
            query: "\"unclosed".to_owned(),
            ..SearchRequest::default()
        })
        .err();
    if let Some(error) = error {
        assert!(error.is_invalid_request() && error.message.contains('q'));
    }
}
