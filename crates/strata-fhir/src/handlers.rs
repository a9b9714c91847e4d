//! The HTTP handlers: read, search, paging links, `_include`, ETags.

use std::collections::{BTreeMap, HashMap};

use axum::extract::{Path, RawQuery, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, StatusCode, header};
use serde_json::{Value, json};
use strata_catalog::{
    CatalogQuery, MatchKey, Matcher, PatientAttributes, QueryLevel, QueryMatch, QueryOrder,
};
use strata_types::StudyUid;

use crate::capability::capability_statement;
use crate::outcome::FhirError;
use crate::params::{SearchRequest, SearchTarget, check_format, parse_patient_key, parse_search};
use crate::resources::{self, ENDPOINT_ID, StudyContent, etag};
use crate::{FHIR_JSON, FhirSettings, FhirState};

/// Studies scanned at most by one Patient search (patients are found through their studies).
const MAX_PATIENT_SEARCH_STUDIES: u64 = 100_000;

type FhirResult = Result<Response, FhirError>;

fn respond(result: FhirResult) -> Response {
    result.unwrap_or_else(IntoResponse::into_response)
}

/// `GET /metadata`.
pub(crate) async fn metadata(
    State(state): State<FhirState>,
    RawQuery(raw_query): RawQuery,
    headers: HeaderMap,
) -> Response {
    respond((|| {
        check_request(raw_query.as_deref(), &headers, true)?;
        let base = fhir_base_url(&state.settings, &headers);
        Ok(json_response(
            StatusCode::OK,
            &capability_statement(&base),
            None,
        ))
    })())
}

/// `GET /ImagingStudy/{id}`.
pub(crate) async fn read_imaging_study(
    State(state): State<FhirState>,
    Path(id): Path<String>,
    RawQuery(raw_query): RawQuery,
    headers: HeaderMap,
) -> Response {
    respond(read_imaging_study_inner(&state, &id, raw_query.as_deref(), &headers).await)
}

async fn read_imaging_study_inner(
    state: &FhirState,
    id: &str,
    raw_query: Option<&str>,
    headers: &HeaderMap,
) -> FhirResult {
    check_request(raw_query, headers, true)?;
    let not_found = || FhirError::not_found(format!("ImagingStudy/{id} is not known"));
    let study_uid = StudyUid::parse(id).map_err(|_| not_found())?;
    let query = study_query(vec![(
        MatchKey::StudyInstanceUid,
        Matcher::Single(study_uid.to_string()),
    )]);
    let found = state
        .catalog
        .query(&query)
        .await
        .map_err(|error| FhirError::unavailable(&error))?
        .into_iter()
        .next()
        .ok_or_else(not_found)?;
    let version_tag = etag(found.last_updated_ms);
    if let Some(not_modified) = not_modified(headers, &version_tag) {
        return Ok(not_modified);
    }
    let contents = study_contents(state, std::slice::from_ref(&found)).await?;
    let resource = resources::imaging_study(&found, contents.get(id));
    Ok(json_response(StatusCode::OK, &resource, Some(version_tag)))
}

/// `GET /ImagingStudy?...`.
pub(crate) async fn search_imaging_studies(
    State(state): State<FhirState>,
    RawQuery(raw_query): RawQuery,
    headers: HeaderMap,
) -> Response {
    respond(search_imaging_studies_inner(&state, raw_query.as_deref(), &headers).await)
}

