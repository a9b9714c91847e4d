//! Telemetry of a Strata process: the `tracing` subscriber (text or JSON logs with trace ids),
//! OpenTelemetry traces over OTLP/HTTP, metrics over OTLP and a Prometheus `/metrics`
//! endpoint, and W3C trace context across HTTP hops (issue 7).
//!
//! The only crate that sets up exporters. Lower crates create spans with `tracing` and record
//! metrics through [`metrics`]; both are no-ops until [`init`] runs. Depends on no other
//! Strata crate. See `docs/observability.md`.

pub mod audit;
mod config;
mod http_layer;
mod init;
mod json_log;
pub mod metrics;
mod privacy;
mod propagation;

pub use config::{LogFormat, TelemetryConfig};
pub use http_layer::{HttpTelemetry, HttpTelemetryLayer};
pub use init::{TelemetryError, TelemetryGuard, init};
pub use metrics::metrics_router;
pub use privacy::is_patient_identifier_field;
pub use propagation::{extract_context, inject_current_context, set_parent_from_headers};
