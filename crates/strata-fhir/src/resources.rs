//! Builds FHIR R4 resources from catalog matches: ImagingStudy, Patient and Endpoint.
//!
//! Nothing is stored: every resource is rebuilt from the catalog on each request, so it is
//! always in step with what the archive holds. See `docs/fhir.md` for the mapping.

use std::collections::BTreeMap;

use serde_json::{Value, json};
use strata_catalog::{InstanceAttributes, PatientAttributes, QueryMatch, SeriesAttributes};

use crate::dates::{fhir_date, fhir_date_time, format_instant};

/// The DICOM code system (PS3.16), for modalities.
pub const DICOM_CODE_SYSTEM: &str = "http://dicom.nema.org/resources/ontology/DCM";
/// The identifier system of DICOM UIDs, whose values are `urn:oid:<uid>`.
pub const DICOM_UID_SYSTEM: &str = "urn:dicom:uid";
/// The system of SOP Class codes (`urn:oid:<uid>`), per the ImagingStudy examples.
pub const URI_SYSTEM: &str = "urn:ietf:rfc:3986";
/// The system of issuers that are neither OIDs nor URIs: `urn:strata:issuer:<percent-encoded>`.
pub const LOCAL_ISSUER_PREFIX: &str = "urn:strata:issuer:";
/// The id of the one Endpoint resource, the archive's DICOMweb service.
pub const ENDPOINT_ID: &str = "dicomweb";
/// v2 table 0203 (identifier types), for the accession number's `ACSN` type.
const IDENTIFIER_TYPE_SYSTEM: &str = "http://terminology.hl7.org/CodeSystem/v2-0203";

/// Returns the FHIR identifier system for an Issuer of Patient ID (0010,0021):
/// - empty: no system;
/// - an OID (`1.2.3`): `urn:oid:1.2.3`;
/// - already a URI (contains `:`, e.g. `urn:oid:1.2.3`, `http://hospital/mrn`): itself;
/// - anything else (`HOSPITAL A`): `urn:strata:issuer:HOSPITAL%20A`.
pub fn issuer_to_system(issuer: &str) -> Option<String> {
    if issuer.is_empty() {
        None
    } else if is_oid(issuer) {
        Some(format!("urn:oid:{issuer}"))
    } else if issuer.contains(':') {
        Some(issuer.to_owned())
    } else {
        Some(format!("{LOCAL_ISSUER_PREFIX}{}", percent_encode(issuer)))
    }
}

/// Returns the Issuer of Patient ID values a FHIR identifier system can stand for (the
/// inverse of [`issuer_to_system`]; `urn:oid:1.2.3` may have been stored as `1.2.3` or as
/// itself). `None` for a system that no issuer maps to.
pub fn system_to_issuers(system: &str) -> Option<Vec<String>> {
    if system.is_empty() {
        return Some(vec![String::new()]);
    }
    if let Some(oid) = system.strip_prefix("urn:oid:") {
        return Some(vec![oid.to_owned(), system.to_owned()]);
    }
    if let Some(encoded) = system.strip_prefix(LOCAL_ISSUER_PREFIX) {
        return percent_decode(encoded).map(|issuer| vec![issuer]);
    }
    system.contains(':').then(|| vec![system.to_owned()])
}

/// Returns whether `value` looks like an OID / UID: digit groups separated by dots.
pub(crate) fn is_oid(value: &str) -> bool {
    !value.is_empty()
        && value
            .split('.')
            .all(|group| !group.is_empty() && group.bytes().all(|byte| byte.is_ascii_digit()))
}

fn percent_encode(text: &str) -> String {
    let mut encoded = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut position = 0;
    while position < bytes.len() {
        if bytes[position] == b'%' {
            let hex = text.get(position + 1..position + 3)?;
            decoded.push(u8::from_str_radix(hex, 16).ok()?);
            position += 3;
        } else {
            decoded.push(bytes[position]);
            position += 1;
        }
    }
    String::from_utf8(decoded).ok()
}

/// Returns `meta` for a resource last changed at `last_updated_ms`: the version is the
/// timestamp itself, so it changes whenever the resource does.
pub(crate) fn meta(last_updated_ms: i64) -> Value {
    json!({
        "versionId": last_updated_ms.to_string(),
        "lastUpdated": format_instant(last_updated_ms),
    })
}

