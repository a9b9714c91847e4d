//! Errors answered as FHIR `OperationOutcome` resources (FHIR R4 §3.1.0.4 and §3.1.1.2).

use axum::response::{IntoResponse, Response};
use http::StatusCode;

use crate::FHIR_JSON;

/// An error answered as an `OperationOutcome`. The diagnostics name the offending parameter
/// and never carry patient data; 5xx diagnostics say "internal error" and a request id only.
#[derive(Debug, Clone)]
pub struct FhirError {
    pub status: StatusCode,
    /// The `OperationOutcome.issue.code` (`invalid`, `not-supported`, `not-found`, ...).
    pub code: &'static str,
    pub diagnostics: String,
}

impl FhirError {
    /// 400 `invalid`: a malformed value.
    pub fn invalid(diagnostics: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            code: "invalid",
            diagnostics: diagnostics.into(),
        }
    }

    /// 400 `not-supported`: a parameter, modifier or prefix this server does not implement.
    pub fn not_supported(diagnostics: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            code: "not-supported",
            diagnostics: diagnostics.into(),
        }
    }

    /// 404 `not-found`.
    pub fn not_found(diagnostics: impl Into<String>) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            code: "not-found",
            diagnostics: diagnostics.into(),
        }
    }

    /// 406 `not-supported`: a format other than JSON was asked for.
    pub fn not_acceptable(diagnostics: impl Into<String>) -> Self {
        Self {
            status: StatusCode::NOT_ACCEPTABLE,
            code: "not-supported",
            diagnostics: diagnostics.into(),
        }
    }

    /// 503 `transient` for a catalog that does not answer; the cause goes to the log only.
    pub fn unavailable(cause: &dyn std::fmt::Display) -> Self {
        let request_id = uuid::Uuid::new_v4();
        tracing::error!(%request_id, error = %cause, "fhir: catalog unavailable");
        Self {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code: "transient",
            diagnostics: format!(
                "the archive is temporarily unavailable (request id {request_id})"
            ),
        }
    }

    /// Returns the `OperationOutcome` resource.
    pub fn operation_outcome(&self) -> serde_json::Value {
        serde_json::json!({
            "resourceType": "OperationOutcome",
            "issue": [{
                "severity": "error",
                "code": self.code,
                "diagnostics": self.diagnostics,
            }],
        })
    }
}

impl IntoResponse for FhirError {
    fn into_response(self) -> Response {
        (
            self.status,
            [(http::header::CONTENT_TYPE, FHIR_JSON)],
            self.operation_outcome().to_string(),
        )
            .into_response()
    }
}