async fn search_imaging_studies_inner(
    state: &FhirState,
    raw_query: Option<&str>,
    headers: &HeaderMap,
) -> FhirResult {
    check_request(None, headers, false)?;
    let settings = &state.settings;
    let request = parse_search(
        raw_query,
        SearchTarget::ImagingStudy,
        settings.default_page_size,
        settings.max_page_size,
    )?;
    let mut query = study_query(request.filters.clone());
    let unavailable = |error: strata_catalog::CatalogError| FhirError::unavailable(&error);
    let total = state
        .catalog
        .count_matches(&query)
        .await
        .map_err(unavailable)?;
    query.limit = Some(request.count);
    query.offset = request.offset;
    let matches = if request.count == 0 {
        Vec::new()
    } else {
        state
            .catalog
            .query_in_order(&query, request.order)
            .await
            .map_err(unavailable)?
    };
    let contents = study_contents(state, &matches).await?;
    let base = fhir_base_url(settings, headers);
    let mut entries: Vec<Value> = matches
        .iter()
        .map(|found| {
            let resource = resources::imaging_study(
                found,
                contents.get(found.study.study_instance_uid.as_str()),
            );
            entry(&base, "ImagingStudy", resource, "match")
        })
        .collect();
    if request.include_patient && !matches.is_empty() {
        let mut patient_keys: Vec<i64> = matches.iter().map(|found| found.patient_key).collect();
        patient_keys.sort_unstable();
        patient_keys.dedup();
        for (patient_key, (patient, last_updated_ms)) in
            patients_by_key(state, &patient_keys).await?
        {
            let resource = resources::patient(patient_key, &patient, last_updated_ms);
            entries.push(entry(&base, "Patient", resource, "include"));
        }
    }
    if request.include_endpoint && !matches.is_empty() {
        let resource = resources::endpoint(&dicomweb_base_url(settings, headers));
        entries.push(entry(&base, "Endpoint", resource, "include"));
    }
    let bundle = search_bundle(&base, "ImagingStudy", &request, total, entries);
    Ok(json_response(StatusCode::OK, &bundle, None))
}

/// `GET /Patient/{id}`.
pub(crate) async fn read_patient(
    State(state): State<FhirState>,
    Path(id): Path<String>,
    RawQuery(raw_query): RawQuery,
    headers: HeaderMap,
) -> Response {
    respond(read_patient_inner(&state, &id, raw_query.as_deref(), &headers).await)
}

async fn read_patient_inner(
    state: &FhirState,
    id: &str,
    raw_query: Option<&str>,
    headers: &HeaderMap,
) -> FhirResult {
    check_request(raw_query, headers, true)?;
    let not_found = || FhirError::not_found(format!("Patient/{id} is not known"));
    let patient_key: i64 = parse_patient_key("id", id)
        .ok()
        .and_then(|key| key.parse().ok())
        .ok_or_else(not_found)?;
    let (patient, last_updated_ms) = patients_by_key(state, &[patient_key])
        .await?
        .remove(&patient_key)
        .ok_or_else(not_found)?;
    let version_tag = etag(last_updated_ms);
    if let Some(not_modified) = not_modified(headers, &version_tag) {
        return Ok(not_modified);
    }
    let resource = resources::patient(patient_key, &patient, last_updated_ms);
    Ok(json_response(StatusCode::OK, &resource, Some(version_tag)))
}

/// `GET /Patient?...`: patients are found through their studies (the catalog holds no
/// patient without a study), deduplicated in study order, then paged.
pub(crate) async fn search_patients(
    State(state): State<FhirState>,
    RawQuery(raw_query): RawQuery,
    headers: HeaderMap,
) -> Response {
    respond(search_patients_inner(&state, raw_query.as_deref(), &headers).await)
}

async fn search_patients_inner(
    state: &FhirState,
    raw_query: Option<&str>,
    headers: &HeaderMap,
) -> FhirResult {
    check_request(None, headers, false)?;
    let settings = &state.settings;
    let request = parse_search(
        raw_query,
        SearchTarget::Patient,
        settings.default_page_size,
        settings.max_page_size,
    )?;
    let mut query = study_query(request.filters.clone());
    query.limit = Some(MAX_PATIENT_SEARCH_STUDIES);
    let matches = state
        .catalog
        .query(&query)
        .await
        .map_err(|error| FhirError::unavailable(&error))?;
    let patients = group_patients(matches);
    let total = patients.len() as u64;
    let base = fhir_base_url(settings, headers);
    let entries: Vec<Value> = patients
        .into_iter()
        .skip(usize::try_from(request.offset).unwrap_or(usize::MAX))
        .take(usize::try_from(request.count).unwrap_or(usize::MAX))
        .map(|(patient_key, patient, last_updated_ms)| {
            entry(
                &base,
                "Patient",
                resources::patient(patient_key, &patient, last_updated_ms),
                "match",
            )
        })
        .collect();
    let bundle = search_bundle(&base, "Patient", &request, total, entries);
    Ok(json_response(StatusCode::OK, &bundle, None))
}

/// `GET /Endpoint/{id}`: the one Endpoint, the DICOMweb service.
pub(crate) async fn read_endpoint(
    State(state): State<FhirState>,
    Path(id): Path<String>,
    RawQuery(raw_query): RawQuery,
    headers: HeaderMap,
) -> Response {
    respond((|| {
        check_request(raw_query.as_deref(), &headers, true)?;
        if id != ENDPOINT_ID {
            return Err(FhirError::not_found(format!("Endpoint/{id} is not known")));
        }
        let resource = resources::endpoint(&dicomweb_base_url(&state.settings, &headers));
        Ok(json_response(StatusCode::OK, &resource, None))
    })())
}

