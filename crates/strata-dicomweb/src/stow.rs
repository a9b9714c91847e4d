//! STOW-RS: `POST /studies` and `POST /studies/{study}` (PS3.18 §10.5).

use std::sync::Arc;

use axum::extract::{ConnectInfo, Path, Request, State};
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use serde_json::{Value as Json, json};
use strata_ingest::{FailureReason, IngestError, IngestOutcome, IngestSource};
use strata_types::StudyUid;
use tokio::sync::Semaphore;
use tracing::{Instrument, info, warn};

use crate::media::MediaType;
use crate::stow_json;
use crate::{DicomwebState, Problem, base_url};

/// `POST /studies`.
pub(crate) async fn store_instances(
    State(state): State<DicomwebState>,
    request: Request,
) -> Response {
    store(state, None, request).await
}

/// `POST /studies/{study}`: every instance must belong to the study of the URL.
pub(crate) async fn store_instances_in_study(
    State(state): State<DicomwebState>,
    Path(study): Path<String>,
    request: Request,
) -> Response {
    let study_uid = match StudyUid::parse(&study) {
        Ok(uid) => uid,
        Err(error) => {
            return Problem::bad_request(format!("study UID `{study}` is invalid: {error}"))
                .into_response();
        }
    };
    store(state, Some(study_uid), request).await
}

async fn store(state: DicomwebState, study_uid: Option<StudyUid>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let headers = parts.headers;
    let remote_addr = parts
        .extensions
        .get::<ConnectInfo<std::net::SocketAddr>>()
        .map(|info| info.0);
    let content_type = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(MediaType::parse);
    let Some(content_type) = content_type else {
        return Problem::unsupported_media_type(
            "Content-Type must be multipart/related; type=\"application/dicom\"",
        )
        .into_response();
    };
    if content_type.essence != "multipart/related" {
        return Problem::unsupported_media_type(format!(
            "Content-Type `{}` is not supported: send multipart/related; type=\"application/dicom\"",
            content_type.essence
        ))
        .into_response();
    }
    let mut metadata_and_bulk_data = false;
    if let Some(root_type) = content_type.param("type") {
        if root_type.eq_ignore_ascii_case("application/dicom+json") {
            metadata_and_bulk_data = true;
        } else if !root_type.eq_ignore_ascii_case("application/dicom") {
            return Problem::unsupported_media_type(format!(
                "multipart/related type `{root_type}` is not supported: send application/dicom \
                 or application/dicom+json"
            ))
            .into_response();
        }
    }
    let Some(boundary) = content_type.param("boundary").map(str::to_owned) else {
        return Problem::bad_request(
            "the multipart/related Content-Type has no boundary parameter",
        )
        .into_response();
    };

    let source = Arc::new(IngestSource {
        protocol: "stow-rs".to_owned(),
        calling_ae_title: None,
        remote_addr: remote_addr.map(|addr| addr.to_string()),
    });
    let mut multipart = multer::Multipart::new(body.into_data_stream(), boundary);
    if metadata_and_bulk_data {
        // PS3.18 §10.5.1.2.2: metadata with bulk data parts (see `stow_json`).
        return match stow_json::receive(&state, multipart, source, study_uid.clone()).await {
            Ok((outcomes, body_error)) => {
                respond(&state, &headers, study_uid.as_ref(), outcomes, body_error)
            }
            Err(problem) => problem.into_response(),
        };
    }
    let study_uid = Arc::new(study_uid);
    let permits = Arc::new(Semaphore::new(state.settings.ingest_concurrency.max(1)));
    let mut tasks = Vec::new();
    let mut body_error: Option<String> = None;
    loop {
        let field = match multipart.next_field().await {
            Ok(Some(field)) => field,
            Ok(None) => break,
            Err(error) => {
                body_error = Some(format!(
                    "the multipart body is malformed or truncated: {error}"
                ));
                break;
            }
        };
        let part_type = field
            .content_type()
            .map(|mime| mime.essence_str().to_ascii_lowercase());
        if let Some(part_type) = part_type.filter(|part_type| part_type != "application/dicom") {
            tasks.push(tokio::spawn(futures::future::ready(
                IngestOutcome::Refused {
                    sop_class_uid: None,
                    sop_instance_uid: None,
                    reason: FailureReason::CannotUnderstand,
                    message: format!(
                        "a part has Content-Type `{part_type}`; only application/dicom is accepted"
                    ),
                },
            )));
            continue;
        }
        // Spooling reads the part from the request as it arrives (never buffering it whole);
        // validation, storage and the catalog commit then run concurrently with reading the
        // next part, bounded by the semaphore.
        let spooled = match state.pipeline.spool(field).await {
            Ok(spooled) => spooled,
            Err(IngestError::TooLarge { limit }) => {
                body_error = Some(format!("a part is larger than the limit of {limit} bytes"));
                tasks.push(tokio::spawn(futures::future::ready(
                    IngestOutcome::Refused {
                        sop_class_uid: None,
                        sop_instance_uid: None,
                        reason: FailureReason::OutOfResources,
                        message: format!("the part is larger than the limit of {limit} bytes"),
                    },
                )));
                break;
            }
            Err(IngestError::Body(message)) => {
                body_error = Some(format!(
                    "the multipart body is malformed or truncated: {message}"
                ));
                break;
            }
            Err(error) => {
                warn!(%error, "spooling failed");
                tasks.push(tokio::spawn(futures::future::ready(
                    IngestOutcome::Refused {
                        sop_class_uid: None,
                        sop_instance_uid: None,
                        reason: FailureReason::OutOfResources,
                        message: "the archive could not spool the part".to_owned(),
                    },
                )));
                continue;
            }
        };
        let permit = permits
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        let pipeline = state.pipeline.clone();
        let source = source.clone();
        let study_uid = study_uid.clone();
        // The task continues the request's span, so that its trace reaches storage and catalog.
        tasks.push(tokio::spawn(
            async move {
                let outcome = pipeline
                    .ingest(spooled, &source, study_uid.as_ref().as_ref())
                    .await;
                drop(permit);
                outcome
            }
            .in_current_span(),
        ));
    }

    let mut outcomes = Vec::with_capacity(tasks.len());
    for task in tasks {
        outcomes.push(task.await.unwrap_or_else(|join_error| {
            warn!(error = %join_error, "ingest task failed");
            IngestOutcome::Refused {
                sop_class_uid: None,
                sop_instance_uid: None,
                reason: FailureReason::ProcessingFailure,
                message: "internal error".to_owned(),
            }
        }));
    }
    respond(
        &state,
        &headers,
        study_uid.as_ref().as_ref(),
        outcomes,
        body_error,
    )
}

