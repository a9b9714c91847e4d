//! Parses FHIR search parameters into the one catalog query (`CatalogQuery` filters).
//!
//! Every parameter, modifier and prefix is either translated exactly or refused with an
//! `OperationOutcome`: an unsupported one gets 400 `not-supported`, a malformed value 400
//! `invalid`. Repeating a parameter ANDs the values; a comma ORs them (FHIR R4 §3.1.1.5).

use strata_catalog::{MatchKey, Matcher, QueryOrder};
use strata_types::{SeriesUid, StudyUid};

use crate::dates::{
    PartialDate, Prefix, instant_bounds, parse_instant_range, split_prefix, study_date_bounds,
};
use crate::outcome::FhirError;
use crate::resources::{
    DICOM_CODE_SYSTEM, DICOM_UID_SYSTEM, URI_SYSTEM, is_oid, system_to_issuers,
};

/// The `status` codes of ImagingStudy (FHIR R4 value set imagingstudy-status).
const STATUS_CODES: [&str; 5] = [
    "registered",
    "available",
    "cancelled",
    "entered-in-error",
    "unknown",
];
const STATUS_SYSTEM: &str = "http://hl7.org/fhir/imagingstudy-status";

/// The search parameters of ImagingStudy this server supports, as the CapabilityStatement
/// lists them: (name, type).
pub(crate) const IMAGING_STUDY_PARAMETERS: [(&str, &str); 12] = [
    ("_id", "token"),
    ("_lastUpdated", "date"),
    ("identifier", "token"),
    ("patient", "reference"),
    ("subject", "reference"),
    ("started", "date"),
    ("modality", "token"),
    ("series", "token"),
    ("dicom-class", "token"),
    ("status", "token"),
    ("_count", "number"),
    ("_offset", "number"),
];

/// The search parameters of Patient this server supports: (name, type).
pub(crate) const PATIENT_PARAMETERS: [(&str, &str); 6] = [
    ("_id", "token"),
    ("_lastUpdated", "date"),
    ("identifier", "token"),
    ("name", "string"),
    ("_count", "number"),
    ("_offset", "number"),
];

/// A parsed search: the catalog filters plus paging, order and includes.
#[derive(Debug, Clone, Default)]
pub(crate) struct SearchRequest {
    pub filters: Vec<(MatchKey, Matcher)>,
    pub count: u64,
    pub offset: u64,
    pub order: QueryOrder,
    pub include_patient: bool,
    pub include_endpoint: bool,
    /// The parameters as received, minus `_offset`, for the paging links.
    pub link_parameters: Vec<(String, String)>,
}

/// The resource type a search is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SearchTarget {
    ImagingStudy,
    Patient,
}

/// Parses the query string of a search.
pub(crate) fn parse_search(
    raw_query: Option<&str>,
    target: SearchTarget,
    default_count: u64,
    max_count: u64,
) -> Result<SearchRequest, FhirError> {
    let mut request = SearchRequest {
        count: default_count.min(max_count),
        ..SearchRequest::default()
    };
    for (name, value) in url::form_urlencoded::parse(raw_query.unwrap_or_default().as_bytes()) {
        let name = name.trim().to_owned();
        let value = value.trim().to_owned();
        if name != "_offset" {
            request.link_parameters.push((name.clone(), value.clone()));
        }
        if value.is_empty() {
            return Err(FhirError::invalid(format!(
                "parameter `{name}` has an empty value"
            )));
        }
        match (target, name.as_str()) {
            (_, "_count") => request.count = parse_number(&name, &value)?.min(max_count),
            (_, "_offset") => request.offset = parse_number(&name, &value)?,
            (_, "_format") => check_format(&value)?,
            (_, "_id") if target == SearchTarget::ImagingStudy => {
                let uids = split_list(&value)
                    .map(|uid| parse_study_uid(&name, uid).map(|uid| uid.to_string()))
                    .collect::<Result<Vec<_>, _>>()?;
                request
                    .filters
                    .push((MatchKey::StudyInstanceUid, Matcher::List(uids)));
            }
            (_, "_id") => {
                let keys = split_list(&value)
                    .map(|id| parse_patient_key(&name, id))
                    .collect::<Result<Vec<_>, _>>()?;
                request
                    .filters
                    .push((MatchKey::PatientKey, Matcher::List(keys)));
            }
            (_, "_lastUpdated") => {
                let (from, to) = last_updated_range(&value)?;
                request
                    .filters
                    .push((MatchKey::LastUpdated, Matcher::Range { from, to }));
            }
            (SearchTarget::ImagingStudy, _) => {
                parse_imaging_study_parameter(&mut request, &name, &value)?;
            }
            (SearchTarget::Patient, "identifier") => {
                request
                    .filters
                    .extend(patient_identifier_filters(&name, &value)?);
            }
            (SearchTarget::Patient, "name" | "name:contains") => {
                let pattern = checked_name(&name, &value)?;
                let pattern = if name == "name" {
                    format!("{pattern}*")
                } else {
                    format!("*{pattern}*")
                };
                request
                    .filters
                    .push((MatchKey::PatientName, Matcher::Wildcard(pattern)));
            }
            (SearchTarget::Patient, _) => return Err(unsupported_parameter(&name, "Patient")),
        }
    }
    Ok(request)
}