/// Returns the weak ETag of a version (FHIR R4 §3.1.0.5.3).
pub(crate) fn etag(last_updated_ms: i64) -> String {
    format!("W/\"{last_updated_ms}\"")
}

/// The series and instances of one study, for `ImagingStudy.series`.
#[derive(Debug, Default)]
pub(crate) struct StudyContent {
    /// Series UID -> (series attributes, instances) in catalog order.
    pub series: Vec<(SeriesAttributes, Vec<InstanceAttributes>)>,
    /// Series UID -> Laterality (0020,0060) of the series' first instance, when present.
    pub laterality: BTreeMap<String, String>,
}

impl StudyContent {
    /// Records the Laterality of each series from series-level matches carrying the
    /// metadata of their first instance.
    pub(crate) fn add_laterality(
        contents: &mut BTreeMap<String, StudyContent>,
        series_matches: &[QueryMatch],
    ) {
        for found in series_matches {
            let (Some(series), Some(metadata_json)) = (&found.series, &found.metadata_json) else {
                continue;
            };
            let Some(laterality) = laterality_of(metadata_json) else {
                continue;
            };
            if let Some(content) = contents.get_mut(found.study.study_instance_uid.as_str()) {
                content
                    .laterality
                    .insert(series.series_instance_uid.to_string(), laterality);
            }
        }
    }

    /// Groups instance-level matches by study and series.
    pub(crate) fn group(matches: Vec<QueryMatch>) -> BTreeMap<String, StudyContent> {
        let mut by_study: BTreeMap<String, StudyContent> = BTreeMap::new();
        for found in matches {
            let (Some(series), Some(instance)) = (found.series, found.instance) else {
                continue;
            };
            let content = by_study
                .entry(found.study.study_instance_uid.to_string())
                .or_default();
            match content
                .series
                .iter_mut()
                .find(|(known, _)| known.series_instance_uid == series.series_instance_uid)
            {
                Some((_, instances)) => instances.push(instance),
                None => content.series.push((series, vec![instance])),
            }
        }
        for content in by_study.values_mut() {
            content
                .series
                .sort_by_key(|(series, _)| (series.series_number.is_none(), series.series_number));
            for (_, instances) in &mut content.series {
                instances.sort_by_key(|instance| {
                    (instance.instance_number.is_none(), instance.instance_number)
                });
            }
        }
        by_study
    }
}

/// Builds an ImagingStudy from a study-level match and its series. See FHIR R4
/// ImagingStudy and PS3.17 Annex "DICOM to FHIR ImagingStudy mapping".
pub(crate) fn imaging_study(found: &QueryMatch, content: Option<&StudyContent>) -> Value {
    let study = &found.study;
    let study_uid = study.study_instance_uid.to_string();
    let mut identifiers = vec![json!({
        "use": "official",
        "system": DICOM_UID_SYSTEM,
        "value": format!("urn:oid:{study_uid}"),
    })];
    if !study.accession_number.is_empty() {
        identifiers.push(json!({
            "use": "usual",
            "type": {"coding": [{"system": IDENTIFIER_TYPE_SYSTEM, "code": "ACSN"}]},
            "value": study.accession_number,
        }));
    }
    let mut resource = json!({
        "resourceType": "ImagingStudy",
        "id": study_uid,
        "meta": meta(found.last_updated_ms),
        "identifier": identifiers,
        "status": "available",
        "subject": {"reference": format!("Patient/{}", found.patient_key)},
        "endpoint": [{"reference": format!("Endpoint/{ENDPOINT_ID}")}],
        "numberOfSeries": found.num_study_series,
        "numberOfInstances": found.num_study_instances,
    });
    let object = resource.as_object_mut().expect("built as an object");
    if !found.modalities_in_study.is_empty() {
        object.insert(
            "modality".to_owned(),
            Value::Array(
                found
                    .modalities_in_study
                    .iter()
                    .map(|code| modality(code))
                    .collect(),
            ),
        );
    }
    if let Some(started) = fhir_date_time(
        &study.study_date,
        &study.study_time,
        &study.timezone_offset_from_utc,
    ) {
        object.insert("started".to_owned(), Value::String(started));
    }
    if !study.study_description.is_empty() {
        object.insert(
            "description".to_owned(),
            Value::String(study.study_description.clone()),
        );
    }
    if let Some(content) = content {
        let series: Vec<Value> = content
            .series
            .iter()
            .map(|(series, instances)| {
                let mut value = imaging_series(series, instances, study);
                let laterality = content
                    .laterality
                    .get(series.series_instance_uid.as_str())
                    .and_then(|code| laterality_coding(code));
                if let Some(laterality) = laterality {
                    value["laterality"] = laterality;
                }
                value
            })
            .collect();
        if !series.is_empty() {
            object.insert("series".to_owned(), Value::Array(series));
        }
    }
    resource
}

