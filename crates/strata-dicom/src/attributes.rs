//! The attributes the catalog indexes, read from a parsed data set.

use dicom_core::Tag;
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;
use strata_types::{SeriesUid, SopInstanceUid, StudyUid, Uid};

use crate::error::{DicomError, DicomErrorKind};

/// One Request Attributes Sequence (0040,0275) item.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestAttributeItem {
    pub scheduled_procedure_step_id: String,
    pub requested_procedure_id: String,
}

/// Every attribute QIDO-RS matches on or returns, with validated identifiers. Text values are
/// decoded to UTF-8 with padding trimmed; absent values are empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtractedAttributes {
    pub specific_character_set: String,
    pub patient_id: String,
    pub issuer_of_patient_id: String,
    pub patient_name: String,
    pub patient_birth_date: String,
    pub patient_sex: String,
    pub study_instance_uid: StudyUid,
    pub study_date: String,
    pub study_time: String,
    pub accession_number: String,
    pub referring_physician_name: String,
    pub study_id: String,
    pub study_description: String,
    pub timezone_offset_from_utc: String,
    pub series_instance_uid: SeriesUid,
    pub modality: String,
    pub series_number: Option<i64>,
    pub series_description: String,
    pub body_part_examined: String,
    pub performed_procedure_step_start_date: String,
    pub performed_procedure_step_start_time: String,
    pub request_attributes: Vec<RequestAttributeItem>,
    pub sop_instance_uid: SopInstanceUid,
    pub sop_class_uid: Uid,
    pub instance_number: Option<i64>,
    pub rows: Option<i64>,
    pub columns: Option<i64>,
    pub bits_allocated: Option<i64>,
    pub number_of_frames: Option<i64>,
    /// Content Label, Concept Name meaning, Document Title or Image Type, whichever comes
    /// first (the DICOM mapping of FHIR `ImagingStudy.series.instance.title`); may be empty.
    pub title: String,
    pub transfer_syntax_uid: String,
}