fn parse_imaging_study_parameter(
    request: &mut SearchRequest,
    name: &str,
    value: &str,
) -> Result<(), FhirError> {
    match name {
        "identifier" => request.filters.push(study_identifier_filter(name, value)?),
        "patient" | "subject" => {
            let keys = split_list(value)
                .map(|reference| parse_patient_reference(name, reference))
                .collect::<Result<Vec<_>, _>>()?;
            request
                .filters
                .push((MatchKey::PatientKey, Matcher::List(keys)));
        }
        "patient.identifier"
        | "subject.identifier"
        | "patient:Patient.identifier"
        | "subject:Patient.identifier" => {
            request
                .filters
                .extend(patient_identifier_filters(name, value)?);
        }
        "started" => {
            if value.contains(',') {
                return Err(FhirError::not_supported(
                    "`started` accepts one value per parameter; repeat the parameter to AND",
                ));
            }
            let (prefix, date_text) = split_prefix(value)
                .map_err(|reason| FhirError::not_supported(format!("`started`: {reason}")))?;
            if date_text.contains('T') {
                return Err(FhirError::not_supported(
                    "`started` is matched on the study date: give a date (YYYY, YYYY-MM or YYYY-MM-DD) without a time",
                ));
            }
            let date = PartialDate::parse(date_text).ok_or_else(|| {
                FhirError::invalid(format!("`started` value `{date_text}` is not a FHIR date"))
            })?;
            let (from, to) = study_date_bounds(prefix, &date);
            request
                .filters
                .push((MatchKey::StudyDate, Matcher::Range { from, to }));
        }
        "modality" => {
            let codes = split_list(value)
                .map(|token| token_code(name, token, &[DICOM_CODE_SYSTEM]).map(str::to_owned))
                .collect::<Result<Vec<_>, _>>()?;
            request
                .filters
                .push((MatchKey::ModalitiesInStudy, Matcher::List(codes)));
        }
        "series" => {
            let uids = split_list(value)
                .map(|uid| {
                    let uid = uid.strip_prefix("urn:oid:").unwrap_or(uid);
                    SeriesUid::parse(uid)
                        .map(|uid| uid.to_string())
                        .map_err(|_| {
                            FhirError::invalid(format!("`series` value `{uid}` is not a UID"))
                        })
                })
                .collect::<Result<Vec<_>, _>>()?;
            request
                .filters
                .push((MatchKey::SeriesInstanceUid, Matcher::List(uids)));
        }
        "dicom-class" => {
            let uids = split_list(value)
                .map(|token| {
                    let code = token_code(name, token, &[URI_SYSTEM])?;
                    let uid = code.strip_prefix("urn:oid:").unwrap_or(code);
                    if is_oid(uid) {
                        Ok(uid.to_owned())
                    } else {
                        Err(FhirError::invalid(format!(
                            "`dicom-class` value `{code}` is not a UID"
                        )))
                    }
                })
                .collect::<Result<Vec<_>, _>>()?;
            request
                .filters
                .push((MatchKey::SopClassUid, Matcher::List(uids)));
        }
        "status" => {
            let mut any_available = false;
            for token in split_list(value) {
                let code = token_code(name, token, &[STATUS_SYSTEM])?;
                if !STATUS_CODES.contains(&code) {
                    return Err(FhirError::invalid(format!(
                        "`status` value `{code}` is not an ImagingStudy status"
                    )));
                }
                any_available |= code == "available";
            }
            // Every stored study is `available`; any other status matches nothing.
            if !any_available {
                request
                    .filters
                    .push((MatchKey::StudyInstanceUid, Matcher::List(Vec::new())));
            }
        }
        "_sort" => {
            request.order = match value {
                "started" => QueryOrder::StudyDateAscending,
                "-started" => QueryOrder::StudyDateDescending,
                _ => {
                    return Err(FhirError::not_supported(format!(
                        "`_sort={value}` is not supported; use `started` or `-started`"
                    )));
                }
            };
        }
        "_include" => match value {
            "ImagingStudy:patient" | "ImagingStudy:subject" => request.include_patient = true,
            "ImagingStudy:endpoint" => request.include_endpoint = true,
            _ => {
                return Err(FhirError::not_supported(format!(
                    "`_include={value}` is not supported; use ImagingStudy:patient or ImagingStudy:endpoint"
                )));
            }
        },
        _ => return Err(unsupported_parameter(name, "ImagingStudy")),
    }
    Ok(())
}