/// `GET /Endpoint`: a Bundle with the one Endpoint; only `_format` is accepted.
pub(crate) async fn search_endpoints(
    State(state): State<FhirState>,
    RawQuery(raw_query): RawQuery,
    headers: HeaderMap,
) -> Response {
    respond((|| {
        check_request(raw_query.as_deref(), &headers, true)?;
        let base = fhir_base_url(&state.settings, &headers);
        let resource = resources::endpoint(&dicomweb_base_url(&state.settings, &headers));
        let request = SearchRequest {
            count: 1,
            ..SearchRequest::default()
        };
        let entries = vec![entry(&base, "Endpoint", resource, "match")];
        Ok(json_response(
            StatusCode::OK,
            &search_bundle(&base, "Endpoint", &request, 1, entries),
            None,
        ))
    })())
}

/// Checks the Accept header and, for reads, that the only parameter is `_format`.
fn check_request(
    raw_query: Option<&str>,
    headers: &HeaderMap,
    format_only: bool,
) -> Result<(), FhirError> {
    if let Some(accept) = headers
        .get(header::ACCEPT)
        .and_then(|value| value.to_str().ok())
    {
        let acceptable = accept.split(',').any(|range| {
            let media_type = range.split(';').next().unwrap_or_default().trim();
            matches!(
                media_type,
                "application/fhir+json" | "application/json" | "application/*" | "*/*" | ""
            )
        });
        if !acceptable {
            return Err(FhirError::not_acceptable(
                "this server answers application/fhir+json only",
            ));
        }
    }
    if format_only {
        for (name, value) in url::form_urlencoded::parse(raw_query.unwrap_or_default().as_bytes()) {
            if name == "_format" {
                check_format(&value)?;
            } else {
                return Err(FhirError::not_supported(format!(
                    "parameter `{name}` is not supported here"
                )));
            }
        }
    }
    Ok(())
}

fn study_query(filters: Vec<(MatchKey, Matcher)>) -> CatalogQuery {
    CatalogQuery {
        level: QueryLevel::Study,
        study_scope: None,
        series_scope: None,
        filters,
        limit: None,
        offset: 0,
        with_metadata: false,
    }
}

/// Reads the series and instances of the matched studies in one instance-level query.
async fn study_contents(
    state: &FhirState,
    matches: &[QueryMatch],
) -> Result<BTreeMap<String, StudyContent>, FhirError> {
    if matches.is_empty() {
        return Ok(BTreeMap::new());
    }
    let uids = matches
        .iter()
        .map(|found| found.study.study_instance_uid.to_string())
        .collect();
    let mut query = study_query(vec![(MatchKey::StudyInstanceUid, Matcher::List(uids))]);
    query.level = QueryLevel::Instance;
    let instances = state
        .catalog
        .query_in_order(&query, QueryOrder::Storage)
        .await
        .map_err(|error| FhirError::unavailable(&error))?;
    let mut contents = StudyContent::group(instances);
    // Laterality is not catalogued: read it from each series' first instance metadata.
    query.level = QueryLevel::Series;
    query.with_metadata = true;
    let series_matches = state
        .catalog
        .query(&query)
        .await
        .map_err(|error| FhirError::unavailable(&error))?;
    StudyContent::add_laterality(&mut contents, &series_matches);
    Ok(contents)
}

/// Returns `{patient key -> (attributes, newest study update)}` for the given keys.
async fn patients_by_key(
    state: &FhirState,
    patient_keys: &[i64],
) -> Result<BTreeMap<i64, (PatientAttributes, i64)>, FhirError> {
    let keys = patient_keys.iter().map(i64::to_string).collect();
    let query = study_query(vec![(MatchKey::PatientKey, Matcher::List(keys))]);
    let matches = state
        .catalog
        .query(&query)
        .await
        .map_err(|error| FhirError::unavailable(&error))?;
    Ok(group_patients(matches)
        .into_iter()
        .map(|(key, patient, last_updated_ms)| (key, (patient, last_updated_ms)))
        .collect())
}

