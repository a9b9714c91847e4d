//! The CapabilityStatement served at `/fhir/metadata`: exactly what this server supports.

use serde_json::{Value, json};

use crate::params::{IMAGING_STUDY_PARAMETERS, PATIENT_PARAMETERS};

/// Returns the CapabilityStatement (FHIR R4 §3.1.0.9 capabilities interaction).
pub(crate) fn capability_statement(fhir_base_url: &str) -> Value {
    let search_parameters = |parameters: &[(&str, &str)]| -> Vec<Value> {
        parameters
            .iter()
            .map(|(name, kind)| json!({"name": name, "type": kind}))
            .collect()
    };
    let mut imaging_study_parameters = search_parameters(&IMAGING_STUDY_PARAMETERS);
    imaging_study_parameters.push(json!({
        "name": "patient.identifier",
        "type": "token",
        "documentation": "chained: the Patient ID, with the Issuer of Patient ID mapped from the system",
    }));
    let read_search = json!([{"code": "read"}, {"code": "search-type"}]);
    json!({
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": "2026-11-28",
        "publisher": "Strata",
        "kind": "instance",
        "software": {"name": "Strata", "version": env!("CARGO_PKG_VERSION")},
        "implementation": {"description": "Strata VNA FHIR R4 facade over its DICOM catalog", "url": fhir_base_url},
        "fhirVersion": "4.0.1",
        "format": ["application/fhir+json", "json"],
        "rest": [{
            "mode": "server",
            "resource": [
                {
                    "type": "ImagingStudy",
                    "documentation": "Search also takes _sort=started|-started, _include (below) and _format=json. started and _lastUpdated take the eq, ge, le, gt and lt prefixes; started is a date (YYYY, YYYY-MM, YYYY-MM-DD). Anything else is refused with an OperationOutcome.",
                    "versioning": "versioned",
                    "readHistory": false,
                    "conditionalRead": "not-match",
                    "interaction": read_search,
                    "searchInclude": ["ImagingStudy:patient", "ImagingStudy:endpoint"],
                    "searchParam": imaging_study_parameters,
                },
                {
                    "type": "Patient",
                    "documentation": "name matches the start of the name (family name first), name:contains anywhere; identifier is system|value with the system mapped from the Issuer of Patient ID (docs/fhir.md).",
                    "versioning": "versioned",
                    "readHistory": false,
                    "conditionalRead": "not-match",
                    "interaction": read_search,
                    "searchParam": search_parameters(&PATIENT_PARAMETERS),
                },
                {
                    "type": "Endpoint",
                    "interaction": read_search,
                },
            ],
        }],
    })
}