/// Returns Laterality (0020,0060) from a DICOM JSON object.
fn laterality_of(metadata_json: &str) -> Option<String> {
    let metadata: Value = serde_json::from_str(metadata_json).ok()?;
    let value = metadata.get("00200060")?.get("Value")?.get(0)?.as_str()?;
    Some(value.trim().to_owned())
}

/// Maps a DICOM Laterality (R, L, B) to its SNOMED CT code (PS3.16 CID 244).
fn laterality_coding(code: &str) -> Option<Value> {
    let (snomed_code, display) = match code {
        "R" => ("24028007", "Right"),
        "L" => ("7771000", "Left"),
        "B" => ("51440002", "Right and left"),
        _ => return None,
    };
    Some(json!({"system": "http://snomed.info/sct", "code": snomed_code, "display": display}))
}

fn modality(code: &str) -> Value {
    json!({"system": DICOM_CODE_SYSTEM, "code": code})
}

fn imaging_series(
    series: &SeriesAttributes,
    instances: &[InstanceAttributes],
    study: &strata_catalog::StudyAttributes,
) -> Value {
    // `series.modality` is required by FHIR; a series stored without Modality is `OT` (other).
    let modality_code = if series.modality.is_empty() {
        "OT"
    } else {
        series.modality.as_str()
    };
    let mut value = json!({
        "uid": series.series_instance_uid.to_string(),
        "modality": modality(modality_code),
        "numberOfInstances": instances.len(),
        "endpoint": [{"reference": format!("Endpoint/{ENDPOINT_ID}")}],
    });
    let object = value.as_object_mut().expect("built as an object");
    if let Some(number) = series
        .series_number
        .and_then(|number| u32::try_from(number).ok())
    {
        object.insert("number".to_owned(), json!(number));
    }
    if !series.series_description.is_empty() {
        object.insert("description".to_owned(), json!(series.series_description));
    }
    if !series.body_part_examined.is_empty() {
        // Body Part Examined (0018,0015) is a defined term, not a SNOMED code: carried as
        // display text only.
        object.insert(
            "bodySite".to_owned(),
            json!({"display": series.body_part_examined}),
        );
    }
    if let Some(started) = fhir_date_time(
        &series.performed_procedure_step_start_date,
        &series.performed_procedure_step_start_time,
        &study.timezone_offset_from_utc,
    ) {
        object.insert("started".to_owned(), json!(started));
    }
    let instances: Vec<Value> = instances
        .iter()
        .map(|instance| {
            let mut value = json!({
                "uid": instance.sop_instance_uid.to_string(),
                "sopClass": {"system": URI_SYSTEM, "code": format!("urn:oid:{}", instance.sop_class_uid)},
            });
            if let Some(number) = instance.instance_number.and_then(|number| u32::try_from(number).ok()) {
                value["number"] = json!(number);
            }
            if !instance.title.is_empty() {
                value["title"] = json!(instance.title);
            }
            value
        })
        .collect();
    if !instances.is_empty() {
        object.insert("instance".to_owned(), Value::Array(instances));
    }
    value
}