/// Answers a STOW-RS request with the outcomes of its parts.
fn respond(
    state: &DicomwebState,
    headers: &http::HeaderMap,
    study_uid: Option<&StudyUid>,
    mut outcomes: Vec<IngestOutcome>,
    body_error: Option<String>,
) -> Response {
    if outcomes.is_empty() {
        let detail =
            body_error.unwrap_or_else(|| "the request holds no application/dicom part".to_owned());
        return Problem::bad_request(detail).into_response();
    }
    if let Some(message) = &body_error {
        // Parts read before the body broke are reported; the broken remainder is one failure.
        outcomes.push(IngestOutcome::Refused {
            sop_class_uid: None,
            sop_instance_uid: None,
            reason: FailureReason::CannotUnderstand,
            message: message.clone(),
        });
    }
    let base = base_url(&state.settings, headers);
    let (status, response) = store_response(&outcomes, &base, study_uid);
    info!(
        num_parts = outcomes.len(),
        status = status.as_u16(),
        "stow-rs request answered"
    );
    (
        status,
        [(http::header::CONTENT_TYPE, "application/dicom+json")],
        response.to_string(),
    )
        .into_response()
}

/// Builds the Store Instances Response Module (PS3.18 §10.5.3) and its HTTP status: 200 when
/// everything was stored without warnings, 202 when some failed or carry warnings, 409 when
/// none was stored.
fn store_response(
    outcomes: &[IngestOutcome],
    base: &str,
    study_uid: Option<&StudyUid>,
) -> (StatusCode, Json) {
    let mut referenced = Vec::new();
    let mut failed = Vec::new();
    let mut any_warning = false;
    let mut studies = std::collections::BTreeSet::new();
    for outcome in outcomes {
        match outcome {
            IngestOutcome::Stored(instance) => {
                studies.insert(instance.study_instance_uid.clone());
                let mut item = serde_json::Map::new();
                item.insert(
                    "00081150".into(),
                    json!({"vr": "UI", "Value": [instance.sop_class_uid]}),
                );
                item.insert(
                    "00081155".into(),
                    json!({"vr": "UI", "Value": [instance.sop_instance_uid]}),
                );
                item.insert(
                    "00081190".into(),
                    json!({"vr": "UR", "Value": [format!(
                        "{base}/studies/{}/series/{}/instances/{}",
                        instance.study_instance_uid, instance.series_instance_uid, instance.sop_instance_uid
                    )]}),
                );
                if let Some((reason, message)) = &instance.warning {
                    any_warning = true;
                    item.insert(
                        "00081196".into(),
                        json!({"vr": "US", "Value": [reason.code()]}),
                    );
                    item.insert(
                        "00000902".into(),
                        json!({"vr": "LO", "Value": [truncate(message)]}),
                    );
                }
                referenced.push(Json::Object(item));
            }
            IngestOutcome::Refused {
                sop_class_uid,
                sop_instance_uid,
                reason,
                message,
            } => {
                let mut item = serde_json::Map::new();
                if let Some(uid) = sop_class_uid {
                    item.insert("00081150".into(), json!({"vr": "UI", "Value": [uid]}));
                }
                if let Some(uid) = sop_instance_uid {
                    item.insert("00081155".into(), json!({"vr": "UI", "Value": [uid]}));
                }
                item.insert(
                    "00081197".into(),
                    json!({"vr": "US", "Value": [reason.code()]}),
                );
                item.insert(
                    "00000902".into(),
                    json!({"vr": "LO", "Value": [truncate(message)]}),
                );
                failed.push(Json::Object(item));
            }
        }
    }
    let mut response = serde_json::Map::new();
    let retrieve_study = study_uid.map(|uid| uid.to_string()).or_else(|| {
        (studies.len() == 1)
            .then(|| studies.iter().next().cloned())
            .flatten()
    });
    if let Some(study) = retrieve_study.filter(|_| !referenced.is_empty()) {
        response.insert(
            "00081190".into(),
            json!({"vr": "UR", "Value": [format!("{base}/studies/{study}")]}),
        );
    }
    if !failed.is_empty() {
        response.insert("00081198".into(), json!({"vr": "SQ", "Value": failed}));
    }
    if !referenced.is_empty() {
        response.insert("00081199".into(), json!({"vr": "SQ", "Value": referenced}));
    }
    let status = if referenced.is_empty() {
        StatusCode::CONFLICT
    } else if !failed.is_empty() || any_warning {
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    };
    (status, Json::Object(response))
}

/// The reason text goes in Error Comment (0000,0902). Its VR is LO (64 characters), but the
/// whole reason is more useful to an operator than a cut one, so it is kept whole; clients
/// that validate lengths warn rather than fail.
fn truncate(message: &str) -> String {
    message.to_owned()
}