impl ExtractedAttributes {
    /// Reads and validates the attributes of `object`, returning them with warnings about
    /// what was accepted leniently.
    ///
    /// Refuses objects without a SOP Instance UID or SOP Class UID, and objects that have only
    /// one of Study and Series Instance UID. An object with neither (a standalone object, as
    /// some converters write) is filed under a study and a series whose UIDs are derived from
    /// its SOP Instance UID (`2.25.` + 128 bits of SHA-256), with a warning; the stored bytes
    /// are not changed.
    pub fn from_object(
        object: &InMemDicomObject,
        transfer_syntax_uid: &str,
    ) -> Result<(Self, Vec<String>), DicomError> {
        let mut warnings = Vec::new();
        let sop_instance_uid = required_uid(object, tags::SOP_INSTANCE_UID, "SOP Instance UID")?;
        let sop_class_uid = required_uid(object, tags::SOP_CLASS_UID, "SOP Class UID")?;
        if let Some(name) = non_patient_sop_class(sop_class_uid.as_str()) {
            return Err(DicomError {
                kind: DicomErrorKind::NotPatientObject,
                reason: format!(
                    "{name} ({sop_class_uid}) is not a patient object and cannot be archived as an instance"
                ),
            });
        }
        let (study_instance_uid, series_instance_uid) = match (
            object.get(tags::STUDY_INSTANCE_UID).is_some(),
            object.get(tags::SERIES_INSTANCE_UID).is_some(),
        ) {
            (false, false) => {
                warnings.push(
                    "the object has no Study and no Series Instance UID: it is filed under UIDs \
                     derived from its SOP Instance UID"
                        .to_owned(),
                );
                (
                    Uid::parse(&derived_uid("study", sop_instance_uid.as_str()))
                        .expect("derived UIDs are valid"),
                    Uid::parse(&derived_uid("series", sop_instance_uid.as_str()))
                        .expect("derived UIDs are valid"),
                )
            }
            _ => (
                required_uid(object, tags::STUDY_INSTANCE_UID, "Study Instance UID")?,
                required_uid(object, tags::SERIES_INSTANCE_UID, "Series Instance UID")?,
            ),
        };
        for (name, uid) in [
            ("Study Instance UID", &study_instance_uid),
            ("Series Instance UID", &series_instance_uid),
            ("SOP Instance UID", &sop_instance_uid),
        ] {
            if !uid.is_conformant() {
                warnings.push(format!(
                    "{name} `{uid}` does not follow the DICOM UID syntax; kept as is"
                ));
            }
        }
        let request_attributes = object
            .get(tags::REQUEST_ATTRIBUTES_SEQUENCE)
            .and_then(|element| element.items())
            .map(|items| {
                items
                    .iter()
                    .map(|item| RequestAttributeItem {
                        scheduled_procedure_step_id: text(item, tags::SCHEDULED_PROCEDURE_STEP_ID),
                        requested_procedure_id: text(item, tags::REQUESTED_PROCEDURE_ID),
                    })
                    .collect()
            })
            .unwrap_or_default();
        let attributes = Self {
            specific_character_set: text(object, tags::SPECIFIC_CHARACTER_SET),
            patient_id: text(object, tags::PATIENT_ID),
            issuer_of_patient_id: text(object, tags::ISSUER_OF_PATIENT_ID),
            patient_name: person_name(&text(object, tags::PATIENT_NAME)),
            patient_birth_date: text(object, tags::PATIENT_BIRTH_DATE),
            patient_sex: text(object, tags::PATIENT_SEX),
            study_instance_uid: StudyUid::parse(study_instance_uid.as_str())
                .expect("validated above"),
            study_date: text(object, tags::STUDY_DATE),
            study_time: text(object, tags::STUDY_TIME),
            accession_number: text(object, tags::ACCESSION_NUMBER),
            referring_physician_name: person_name(&text(object, tags::REFERRING_PHYSICIAN_NAME)),
            study_id: text(object, tags::STUDY_ID),
            study_description: text(object, tags::STUDY_DESCRIPTION),
            timezone_offset_from_utc: text(object, tags::TIMEZONE_OFFSET_FROM_UTC),
            series_instance_uid: SeriesUid::parse(series_instance_uid.as_str())
                .expect("validated above"),
            modality: text(object, tags::MODALITY),
            series_number: integer(object, tags::SERIES_NUMBER),
            series_description: text(object, tags::SERIES_DESCRIPTION),
            body_part_examined: text(object, tags::BODY_PART_EXAMINED),
            performed_procedure_step_start_date: text(
                object,
                tags::PERFORMED_PROCEDURE_STEP_START_DATE,
            ),
            performed_procedure_step_start_time: text(
                object,
                tags::PERFORMED_PROCEDURE_STEP_START_TIME,
            ),
            request_attributes,
            sop_instance_uid: SopInstanceUid::parse(sop_instance_uid.as_str())
                .expect("validated above"),
            sop_class_uid,
            instance_number: integer(object, tags::INSTANCE_NUMBER),
            rows: integer(object, tags::ROWS),
            columns: integer(object, tags::COLUMNS),
            bits_allocated: integer(object, tags::BITS_ALLOCATED),
            number_of_frames: integer(object, tags::NUMBER_OF_FRAMES),
            title: title(object),
            transfer_syntax_uid: transfer_syntax_uid.trim_end_matches(['\0', ' ']).to_owned(),
        };
        Ok((attributes, warnings))
    }
}

/// The first non-empty of Content Label (0070,0080), Concept Name Code Sequence > Code Meaning
/// (0040,A043 > 0008,0104), Document Title (0042,0010) and Image Type (0008,0008).
fn title(object: &InMemDicomObject) -> String {
    let concept_name = object
        .get(tags::CONCEPT_NAME_CODE_SEQUENCE)
        .and_then(|element| element.items())
        .and_then(|items| items.first())
        .map(|item| text(item, tags::CODE_MEANING))
        .unwrap_or_default();
    [
        text(object, tags::CONTENT_LABEL),
        concept_name,
        text(object, tags::DOCUMENT_TITLE),
        text(object, tags::IMAGE_TYPE),
    ]
    .into_iter()
    .find(|candidate| !candidate.is_empty())
    .unwrap_or_default()
}