fn unsupported_parameter(name: &str, resource_type: &str) -> FhirError {
    FhirError::not_supported(format!(
        "search parameter `{name}` is not supported on {resource_type} (see /fhir/metadata)"
    ))
}

/// Checks `_format`: only JSON is served.
pub(crate) fn check_format(value: &str) -> Result<(), FhirError> {
    match value {
        "json" | "application/json" | "application/fhir+json" => Ok(()),
        _ => Err(FhirError::not_acceptable(format!(
            "`_format={value}` is not supported; this server answers application/fhir+json only"
        ))),
    }
}

fn parse_number(name: &str, value: &str) -> Result<u64, FhirError> {
    value
        .parse()
        .map_err(|_| FhirError::invalid(format!("`{name}` must be a non-negative integer")))
}

fn split_list(value: &str) -> impl Iterator<Item = &str> {
    value.split(',').map(str::trim)
}

fn parse_study_uid(name: &str, uid: &str) -> Result<StudyUid, FhirError> {
    StudyUid::parse(uid).map_err(|_| {
        FhirError::invalid(format!(
            "`{name}` value `{uid}` is not a Study Instance UID"
        ))
    })
}

/// Parses a Patient id (the catalog's patient key).
pub(crate) fn parse_patient_key(name: &str, id: &str) -> Result<String, FhirError> {
    id.parse::<u64>().map(|key| key.to_string()).map_err(|_| {
        FhirError::invalid(format!(
            "`{name}` value `{id}` is not a Patient id of this server"
        ))
    })
}

/// Parses `Patient/123`, `123` or an absolute `.../Patient/123`.
fn parse_patient_reference(name: &str, reference: &str) -> Result<String, FhirError> {
    let id = match reference.rsplit_once('/') {
        None => reference,
        Some((prefix, id)) if prefix == "Patient" || prefix.ends_with("/Patient") => id,
        Some(_) => {
            return Err(FhirError::not_supported(format!(
                "`{name}` only references Patient resources"
            )));
        }
    };
    parse_patient_key(name, id)
}

/// Splits a token into `(system, code)`: `system|code`, `|code` (no system) or `code`.
fn split_token(token: &str) -> (Option<&str>, &str) {
    match token.split_once('|') {
        Some((system, code)) => (Some(system), code),
        None => (None, token),
    }
}

/// Returns the code of a token whose system, when given, is one of `systems`.
fn token_code<'a>(name: &str, token: &'a str, systems: &[&str]) -> Result<&'a str, FhirError> {
    let (system, code) = split_token(token);
    if let Some(system) = system
        && !systems.contains(&system)
    {
        return Err(FhirError::invalid(format!(
            "`{name}` system `{system}` is not supported; use {}",
            systems.join(" or ")
        )));
    }
    if code.is_empty() {
        return Err(FhirError::invalid(format!("`{name}` needs a code")));
    }
    Ok(code)
}

