//! QIDO-RS handlers and result rendering (PS3.18 §10.6).

use axum::extract::{Path, RawQuery, State};
use axum::response::{IntoResponse, Response};
use http::HeaderMap;
use serde_json::{Map, Value as Json, json};
use strata_catalog::{QueryLevel, QueryMatch};
use strata_types::{SeriesUid, StudyUid};

use crate::qido_params::{QidoRequest, parse_query};
use crate::{DicomwebState, Problem, base_url};

/// `GET /studies`.
pub(crate) async fn search_studies(
    State(state): State<DicomwebState>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Response {
    search(state, QueryLevel::Study, None, None, raw, headers).await
}

/// `GET /series`.
pub(crate) async fn search_all_series(
    State(state): State<DicomwebState>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Response {
    search(state, QueryLevel::Series, None, None, raw, headers).await
}

/// `GET /instances`.
pub(crate) async fn search_all_instances(
    State(state): State<DicomwebState>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Response {
    search(state, QueryLevel::Instance, None, None, raw, headers).await
}

/// `GET /studies/{study}/series`.
pub(crate) async fn search_study_series(
    State(state): State<DicomwebState>,
    Path(study): Path<String>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Response {
    search(state, QueryLevel::Series, Some(study), None, raw, headers).await
}

/// `GET /studies/{study}/instances`.
pub(crate) async fn search_study_instances(
    State(state): State<DicomwebState>,
    Path(study): Path<String>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Response {
    search(state, QueryLevel::Instance, Some(study), None, raw, headers).await
}

/// `GET /studies/{study}/series/{series}/instances`.
pub(crate) async fn search_series_instances(
    State(state): State<DicomwebState>,
    Path((study, series)): Path<(String, String)>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Response {
    search(
        state,
        QueryLevel::Instance,
        Some(study),
        Some(series),
        raw,
        headers,
    )
    .await
}

/// The response header with the number of matches of a QIDO-RS query over all pages (the
/// common `X-Total-Count` convention; PS3.18 defines none).
pub(crate) const TOTAL_COUNT_HEADER: &str = "x-total-count";

async fn search(
    state: DicomwebState,
    level: QueryLevel,
    study: Option<String>,
    series: Option<String>,
    raw_query: Option<String>,
    headers: HeaderMap,
) -> Response {
    match run_search(&state, level, study, series, raw_query.as_deref(), &headers).await {
        Ok(response) => response,
        Err(problem) => problem.into_response(),
    }
}

async fn run_search(
    state: &DicomwebState,
    level: QueryLevel,
    study: Option<String>,
    series: Option<String>,
    raw_query: Option<&str>,
    headers: &HeaderMap,
) -> Result<Response, Problem> {
    let (mut query, request) = parse_query(raw_query, level, state.settings.max_query_results)?;
    if let Some(study) = &study {
        query.study_scope = Some(StudyUid::parse(study).map_err(|error| {
            Problem::bad_request(format!("study UID `{study}` is invalid: {error}"))
        })?);
    }
    if let Some(series) = &series {
        query.series_scope = Some(SeriesUid::parse(series).map_err(|error| {
            Problem::bad_request(format!("series UID `{series}` is invalid: {error}"))
        })?);
    }
    // Ask for one more than the limit to know whether the results were truncated.
    let requested_limit = query.limit;
    query.limit = requested_limit.map(|limit| limit + 1);
    let mut matches = state
        .catalog
        .query(&query)
        .await
        .map_err(|error| Problem::unavailable(&error))?;
    let truncated = requested_limit.is_some_and(|limit| matches.len() as u64 > limit);
    if let Some(limit) = requested_limit {
        matches.truncate(limit as usize);
    }
    // The total number of matches: known from the page itself unless it was truncated or
    // started past the last match; only then counted (one more query, for paging clients).
    let total = if !truncated && (query.offset == 0 || !matches.is_empty()) {
        query.offset + matches.len() as u64
    } else {
        state
            .catalog
            .count_matches(&query)
            .await
            .map_err(|error| Problem::unavailable(&error))?
    };
    let base = base_url(&state.settings, headers);
    let scoped = study.is_some();
    let results: Vec<Json> = matches
        .iter()
        .map(|found| render(found, level, scoped, &request, &base))
        .collect();
    let mut response = (
        [(http::header::CONTENT_TYPE, "application/dicom+json")],
        Json::Array(results).to_string(),
    )
        .into_response();
    response
        .headers_mut()
        .insert(TOTAL_COUNT_HEADER, http::HeaderValue::from(total));
    let mut warnings = request.warnings.clone();
    if truncated {
        warnings.push(format!(
            "299 strata \"The number of results exceeded the limit; use offset {} to page on\"",
            query.offset + requested_limit.unwrap_or_default()
        ));
    }
    for warning in warnings {
        if let Ok(value) = http::HeaderValue::from_str(&warning) {
            response.headers_mut().append(http::header::WARNING, value);
        }
    }
    Ok(response)
}

fn text(vr: &str, value: &str) -> Option<Json> {
    (!value.is_empty()).then(|| json!({"vr": vr, "Value": [value]}))
}

fn person_name(value: &str) -> Option<Json> {
    if value.is_empty() {
        return None;
    }
    let mut groups = value.splitn(3, '=');
    let mut name = Map::new();
    for key in ["Alphabetic", "Ideographic", "Phonetic"] {
        if let Some(group) = groups.next().filter(|group| !group.is_empty()) {
            name.insert(key.to_owned(), Json::String(group.to_owned()));
        }
    }
    Some(json!({"vr": "PN", "Value": [Json::Object(name)]}))
}

fn number(vr: &str, value: Option<i64>) -> Option<Json> {
    value.map(|number| json!({"vr": vr, "Value": [number]}))
}

fn put(map: &mut Map<String, Json>, tag: &str, vr: &str, value: Option<Json>) {
    // Return keys are always present, empty when the value is unknown (PS3.18 §10.6.3.3).
    map.insert(tag.to_owned(), value.unwrap_or_else(|| json!({ "vr": vr })));
}

/// Renders one match as a DICOM JSON object with the level's return keys.
fn render(
    found: &QueryMatch,
    level: QueryLevel,
    scoped: bool,
    request: &QidoRequest,
    base: &str,
) -> Json {
    let mut map = Map::new();
    if let Some(metadata) = found
        .metadata_json
        .as_deref()
        .and_then(|text| serde_json::from_str::<Map<String, Json>>(text).ok())
    {
        for (tag, attribute) in metadata {
            let bulk = attribute.get("BulkDataURI").is_some();
            if !bulk && (request.include_all || request.include_tags.contains(&tag)) {
                map.insert(tag, attribute);
            }
        }
    }
    let study = &found.study;
    let study_url = format!("{base}/studies/{}", study.study_instance_uid);
    let include_study = level == QueryLevel::Study || !scoped;
    if include_study {
        let patient = &found.patient;
        for (tag, vr, value) in [
            ("00080020", "DA", text("DA", &study.study_date)),
            ("00080030", "TM", text("TM", &study.study_time)),
            ("00080050", "SH", text("SH", &study.accession_number)),
            (
                "00080090",
                "PN",
                person_name(&study.referring_physician_name),
            ),
            (
                "00080201",
                "SH",
                text("SH", &study.timezone_offset_from_utc),
            ),
            ("00081030", "LO", text("LO", &study.study_description)),
            ("00100010", "PN", person_name(&patient.patient_name)),
            ("00100020", "LO", text("LO", &patient.patient_id)),
            ("00100021", "LO", text("LO", &patient.issuer_of_patient_id)),
            ("00100030", "DA", text("DA", &patient.patient_birth_date)),
            ("00100040", "CS", text("CS", &patient.patient_sex)),
            ("00200010", "SH", text("SH", &study.study_id)),
            ("00201206", "IS", number("IS", Some(found.num_study_series))),
            (
                "00201208",
                "IS",
                number("IS", Some(found.num_study_instances)),
            ),
            (
                "00080061",
                "CS",
                (!found.modalities_in_study.is_empty())
                    .then(|| json!({"vr": "CS", "Value": found.modalities_in_study})),
            ),
            (
                "00080062",
                "UI",
                (!found.sop_classes_in_study.is_empty())
                    .then(|| json!({"vr": "UI", "Value": found.sop_classes_in_study})),
            ),
        ] {
            put(&mut map, tag, vr, value);
        }
    }
    map.insert(
        "0020000D".to_owned(),
        json!({"vr": "UI", "Value": [study.study_instance_uid.as_str()]}),
    );
    map.insert(
        "00080056".to_owned(),
        json!({"vr": "CS", "Value": ["ONLINE"]}),
    );
    let mut retrieve_url = study_url;
    if let Some(series) = &found.series {
        retrieve_url = format!("{retrieve_url}/series/{}", series.series_instance_uid);
        for (tag, vr, value) in [
            ("00080060", "CS", text("CS", &series.modality)),
            ("0008103E", "LO", text("LO", &series.series_description)),
            (
                "0020000E",
                "UI",
                text("UI", series.series_instance_uid.as_str()),
            ),
            ("00200011", "IS", number("IS", series.series_number)),
            ("00201209", "IS", number("IS", found.num_series_instances)),
            (
                "00400244",
                "DA",
                text("DA", &series.performed_procedure_step_start_date),
            ),
            (
                "00400245",
                "TM",
                text("TM", &series.performed_procedure_step_start_time),
            ),
        ] {
            put(&mut map, tag, vr, value);
        }
        if level == QueryLevel::Series {
            let items: Vec<Json> = series
                .request_attributes
                .iter()
                .map(|item| {
                    let mut item_map = Map::new();
                    put(
                        &mut item_map,
                        "00400009",
                        "SH",
                        text("SH", &item.scheduled_procedure_step_id),
                    );
                    put(
                        &mut item_map,
                        "00401001",
                        "SH",
                        text("SH", &item.requested_procedure_id),
                    );
                    Json::Object(item_map)
                })
                .collect();
            map.insert(
                "00400275".to_owned(),
                if items.is_empty() {
                    json!({"vr": "SQ"})
                } else {
                    json!({"vr": "SQ", "Value": items})
                },
            );
        }
    }
    if let Some(instance) = &found.instance {
        retrieve_url = format!("{retrieve_url}/instances/{}", instance.sop_instance_uid);
        for (tag, vr, value) in [
            ("00080016", "UI", text("UI", &instance.sop_class_uid)),
            (
                "00080018",
                "UI",
                text("UI", instance.sop_instance_uid.as_str()),
            ),
            ("00200013", "IS", number("IS", instance.instance_number)),
            ("00280010", "US", number("US", instance.rows)),
            ("00280011", "US", number("US", instance.columns)),
            ("00280100", "US", number("US", instance.bits_allocated)),
            ("00280008", "IS", number("IS", instance.number_of_frames)),
        ] {
            put(&mut map, tag, vr, value);
        }
    }
    map.insert(
        "00081190".to_owned(),
        json!({"vr": "UR", "Value": [retrieve_url]}),
    );
    // serde_json's map is ordered by key, so attributes come out in tag order.
    Json::Object(map)
}