/// Returns the name of SOP classes whose IODs have no Patient, Study and Series modules
/// (PS3.3 Annex A): they are not filed in the patient/study/series hierarchy.
fn non_patient_sop_class(sop_class_uid: &str) -> Option<&'static str> {
    Some(match sop_class_uid {
        "1.2.840.10008.1.3.10" => "Media Storage Directory (DICOMDIR)",
        "1.2.840.10008.5.1.4.39.1" => "Color Palette Storage",
        "1.2.840.10008.5.1.4.38.1" => "Hanging Protocol Storage",
        "1.2.840.10008.5.1.4.43.1" => "Generic Implant Template Storage",
        "1.2.840.10008.5.1.4.44.1" => "Implant Assembly Template Storage",
        "1.2.840.10008.5.1.4.45.1" => "Implant Template Group Storage",
        "1.2.840.10008.5.1.4.1.1.200.1" => "CT Defined Procedure Protocol Storage",
        "1.2.840.10008.5.1.4.1.1.200.3" => "XA Defined Procedure Protocol Storage",
        _ => return None,
    })
}

/// Derives a stable UID under the `2.25` arc (PS3.5 §B.2) from a SOP Instance UID.
fn derived_uid(level: &str, sop_instance_uid: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(format!("strata:{level}:{sop_instance_uid}").as_bytes());
    let mut first_half = [0u8; 16];
    first_half.copy_from_slice(&digest[..16]);
    format!("2.25.{}", u128::from_be_bytes(first_half))
}

fn required_uid(object: &InMemDicomObject, tag: Tag, name: &str) -> Result<Uid, DicomError> {
    let element = object.get(tag).ok_or_else(|| {
        DicomError::missing(format!(
            "{name} {} is missing",
            crate::inspect::tag_text(tag)
        ))
    })?;
    let value = element_text(element).ok_or_else(|| {
        DicomError::missing(format!(
            "{name} {} has no text value",
            crate::inspect::tag_text(tag)
        ))
    })?;
    Uid::parse(&value).map_err(|error| {
        DicomError::missing(format!(
            "{name} {} is not a valid UID: {error}",
            crate::inspect::tag_text(tag)
        ))
    })
}

/// Normalizes a person name: trailing empty components and component groups are dropped
/// (PS3.5 §6.2.1 lets encoders omit them), so `Doe^John^^=` and `Doe^John` match alike.
pub(crate) fn person_name(value: &str) -> String {
    let mut groups: Vec<&str> = value
        .split('=')
        .map(|group| group.trim_end_matches(['^', ' ']))
        .collect();
    while groups.last().is_some_and(|group| group.is_empty()) {
        groups.pop();
    }
    groups.join("=")
}

/// Returns the element's value as trimmed text, or an empty string.
fn text(object: &InMemDicomObject, tag: Tag) -> String {
    object
        .get(tag)
        .and_then(element_text)
        .map(|value| {
            value
                .trim_matches(|c: char| c == ' ' || c == '\0')
                .to_owned()
        })
        .unwrap_or_default()
}

/// Returns an element's value as text. Elements that arrived with VR UN (e.g. from an
/// Explicit VR file written by a system that did not know the attribute) hold raw bytes;
/// textual attributes among them are read as ASCII/UTF-8.
fn element_text(element: &dicom_object::mem::InMemElement) -> Option<String> {
    if element.vr() == dicom_core::VR::UN {
        let bytes = element.to_bytes().ok()?;
        return Some(String::from_utf8_lossy(&bytes).into_owned());
    }
    element.to_str().ok().map(|value| value.into_owned())
}

/// Returns the element's first value as an integer, when it parses as one.
fn integer(object: &InMemDicomObject, tag: Tag) -> Option<i64> {
    let element = object.get(tag)?;
    if element.vr() != dicom_core::VR::UN
        && let Ok(value) = element.to_int::<i64>()
    {
        return Some(value);
    }
    element_text(element)?
        .split('\\')
        .next()?
        .trim_matches(|c: char| c == ' ' || c == '\0')
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_person_names_drop_trailing_empty_parts() {
        assert_eq!(
            person_name("Wang^XiaoDong=王^小東="),
            "Wang^XiaoDong=王^小東"
        );
        assert_eq!(person_name("Doe^John^^^"), "Doe^John");
        assert_eq!(person_name("=山田^太郎"), "=山田^太郎");
        assert_eq!(person_name(""), "");
    }

    #[test]
    fn test_derived_uids_are_stable_conformant_and_distinct() {
        let study = derived_uid("study", "1.2.3");
        assert_eq!(study, derived_uid("study", "1.2.3"));
        assert_ne!(study, derived_uid("series", "1.2.3"));
        assert_ne!(study, derived_uid("study", "1.2.4"));
        assert!(strata_types::validate_uid_strict(&study).is_ok(), "{study}");
    }
}