/// Builds a Patient from the patient attributes of a match, last changed at `last_updated_ms`
/// (the newest of the patient's studies).
pub(crate) fn patient(
    patient_key: i64,
    patient: &PatientAttributes,
    last_updated_ms: i64,
) -> Value {
    let mut resource = json!({
        "resourceType": "Patient",
        "id": patient_key.to_string(),
        "meta": meta(last_updated_ms),
    });
    let object = resource.as_object_mut().expect("built as an object");
    if !patient.patient_id.is_empty() {
        let mut identifier = json!({"use": "usual", "value": patient.patient_id});
        if let Some(system) = issuer_to_system(&patient.issuer_of_patient_id) {
            identifier["system"] = json!(system);
        }
        object.insert("identifier".to_owned(), json!([identifier]));
    }
    if let Some(name) = human_name(&patient.patient_name) {
        object.insert("name".to_owned(), json!([name]));
    }
    let gender = match patient.patient_sex.as_str() {
        "M" => "male",
        "F" => "female",
        "O" => "other",
        _ => "unknown",
    };
    object.insert("gender".to_owned(), json!(gender));
    if let Some(birth_date) = fhir_date(&patient.patient_birth_date) {
        object.insert("birthDate".to_owned(), json!(birth_date));
    }
    resource
}

/// Maps the alphabetic group of a DICOM PN (`Family^Given^Middle^Prefix^Suffix`) to a
/// HumanName.
fn human_name(person_name: &str) -> Option<Value> {
    let alphabetic = person_name.split('=').next().unwrap_or_default();
    if alphabetic.trim().is_empty() {
        return None;
    }
    let components: Vec<&str> = alphabetic.split('^').map(str::trim).collect();
    let component = |index: usize| {
        components
            .get(index)
            .copied()
            .filter(|text| !text.is_empty())
    };
    let mut name = json!({"use": "official", "text": components.iter().filter(|text| !text.is_empty()).copied().collect::<Vec<_>>().join(" ")});
    if let Some(family) = component(0) {
        name["family"] = json!(family);
    }
    let given: Vec<&str> = [component(1), component(2)].into_iter().flatten().collect();
    if !given.is_empty() {
        name["given"] = json!(given);
    }
    if let Some(prefix) = component(3) {
        name["prefix"] = json!([prefix]);
    }
    if let Some(suffix) = component(4) {
        name["suffix"] = json!([suffix]);
    }
    Some(name)
}

/// Builds the Endpoint describing the archive's DICOMweb service at `dicomweb_base_url`.
pub(crate) fn endpoint(dicomweb_base_url: &str) -> Value {
    json!({
        "resourceType": "Endpoint",
        "id": ENDPOINT_ID,
        "status": "active",
        "connectionType": {
            "system": "http://terminology.hl7.org/CodeSystem/endpoint-connection-type",
            "code": "dicom-wado-rs",
        },
        "name": "Strata DICOMweb (WADO-RS, QIDO-RS, STOW-RS)",
        "payloadType": [{"text": "DICOM"}],
        "payloadMimeType": ["application/dicom", "application/dicom+json"],
        "address": dicomweb_base_url,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_issuer_mapping_round_trips() {
        for issuer in [
            "1.2.840.99",
            "urn:oid:1.2.3",
            "http://hospital.example/mrn",
            "HOSPITAL A/é",
        ] {
            let system = issuer_to_system(issuer).expect("a system");
            assert!(
                system_to_issuers(&system)
                    .expect("issuers")
                    .contains(&issuer.to_owned()),
                "{issuer} -> {system}"
            );
        }
        assert_eq!(issuer_to_system(""), None);
        assert_eq!(issuer_to_system("1.2.3").as_deref(), Some("urn:oid:1.2.3"));
        assert_eq!(
            issuer_to_system("HOSP A").as_deref(),
            Some("urn:strata:issuer:HOSP%20A")
        );
        assert_eq!(system_to_issuers("nocolon"), None);
    }

    #[test]
    fn test_laterality_comes_from_dicom_json() {
        let metadata = r#"{"00200060":{"vr":"CS","Value":["L"]}}"#;
        assert_eq!(laterality_of(metadata).as_deref(), Some("L"));
        assert_eq!(laterality_coding("L").expect("coding")["code"], "7771000");
        assert_eq!(laterality_of("{}"), None);
        assert_eq!(laterality_coding("X"), None);
    }

    #[test]
    fn test_person_names_map_to_human_names() {
        let name = human_name("Doe^Jane^Q^Dr^III=ドウ").expect("a name");
        assert_eq!(name["family"], "Doe");
        assert_eq!(name["given"], json!(["Jane", "Q"]));
        assert_eq!(name["prefix"], json!(["Dr"]));
        assert_eq!(name["text"], "Doe Jane Q Dr III");
        assert_eq!(human_name(""), None);
    }
}