/// ImagingStudy `identifier`: `urn:dicom:uid|urn:oid:<study uid>` (or `urn:oid:<uid>` without
/// a system) matches the Study Instance UID; any other value without a system, or with an
/// empty one (`|A123`), matches the Accession Number. A comma list must be of one kind.
fn study_identifier_filter(name: &str, value: &str) -> Result<(MatchKey, Matcher), FhirError> {
    let mut study_uids = Vec::new();
    let mut accession_numbers = Vec::new();
    for token in split_list(value) {
        match split_token(token) {
            (Some(DICOM_UID_SYSTEM) | None, code) if code.starts_with("urn:oid:") => {
                let uid = parse_study_uid(name, &code["urn:oid:".len()..])?;
                study_uids.push(uid.to_string());
            }
            (Some(DICOM_UID_SYSTEM), code) => {
                return Err(FhirError::invalid(format!(
                    "`{name}` value `{code}` must be `urn:oid:<uid>` in system {DICOM_UID_SYSTEM}"
                )));
            }
            (Some("") | None, code) if !code.is_empty() => accession_numbers.push(code.to_owned()),
            (Some(system), _) => {
                return Err(FhirError::not_supported(format!(
                    "`{name}` system `{system}` is not supported; use {DICOM_UID_SYSTEM} for the Study Instance UID, or no system for the accession number"
                )));
            }
            (None, _) => return Err(FhirError::invalid(format!("`{name}` needs a value"))),
        }
    }
    match (study_uids.is_empty(), accession_numbers.is_empty()) {
        (false, true) => Ok((MatchKey::StudyInstanceUid, Matcher::List(study_uids))),
        (true, false) => Ok((MatchKey::AccessionNumber, Matcher::List(accession_numbers))),
        _ => Err(FhirError::not_supported(format!(
            "`{name}` cannot OR a Study Instance UID with an accession number; send two searches"
        ))),
    }
}

/// Patient identifier (`identifier` on Patient, `patient.identifier` on ImagingStudy):
/// `system|value` matches Patient ID and the Issuer of Patient ID the system maps to, `|value`
/// a Patient ID without issuer, `value` a Patient ID of any issuer. One value per parameter.
fn patient_identifier_filters(
    name: &str,
    value: &str,
) -> Result<Vec<(MatchKey, Matcher)>, FhirError> {
    if value.contains(',') {
        return Err(FhirError::not_supported(format!(
            "`{name}` accepts one identifier per parameter"
        )));
    }
    let (system, code) = split_token(value);
    if code.is_empty() {
        return Err(FhirError::invalid(format!(
            "`{name}` needs an identifier value"
        )));
    }
    let mut filters = vec![(MatchKey::PatientId, Matcher::Single(code.to_owned()))];
    if let Some(system) = system {
        let issuers = system_to_issuers(system).ok_or_else(|| {
            FhirError::invalid(format!(
                "`{name}` system `{system}` is not a URI (see docs/fhir.md for the issuer mapping)"
            ))
        })?;
        filters.push((MatchKey::IssuerOfPatientId, Matcher::List(issuers)));
    }
    Ok(filters)
}

fn last_updated_range(value: &str) -> Result<(Option<String>, Option<String>), FhirError> {
    if value.contains(',') {
        return Err(FhirError::not_supported(
            "`_lastUpdated` accepts one value per parameter; repeat the parameter to AND",
        ));
    }
    let (prefix, instant_text): (Prefix, &str) = split_prefix(value)
        .map_err(|reason| FhirError::not_supported(format!("`_lastUpdated`: {reason}")))?;
    let (start, end) = parse_instant_range(instant_text).ok_or_else(|| {
        FhirError::invalid(format!(
            "`_lastUpdated` value `{instant_text}` is not a FHIR date or instant"
        ))
    })?;
    let (from, to) = instant_bounds(prefix, start, end);
    Ok((from.map(|ms| ms.to_string()), to.map(|ms| ms.to_string())))
}

