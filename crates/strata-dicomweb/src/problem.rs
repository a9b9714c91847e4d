//! RFC 9457 problem details for every error response.

use axum::response::{IntoResponse, Response};
use http::StatusCode;

/// An error answered as `application/problem+json`. The detail names the offending parameter
/// or UID and never carries patient data; 5xx details say "internal error" only.
#[derive(Debug, Clone)]
pub struct Problem {
    pub status: StatusCode,
    pub detail: String,
    /// Sent as `Retry-After` (a 503 for an object being restored from archive storage).
    pub retry_after_seconds: Option<u64>,
}

impl Problem {
    /// 400 with a detail.
    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            detail: detail.into(),
            retry_after_seconds: None,
        }
    }

    /// 404 with a detail.
    pub fn not_found(detail: impl Into<String>) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            detail: detail.into(),
            retry_after_seconds: None,
        }
    }

    /// 406 with a detail.
    pub fn not_acceptable(detail: impl Into<String>) -> Self {
        Self {
            status: StatusCode::NOT_ACCEPTABLE,
            detail: detail.into(),
            retry_after_seconds: None,
        }
    }

    /// 415 with a detail.
    pub fn unsupported_media_type(detail: impl Into<String>) -> Self {
        Self {
            status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
            detail: detail.into(),
            retry_after_seconds: None,
        }
    }

    /// 503 for a dependency that is down; the cause is logged, not returned.
    pub fn unavailable(cause: &dyn std::fmt::Display) -> Self {
        let request_id = uuid::Uuid::new_v4();
        tracing::error!(%request_id, error = %cause, "dependency unavailable");
        Self {
            status: StatusCode::SERVICE_UNAVAILABLE,
            detail: format!("the archive is temporarily unavailable (request id {request_id})"),
            retry_after_seconds: None,
        }
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let body = serde_json::json!({
            "type": "about:blank",
            "title": self.status.canonical_reason().unwrap_or("Error"),
            "status": self.status.as_u16(),
            "detail": self.detail,
        });
        let mut response = (
            self.status,
            [(http::header::CONTENT_TYPE, "application/problem+json")],
            body.to_string(),
        )
            .into_response();
        if let Some(seconds) = self.retry_after_seconds {
            response
                .headers_mut()
                .insert(http::header::RETRY_AFTER, http::HeaderValue::from(seconds));
        }
        response
    }
}

/// Answers 503 with Retry-After and a problem body when some of `locations` are archived and
/// being restored (docs/tiering.md, "Restores"); `None` when they can all be read now. Other
/// storage errors are left to the streaming response, as before.
pub(crate) async fn unreadable(
    state: &crate::DicomwebState,
    locations: &[strata_catalog::InstanceLocation],
) -> Option<Response> {
    ensure_readable(state, locations)
        .await
        .err()
        .map(IntoResponse::into_response)
}

/// `Err` (503 with `retry_after_seconds`) when some of `locations` are in archive storage and
/// must be restored first (the restore is started by the check); `Ok` otherwise. Every
/// resource that reads stored objects (instances, frames, bulk data, rendered, WADO-URI) asks
/// before reading.
pub(crate) async fn ensure_readable(
    state: &crate::DicomwebState,
    locations: &[strata_catalog::InstanceLocation],
) -> Result<(), Problem> {
    let keys: Vec<strata_types::ObjectKey> = locations
        .iter()
        .map(|location| location.object.key.clone())
        .collect();
    let Err(error) = state.store.check_readable(&keys).await else {
        return Ok(());
    };
    let strata_storage::StorageErrorKind::RestoreRequired {
        retry_after_seconds,
    } = error.kind
    else {
        return Ok(());
    };
    Err(Problem {
        status: StatusCode::SERVICE_UNAVAILABLE,
        detail: format!(
            "the requested instances are in archive storage and are being restored; retry after \
             {retry_after_seconds} seconds"
        ),
        retry_after_seconds: Some(retry_after_seconds),
    })
}