/// Deduplicates study matches into patients, in order of first appearance, each with the
/// newest last-updated time of its studies.
fn group_patients(matches: Vec<QueryMatch>) -> Vec<(i64, PatientAttributes, i64)> {
    let mut positions: HashMap<i64, usize> = HashMap::new();
    let mut patients: Vec<(i64, PatientAttributes, i64)> = Vec::new();
    for found in matches {
        match positions.get(&found.patient_key) {
            Some(position) => {
                let newest = &mut patients[*position].2;
                *newest = (*newest).max(found.last_updated_ms);
            }
            None => {
                positions.insert(found.patient_key, patients.len());
                patients.push((found.patient_key, found.patient, found.last_updated_ms));
            }
        }
    }
    patients
}

fn entry(base: &str, resource_type: &str, resource: Value, mode: &str) -> Value {
    let id = resource["id"].as_str().unwrap_or_default().to_owned();
    json!({
        "fullUrl": format!("{base}/{resource_type}/{id}"),
        "resource": resource,
        "search": {"mode": mode},
    })
}

/// Builds a searchset Bundle with `self`, `next` and `previous` links. The links repeat the
/// request's parameters with `_offset` set, so paging follows the same stable order.
fn search_bundle(
    base: &str,
    resource_type: &str,
    request: &SearchRequest,
    total: u64,
    entries: Vec<Value>,
) -> Value {
    let page_url = |offset: u64| {
        let mut serializer = url::form_urlencoded::Serializer::new(String::new());
        for (name, value) in &request.link_parameters {
            if name != "_count" {
                serializer.append_pair(name, value);
            }
        }
        serializer.append_pair("_count", &request.count.to_string());
        serializer.append_pair("_offset", &offset.to_string());
        format!("{base}/{resource_type}?{}", serializer.finish())
    };
    let mut links = vec![json!({"relation": "self", "url": page_url(request.offset)})];
    if request.count > 0 && request.offset.saturating_add(request.count) < total {
        links.push(json!({"relation": "next", "url": page_url(request.offset + request.count)}));
    }
    if request.offset > 0 {
        let previous = request.offset.saturating_sub(request.count.max(1));
        links.push(json!({"relation": "previous", "url": page_url(previous)}));
    }
    let mut bundle = json!({
        "resourceType": "Bundle",
        "id": uuid::Uuid::new_v4().to_string(),
        "type": "searchset",
        "total": total,
        "link": links,
    });
    if !entries.is_empty() {
        bundle["entry"] = Value::Array(entries);
    }
    bundle
}

/// Returns 304 when `If-None-Match` names the current version (or `*`).
fn not_modified(headers: &HeaderMap, version_tag: &str) -> Option<Response> {
    let if_none_match = headers.get(header::IF_NONE_MATCH)?.to_str().ok()?;
    let weak_free = |tag: &str| tag.trim().trim_start_matches("W/").to_owned();
    let matches = if_none_match
        .split(',')
        .any(|tag| tag.trim() == "*" || weak_free(tag) == weak_free(version_tag));
    matches.then(|| {
        (
            StatusCode::NOT_MODIFIED,
            [(header::ETAG, version_tag.to_owned())],
        )
            .into_response()
    })
}

fn json_response(status: StatusCode, body: &Value, version_tag: Option<String>) -> Response {
    let mut response = (
        status,
        [(header::CONTENT_TYPE, FHIR_JSON)],
        body.to_string(),
    )
        .into_response();
    if let Some(version_tag) = version_tag
        && let Ok(value) = http::HeaderValue::from_str(&version_tag)
    {
        response.headers_mut().insert(header::ETAG, value);
    }
    response
}

fn request_origin(headers: &HeaderMap) -> String {
    let header = |name: &str| headers.get(name).and_then(|value| value.to_str().ok());
    strata_types::request_origin(header("host"), header("x-forwarded-proto"))
}

fn fhir_base_url(settings: &FhirSettings, headers: &HeaderMap) -> String {
    match &settings.public_base_url {
        Some(base) => base.trim_end_matches('/').to_owned(),
        None => format!("{}/fhir", request_origin(headers)),
    }
}

fn dicomweb_base_url(settings: &FhirSettings, headers: &HeaderMap) -> String {
    match &settings.dicomweb_base_url {
        Some(base) => base.trim_end_matches('/').to_owned(),
        None => format!("{}/dicomweb", request_origin(headers)),
    }
}

#[cfg(test)]
mod tests;
