//! Every file of the shared corpus is inspected as its MANIFEST row expects.

use std::path::PathBuf;

use strata_dicom::{InspectLimits, inspect_file};

fn corpus_dir() -> Option<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/corpus");
    dir.join("MANIFEST.tsv").is_file().then_some(dir)
}

struct Row {
    path: String,
    expected: String,
    sop_instance_uid: String,
    study_instance_uid: String,
    series_instance_uid: String,
    transfer_syntax_uid: String,
    patient_name_decoded: String,
}

fn manifest(dir: &std::path::Path) -> Vec<Row> {
    let text = std::fs::read_to_string(dir.join("MANIFEST.tsv")).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split('\t').collect();
    let column = |name: &str| header.iter().position(|h| *h == name).unwrap();
    let patient_name = column("patient_name_decoded");
    let (path, expected, sop, study, series, ts) = (
        column("path"),
        column("expected"),
        column("sop_instance_uid"),
        column("study_instance_uid"),
        column("series_instance_uid"),
        column("transfer_syntax_uid"),
    );
    lines
        .map(|line| {
            let fields: Vec<&str> = line.split('\t').collect();
            Row {
                path: fields[path].to_owned(),
                expected: fields[expected].to_owned(),
                sop_instance_uid: fields[sop].to_owned(),
                study_instance_uid: fields[study].to_owned(),
                series_instance_uid: fields[series].to_owned(),
                transfer_syntax_uid: fields[ts].to_owned(),
                patient_name_decoded: fields[patient_name].to_owned(),
            }
        })
        .collect()
}

#[test]
fn test_every_corpus_file_is_inspected_as_the_manifest_expects() {
    let Some(dir) = corpus_dir() else {
        eprintln!("skipped: ../shared/corpus not found");
        return;
    };
    let mut failures = Vec::new();
    let rows = manifest(&dir);
    assert!(rows.len() > 100, "manifest has {} rows", rows.len());
    for row in &rows {
        let result = inspect_file(&dir.join(&row.path), InspectLimits::default());
        match (row.expected.as_str(), &result) {
            ("accept" | "accept-nodecode" | "accept-lenient" | "conflict", Ok(instance)) => {
                let attributes = &instance.attributes;
                // A blank study/series UID in the manifest means the file has none: the archive
                // derives them (checked in the unit tests).
                if attributes.sop_instance_uid.as_str() != row.sop_instance_uid
                    || (!row.study_instance_uid.is_empty()
                        && attributes.study_instance_uid.as_str() != row.study_instance_uid)
                    || (!row.series_instance_uid.is_empty()
                        && attributes.series_instance_uid.as_str() != row.series_instance_uid)
                {
                    failures.push(format!("{}: UIDs differ from the manifest", row.path));
                }
                if row.path.starts_with("charset/")
                    && attributes.patient_name != row.patient_name_decoded
                {
                    failures.push(format!(
                        "{}: PatientName `{}` != `{}`",
                        row.path, attributes.patient_name, row.patient_name_decoded
                    ));
                }
                if row.transfer_syntax_uid.starts_with("1.2.")
                    && instance.transfer_syntax_uid != row.transfer_syntax_uid
                {
                    failures.push(format!(
                        "{}: transfer syntax {} != {}",
                        row.path, instance.transfer_syntax_uid, row.transfer_syntax_uid
                    ));
                }
            }
            ("parse-only" | "reject", Err(_)) | ("reject-or-recover", _) => {}
            (expected, outcome) => failures.push(format!(
                "{}: expected {expected}, got {:?}",
                row.path,
                outcome
                    .as_ref()
                    .map(|_| "accepted")
                    .map_err(|error| error.reason.clone())
            )),
        }
    }
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn test_titles_follow_the_fhir_mapping_order() {
    let Some(dir) = corpus_dir() else {
        eprintln!("skipped: ../shared/corpus not found");
        return;
    };
    let title = |path: &str| {
        inspect_file(&dir.join(path), InspectLimits::default())
            .unwrap()
            .attributes
            .title
    };
    // A CT image has no label, concept name or document title: its Image Type.
    assert_eq!(
        title("valid/ct_explicit_le_private_tags.dcm"),
        "ORIGINAL\\PRIMARY\\AXIAL"
    );
    // A structured report: the Concept Name of its root content item.
    let report_title = title("valid/sr_basic_text.dcm");
    assert!(
        !report_title.is_empty() && !report_title.contains('\\'),
        "{report_title}"
    );
    // An encapsulated PDF: its Document Title or Concept Name.
    assert!(!title("valid/encapsulated_pdf.dcm").is_empty());
}
