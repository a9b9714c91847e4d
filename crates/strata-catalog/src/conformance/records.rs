//! Synthetic instance records for the conformance suite. No real patient data: every value is
//! made up from the study / series / instance numbers.

use strata_types::{ObjectKey, SeriesUid, SopInstanceUid, StudyUid};

use crate::{
    IngestSource, InstanceAttributes, InstanceRecord, PatientAttributes, SeriesAttributes,
    StoredObject, StudyAttributes,
};

/// UID root of synthetic objects (a `2.25` UUID-derived root, never issued to real data).
const SYNTHETIC_UID_ROOT: &str = "2.25.4242";

/// CT Image Storage.
pub const CT_IMAGE_STORAGE: &str = "1.2.840.10008.5.1.4.1.1.2";
/// MR Image Storage.
pub const MR_IMAGE_STORAGE: &str = "1.2.840.10008.5.1.4.1.1.4";
/// Secondary Capture Image Storage.
pub const SECONDARY_CAPTURE_IMAGE_STORAGE: &str = "1.2.840.10008.5.1.4.1.1.7";
/// Explicit VR Little Endian.
pub const EXPLICIT_VR_LITTLE_ENDIAN: &str = "1.2.840.10008.1.2.1";

/// Returns the Study Instance UID of synthetic study `study`.
pub fn synthetic_study_uid(study: u32) -> StudyUid {
    StudyUid::parse(&format!("{SYNTHETIC_UID_ROOT}.{study}")).expect("synthetic uids are valid")
}

/// Returns the Series Instance UID of synthetic series `series` of study `study`.
pub fn synthetic_series_uid(study: u32, series: u32) -> SeriesUid {
    SeriesUid::parse(&format!("{SYNTHETIC_UID_ROOT}.{study}.{series}"))
        .expect("synthetic uids are valid")
}

/// Returns the SOP Instance UID of synthetic instance `instance` of a series.
pub fn synthetic_sop_instance_uid(study: u32, series: u32, instance: u32) -> SopInstanceUid {
    SopInstanceUid::parse(&format!("{SYNTHETIC_UID_ROOT}.{study}.{series}.{instance}"))
        .expect("synthetic uids are valid")
}

/// Returns a lowercase hex SHA-256-shaped checksum derived from `seed` (not a real digest;
/// the catalog only compares checksums).
pub fn synthetic_sha256(seed: &str) -> String {
    // FNV-1a with four different offsets gives 4 x 64 bits.
    (0..4_u64)
        .map(|lane| {
            let mut hash = 0xcbf2_9ce4_8422_2325_u64 ^ lane.wrapping_mul(0x9e37_79b9_7f4a_7c15);
            for byte in seed.bytes() {
                hash ^= u64::from(byte);
                hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
            }
            format!("{hash:016x}")
        })
        .collect()
}

/// Returns a complete synthetic record for instance `instance` of series `series` of study
/// `study` (all numbers >= 1). Patient `SYN-<study>`, a CT series, DICOM JSON metadata naming
/// the SOP Instance UID; tests change fields as they need.
pub fn synthetic_record(study: u32, series: u32, instance: u32) -> InstanceRecord {
    let study_instance_uid = synthetic_study_uid(study);
    let series_instance_uid = synthetic_series_uid(study, series);
    let sop_instance_uid = synthetic_sop_instance_uid(study, series, instance);
    let sha256 = synthetic_sha256(sop_instance_uid.as_str());
    let key = ObjectKey::for_content(&sha256);
    let study_date = format!("2024{:02}{:02}", study % 12 + 1, study % 28 + 1);
    let metadata_json = format!(
        r#"{{"00080016":{{"vr":"UI","Value":["{CT_IMAGE_STORAGE}"]}},"00080018":{{"vr":"UI","Value":["{sop_instance_uid}"]}},"00081030":{{"vr":"LO","Value":["Synthétique \"{study}\""]}}}}"#
    );
    InstanceRecord {
        patient: PatientAttributes {
            patient_id: format!("SYN-{study:04}"),
            issuer_of_patient_id: String::new(),
            patient_name: format!("Synthetic^Patient{study}"),
            patient_birth_date: format!("19{:02}0101", 50 + study % 50),
            patient_sex: "O".to_owned(),
        },
        study: StudyAttributes {
            study_instance_uid,
            study_date: study_date.clone(),
            study_time: "103000".to_owned(),
            accession_number: format!("ACC{study:05}"),
            referring_physician_name: "Referring^Synthetic".to_owned(),
            study_id: format!("S{study}"),
            study_description: format!("Synthetic study {study}"),
            timezone_offset_from_utc: "+0000".to_owned(),
        },
        series: SeriesAttributes {
            series_instance_uid,
            modality: "CT".to_owned(),
            series_number: Some(i64::from(series)),
            series_description: format!("Synthetic series {series}"),
            body_part_examined: "CHEST".to_owned(),
            performed_procedure_step_start_date: study_date,
            performed_procedure_step_start_time: "1030".to_owned(),
            request_attributes: Vec::new(),
        },
        instance: InstanceAttributes {
            sop_instance_uid,
            sop_class_uid: CT_IMAGE_STORAGE.to_owned(),
            instance_number: Some(i64::from(instance)),
            rows: Some(512),
            columns: Some(512),
            bits_allocated: Some(16),
            number_of_frames: None,
            title: format!("Synthetic image {instance}"),
            transfer_syntax_uid: EXPLICIT_VR_LITTLE_ENDIAN.to_owned(),
            specific_character_set: "ISO_IR 192".to_owned(),
        },
        object: StoredObject {
            key,
            size_bytes: 1_000 + u64::from(instance),
            sha256,
        },
        source: IngestSource {
            protocol: "stow-rs".to_owned(),
            calling_ae_title: None,
            remote_addr: Some("127.0.0.1:40000".to_owned()),
        },
        metadata_json,
        pixel_data_layout: None,
        purge_generation: 0,
    }
}

/// Returns `record` with different object content: another checksum and object key.
pub fn with_other_content(mut record: InstanceRecord, variant: u32) -> InstanceRecord {
    let sha256 = synthetic_sha256(&format!("{}#{variant}", record.instance.sop_instance_uid));
    record.object.key = ObjectKey::for_content(&sha256);
    record.object.sha256 = sha256;
    record
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_synthetic_checksums_look_like_sha256_and_differ() {
        let first = synthetic_sha256("a");
        assert_eq!(first.len(), 64);
        assert!(
            first
                .bytes()
                .all(|byte| byte.is_ascii_hexdigit() && !byte.is_ascii_uppercase())
        );
        assert_ne!(first, synthetic_sha256("b"));
        let record = synthetic_record(1, 1, 1);
        assert_ne!(
            with_other_content(record.clone(), 1).object.sha256,
            record.object.sha256
        );
    }
}
