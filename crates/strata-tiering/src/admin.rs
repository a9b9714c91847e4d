//! The admin HTTP API of the tiering service (mounted at the root of a node's router):
//!
//! - `GET /api/tiering/status`: objects and bytes per tier, pending moves, fixity failures;
//! - `POST /api/tiering/apply?dry_run=true|false` (`GET` is always a dry run): the moves the
//!   rules want, and runs them unless a dry run;
//! - `POST /api/tiering/fixity?deep=true&limit=N`: a fixity pass now; `GET`: the latest
//!   failures;
//! - `POST /api/studies/{study}/restore?promote_days=N` (also under `/api/tiering/studies`):
//!   restores a study's archived objects ahead of need; 202 while restoring, 200 when readable;
//! - `PUT /api/tiering/studies/{study}/retention` with `{"legal_hold": bool,
//!   "retain_until_ms": int|null}`.
//!
//! Errors are `application/problem+json`; 5xx bodies say "internal error", the cause is logged.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::Deserialize;
use strata_types::StudyUid;

use crate::error::TieringError;
use crate::service::TieringService;

/// Returns the admin router over `service`.
pub fn router(service: Arc<TieringService>) -> Router {
    Router::new()
        .route("/api/tiering/status", get(status))
        .route("/api/tiering/apply", get(apply_dry_run).post(apply))
        .route("/api/tiering/fixity", get(fixity_failures).post(fixity))
        .route("/api/tiering/studies/{study}/restore", post(restore))
        .route("/api/tiering/studies/{study}/retention", put(retention))
        .route("/api/studies/{study}/restore", post(restore))
        .with_state(service)
}

fn problem(status: StatusCode, detail: &str) -> Response {
    (
        status,
        [(axum::http::header::CONTENT_TYPE, "application/problem+json")],
        serde_json::json!({ "status": status.as_u16(), "title": status.canonical_reason(), "detail": detail })
            .to_string(),
    )
        .into_response()
}

fn error_response(error: TieringError) -> Response {
    match &error {
        TieringError::NotFound(detail) => problem(StatusCode::NOT_FOUND, detail),
        TieringError::DeletionRefused(detail) => problem(StatusCode::CONFLICT, detail),
        _ => {
            tracing::error!(%error, "tiering admin request failed");
            problem(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
        }
    }
}

fn parse_study(study: &str) -> Option<StudyUid> {
    study.parse().ok()
}

fn invalid_study() -> Response {
    problem(StatusCode::BAD_REQUEST, "invalid Study Instance UID")
}

async fn status(State(service): State<Arc<TieringService>>) -> Response {
    match service.status().await {
        Ok(report) => Json(report).into_response(),
        Err(error) => error_response(error),
    }
}

#[derive(Debug, Deserialize)]
struct ApplyParams {
    #[serde(default)]
    dry_run: Option<bool>,
}

async fn apply_dry_run(State(service): State<Arc<TieringService>>) -> Response {
    match service.apply(true).await {
        Ok(report) => Json(report).into_response(),
        Err(error) => error_response(error),
    }
}

async fn apply(
    State(service): State<Arc<TieringService>>,
    Query(params): Query<ApplyParams>,
) -> Response {
    match service.apply(params.dry_run.unwrap_or(false)).await {
        Ok(report) => Json(report).into_response(),
        Err(error) => error_response(error),
    }
}

#[derive(Debug, Deserialize)]
struct FixityParams {
    #[serde(default)]
    deep: Option<bool>,
    #[serde(default)]
    limit: Option<u64>,
}

async fn fixity(
    State(service): State<Arc<TieringService>>,
    Query(params): Query<FixityParams>,
) -> Response {
    match service
        .fixity_check(params.deep.unwrap_or(true), params.limit)
        .await
    {
        Ok(report) => Json(report).into_response(),
        Err(error) => error_response(error),
    }
}

async fn fixity_failures(State(service): State<Arc<TieringService>>) -> Response {
    match service.status().await {
        Ok(report) => Json(report.fixity_failures).into_response(),
        Err(error) => error_response(error),
    }
}

#[derive(Debug, Deserialize)]
struct RestoreParams {
    #[serde(default)]
    promote_days: Option<u32>,
}

async fn restore(
    State(service): State<Arc<TieringService>>,
    Path(study): Path<String>,
    Query(params): Query<RestoreParams>,
) -> Response {
    let Some(study) = parse_study(&study) else {
        return invalid_study();
    };
    match service.restore_study(&study, params.promote_days).await {
        Ok(report) => {
            let status = if report.num_restoring > 0 {
                StatusCode::ACCEPTED
            } else {
                StatusCode::OK
            };
            let mut response = (status, Json(&report)).into_response();
            if let Some(seconds) = report.retry_after_seconds
                && let Ok(value) = seconds.to_string().parse()
            {
                response
                    .headers_mut()
                    .insert(axum::http::header::RETRY_AFTER, value);
            }
            response
        }
        Err(error) => error_response(error),
    }
}

#[derive(Debug, Deserialize)]
struct RetentionBody {
    legal_hold: bool,
    #[serde(default)]
    retain_until_ms: Option<i64>,
}

async fn retention(
    State(service): State<Arc<TieringService>>,
    Path(study): Path<String>,
    body: Result<Json<RetentionBody>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Some(study) = parse_study(&study) else {
        return invalid_study();
    };
    let Ok(Json(body)) = body else {
        return problem(
            StatusCode::BAD_REQUEST,
            "expected {\"legal_hold\": bool, \"retain_until_ms\": int|null}",
        );
    };
    match service
        .set_retention(&study, body.legal_hold, body.retain_until_ms)
        .await
    {
        Ok(retention) => Json(serde_json::json!({
            "legal_hold": retention.legal_hold,
            "retain_until_ms": retention.retain_until_ms,
        }))
        .into_response(),
        Err(error) => error_response(error),
    }
}
