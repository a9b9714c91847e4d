//! What [`crate::init`] is told by the process; everything else comes from `OTEL_*`.

/// How log lines are written to standard error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human-readable lines (ANSI colours when standard error is a terminal).
    #[default]
    Text,
    /// One JSON object per line, with the `trace_id` and `span_id` of the current span.
    Json,
}

/// Settings of [`crate::init`]. The standard `OTEL_*` variables take precedence where the
/// OpenTelemetry specification says they do (`OTEL_SERVICE_NAME` over `service_name`).
#[derive(Debug, Clone)]
pub struct TelemetryConfig {
    /// `service.name` when neither `OTEL_SERVICE_NAME` nor `OTEL_RESOURCE_ATTRIBUTES` sets it.
    pub service_name: String,
    /// Extra resource attributes (e.g. `strata.roles=ingest,gateway`); `OTEL_RESOURCE_ATTRIBUTES`
    /// adds to them.
    pub resource_attributes: Vec<(String, String)>,
    pub log_format: LogFormat,
    /// The filter when neither `STRATA_LOG` nor `RUST_LOG` is set (`EnvFilter` syntax).
    pub default_log_filter: String,
    /// Exports traces and metrics to this OTLP/HTTP base URL (`http://collector:4318`)
    /// whatever the environment says; `None` reads `OTEL_EXPORTER_OTLP_ENDPOINT` and the
    /// per-signal variables. Tests use it because they never set process environment.
    pub otlp_endpoint: Option<String>,
    /// Writes log lines; `false` installs no log output (tests that only read spans).
    pub enable_logs: bool,
}

impl TelemetryConfig {
    /// Returns the defaults for a service: text logs at `info`, OTLP from the environment.
    pub fn new(service_name: impl Into<String>) -> Self {
        Self {
            service_name: service_name.into(),
            resource_attributes: Vec::new(),
            log_format: LogFormat::Text,
            default_log_filter: "info".to_owned(),
            otlp_endpoint: None,
            enable_logs: true,
        }
    }
}