/// Returns a `name` value for a DICOM wildcard pattern. The catalog cannot match `*`, `?`
/// or the PN delimiters `^` and `=` literally, so values holding them are refused.
fn checked_name(name: &str, value: &str) -> Result<String, FhirError> {
    if value.contains(['*', '?', '^', '=', '\\']) {
        return Err(FhirError::invalid(format!(
            "`{name}` cannot contain `*`, `?`, `^`, `=` or `\\`"
        )));
    }
    Ok(value.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(raw: &str) -> Result<SearchRequest, FhirError> {
        parse_search(Some(raw), SearchTarget::ImagingStudy, 20, 100)
    }

    #[test]
    fn test_identifier_forms() {
        let request = parse("identifier=urn:dicom:uid%7Curn:oid:1.2.3").unwrap();
        assert_eq!(
            request.filters,
            [(
                MatchKey::StudyInstanceUid,
                Matcher::List(vec!["1.2.3".into()])
            )]
        );
        let request = parse("identifier=A1,A2").unwrap();
        assert_eq!(
            request.filters,
            [(
                MatchKey::AccessionNumber,
                Matcher::List(vec!["A1".into(), "A2".into()])
            )]
        );
        assert_eq!(
            parse("identifier=urn:oid:1.2,A1").unwrap_err().code,
            "not-supported"
        );
        assert_eq!(
            parse("identifier=urn:dicom:uid%7C1.2").unwrap_err().code,
            "invalid"
        );
        assert_eq!(
            parse("identifier=http://x%7CA1").unwrap_err().code,
            "not-supported"
        );
    }

    #[test]
    fn test_started_prefixes_and_errors() {
        let request = parse("started=gt2024-03-31&started=lt2025").unwrap();
        assert_eq!(
            request.filters,
            [
                (
                    MatchKey::StudyDate,
                    Matcher::Range {
                        from: Some("20240401".into()),
                        to: None
                    }
                ),
                (
                    MatchKey::StudyDate,
                    Matcher::Range {
                        from: None,
                        to: Some("2024".into())
                    }
                ),
            ]
        );
        assert_eq!(parse("started=ne2024").unwrap_err().code, "not-supported");
        assert_eq!(parse("started=2024-02-30").unwrap_err().code, "invalid");
        assert_eq!(
            parse("started=2024-02-03T10:00Z").unwrap_err().code,
            "not-supported"
        );
    }

    #[test]
    fn test_references_tokens_and_paging() {
        let request =
            parse("patient=Patient/7&modality=http://dicom.nema.org/resources/ontology/DCM%7CCT,MR&_count=500&_offset=20&_sort=-started")
                .unwrap();
        assert_eq!(
            request.filters[0],
            (MatchKey::PatientKey, Matcher::List(vec!["7".into()]))
        );
        assert_eq!(
            request.filters[1],
            (
                MatchKey::ModalitiesInStudy,
                Matcher::List(vec!["CT".into(), "MR".into()])
            )
        );
        assert_eq!((request.count, request.offset), (100, 20));
        assert_eq!(request.order, QueryOrder::StudyDateDescending);
        assert!(
            request
                .link_parameters
                .iter()
                .all(|(name, _)| name != "_offset")
        );
        assert_eq!(parse("subject=Group/1").unwrap_err().code, "not-supported");
        assert_eq!(parse("patient=abc").unwrap_err().code, "invalid");
        assert_eq!(
            parse("modality=http://loinc.org%7CCT").unwrap_err().code,
            "invalid"
        );
        assert_eq!(parse("_count=-1").unwrap_err().code, "invalid");
        assert_eq!(parse("foo=bar").unwrap_err().code, "not-supported");
        assert_eq!(parse("patient=").unwrap_err().code, "invalid");
        assert_eq!(
            parse("_format=xml").unwrap_err().status,
            http::StatusCode::NOT_ACCEPTABLE
        );
        assert_eq!(
            parse("_include=ImagingStudy:basedon").unwrap_err().code,
            "not-supported"
        );
    }

    #[test]
    fn test_patient_identifier_maps_system_to_issuer() {
        let request = parse("patient.identifier=urn:oid:1.2.3%7CMRN1").unwrap();
        assert_eq!(
            request.filters,
            [
                (MatchKey::PatientId, Matcher::Single("MRN1".into())),
                (
                    MatchKey::IssuerOfPatientId,
                    Matcher::List(vec!["1.2.3".into(), "urn:oid:1.2.3".into()])
                ),
            ]
        );
        let patient = parse_search(
            Some("name=doe&identifier=%7CX"),
            SearchTarget::Patient,
            20,
            100,
        )
        .unwrap();
        assert_eq!(
            patient.filters[0],
            (MatchKey::PatientName, Matcher::Wildcard("doe*".into()))
        );
        assert_eq!(
            patient.filters[2],
            (
                MatchKey::IssuerOfPatientId,
                Matcher::List(vec![String::new()])
            )
        );
        assert_eq!(
            parse_search(Some("birthdate=2000"), SearchTarget::Patient, 20, 100)
                .unwrap_err()
                .code,
            "not-supported"
        );
    }

    #[test]
    fn test_last_updated_becomes_millisecond_bounds() {
        let request = parse("_lastUpdated=ge1970-01-02").unwrap();
        assert_eq!(
            request.filters,
            [(
                MatchKey::LastUpdated,
                Matcher::Range {
                    from: Some("86400000".into()),
                    to: None
                }
            )]
        );
        assert_eq!(parse("_lastUpdated=yesterday").unwrap_err().code, "invalid");
        assert!(parse("status=available").unwrap().filters.is_empty());
        assert_eq!(
            parse("status=cancelled").unwrap().filters,
            [(MatchKey::StudyInstanceUid, Matcher::List(vec![]))]
        );
        assert_eq!(parse("status=done").unwrap_err().code, "invalid");
    }
}
