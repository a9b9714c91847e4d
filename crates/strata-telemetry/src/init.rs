//! [`init`]: the one place a Strata process installs its subscriber, tracer and meter.

use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry::{KeyValue, global};
use opentelemetry_otlp::{MetricExporter, Protocol, SpanExporter, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{BatchSpanProcessor, SdkTracerProvider};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::{LogFormat, TelemetryConfig};
use crate::json_log::JsonLogLayer;
use crate::privacy::RedactingSpanProcessor;

/// The instrumentation scope of every Strata span and instrument.
const SCOPE_NAME: &str = "strata";

/// A failure to set up telemetry; the process should not start without its telemetry.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("failed to build the OTLP exporter: {0}")]
    Exporter(#[from] opentelemetry_otlp::ExporterBuildError),
    #[error("failed to build the Prometheus exporter: {0}")]
    Prometheus(#[from] opentelemetry_sdk::error::OTelSdkError),
    #[error("a global tracing subscriber is already installed")]
    AlreadyInitialized,
}

/// Keeps the tracer and meter providers alive; flushes and shuts them down when dropped, so
/// that spans of the last requests reach the collector. Hold it in `main` until exit.
#[must_use = "dropping the guard shuts telemetry down"]
pub struct TelemetryGuard {
    tracer_provider: Option<SdkTracerProvider>,
    meter_provider: SdkMeterProvider,
}

impl TelemetryGuard {
    /// Exports every finished span and the current metrics now (blocks the calling thread
    /// until the exporters answer or time out).
    pub fn flush(&self) {
        if let Some(tracer_provider) = &self.tracer_provider
            && let Err(error) = tracer_provider.force_flush()
        {
            tracing::warn!(%error, "failed to flush spans");
        }
        if let Err(error) = self.meter_provider.force_flush() {
            tracing::debug!(%error, "failed to flush metrics");
        }
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(tracer_provider) = self.tracer_provider.take() {
            let _ = tracer_provider.shutdown_with_timeout(Duration::from_secs(5));
        }
        let _ = self
            .meter_provider
            .shutdown_with_timeout(Duration::from_secs(5));
    }
}

/// The `OTEL_*` variables this crate reads itself (the SDK and the OTLP exporter read the
/// others: sampler, batch sizes, headers, timeouts, resource attributes).
#[derive(Debug, Default)]
struct OtelEnvironment {
    sdk_disabled: bool,
    any_endpoint: bool,
    traces_endpoint: bool,
    metrics_endpoint: bool,
    traces_exporter_none: bool,
    metrics_exporter_none: bool,
    service_name_set: bool,
    protocol: Option<String>,
}

impl OtelEnvironment {
    fn read() -> Self {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Self {
        let var = |name: &str| {
            lookup(name)
                .map(|value| value.trim().to_owned())
                .filter(|value| !value.is_empty())
        };
        let is_none =
            |name: &str| var(name).is_some_and(|value| value.eq_ignore_ascii_case("none"));
        Self {
            sdk_disabled: var("OTEL_SDK_DISABLED")
                .is_some_and(|value| value.eq_ignore_ascii_case("true")),
            any_endpoint: var("OTEL_EXPORTER_OTLP_ENDPOINT").is_some(),
            traces_endpoint: var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_some(),
            metrics_endpoint: var("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT").is_some(),
            traces_exporter_none: is_none("OTEL_TRACES_EXPORTER"),
            metrics_exporter_none: is_none("OTEL_METRICS_EXPORTER"),
            service_name_set: var("OTEL_SERVICE_NAME").is_some()
                || var("OTEL_RESOURCE_ATTRIBUTES")
                    .is_some_and(|attributes| attributes.contains("service.name=")),
            protocol: var("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
                .or_else(|| var("OTEL_EXPORTER_OTLP_PROTOCOL")),
        }
    }
}

impl OtelEnvironment {
    /// Whether spans are exported over OTLP (`configured_endpoint`: the process named one).
    fn export_traces(&self, configured_endpoint: bool) -> bool {
        !self.sdk_disabled
            && !self.traces_exporter_none
            && (configured_endpoint || self.any_endpoint || self.traces_endpoint)
    }

    /// Whether metrics are pushed over OTLP.
    fn export_metrics(&self, configured_endpoint: bool) -> bool {
        !self.sdk_disabled
            && !self.metrics_exporter_none
            && (configured_endpoint || self.any_endpoint || self.metrics_endpoint)
    }
}

/// Installs the global `tracing` subscriber, the W3C trace-context propagator, the tracer
/// provider (exporting over OTLP/HTTP when an endpoint is configured) and the meter provider
/// (Prometheus always, OTLP when an endpoint is configured). Call once, first thing in
/// `main`, inside the Tokio runtime or not.
///
/// Logs go to standard error, filtered by `STRATA_LOG`, else `RUST_LOG`, else
/// `config.default_log_filter`.
pub fn init(config: TelemetryConfig) -> Result<TelemetryGuard, TelemetryError> {
    let environment = OtelEnvironment::read();
    global::set_text_map_propagator(TraceContextPropagator::new());
    let resource = build_resource(&config, &environment);
    let endpoint_base = config
        .otlp_endpoint
        .as_deref()
        .map(|endpoint| endpoint.trim_end_matches('/').to_owned());
    if config.otlp_endpoint.is_none()
        && let Some(protocol) = &environment.protocol
        && protocol != "http/protobuf"
    {
        eprintln!(
            "strata: OTEL_EXPORTER_OTLP_PROTOCOL={protocol} is not supported, exporting with http/protobuf"
        );
    }

    let export_traces = environment.export_traces(endpoint_base.is_some());
    let export_metrics = environment.export_metrics(endpoint_base.is_some());

    // Spans get real ids even without an exporter, so that log lines carry trace ids and
    // incoming `traceparent` headers are continued; OTEL_SDK_DISABLED turns all of it off.
    let tracer_provider = if environment.sdk_disabled {
        None
    } else {
        let mut builder = SdkTracerProvider::builder().with_resource(resource.clone());
        if export_traces {
            let mut exporter = SpanExporter::builder()
                .with_http()
                .with_protocol(Protocol::HttpBinary);
            if let Some(base) = &endpoint_base {
                exporter = exporter.with_endpoint(format!("{base}/v1/traces"));
            }
            let batch = BatchSpanProcessor::builder(exporter.build()?).build();
            builder = builder.with_span_processor(RedactingSpanProcessor::new(batch));
        }
        Some(builder.build())
    };
    if let Some(tracer_provider) = &tracer_provider {
        global::set_tracer_provider(tracer_provider.clone());
    }

    let registry = prometheus::Registry::new();
    let prometheus_reader = opentelemetry_prometheus::exporter()
        .with_registry(registry.clone())
        .without_units()
        .without_counter_suffixes()
        .without_target_info()
        .scope_info_enabled(false)
        .build()?;
    let mut meter_builder = SdkMeterProvider::builder()
        .with_resource(resource)
        .with_reader(prometheus_reader);
    if export_metrics {
        let mut exporter = MetricExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary);
        if let Some(base) = &endpoint_base {
            exporter = exporter.with_endpoint(format!("{base}/v1/metrics"));
        }
        meter_builder =
            meter_builder.with_reader(PeriodicReader::builder(exporter.build()?).build());
    }
    let meter_provider = meter_builder.build();
    global::set_meter_provider(meter_provider.clone());
    crate::metrics::install(&global::meter(SCOPE_NAME), registry);

    let filter = EnvFilter::try_from_env("STRATA_LOG")
        .or_else(|_| EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| EnvFilter::new(&config.default_log_filter));
    let otel_layer = tracer_provider.as_ref().map(|tracer_provider| {
        tracing_opentelemetry::layer()
            .with_tracer(tracer_provider.tracer(SCOPE_NAME))
            .with_threads(false)
    });
    let text_layer = (config.enable_logs && config.log_format == LogFormat::Text).then(|| {
        tracing_subscriber::fmt::layer()
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_writer(std::io::stderr)
    });
    let json_layer =
        (config.enable_logs && config.log_format == LogFormat::Json).then(JsonLogLayer::stderr);
    let subscriber = tracing_subscriber::registry()
        .with(filter)
        .with(otel_layer)
        .with(text_layer)
        .with(json_layer);
    // `try_init` also forwards `log` records of dependencies to `tracing`.
    subscriber
        .try_init()
        .map_err(|_| TelemetryError::AlreadyInitialized)?;

    Ok(TelemetryGuard {
        tracer_provider,
        meter_provider,
    })
}

fn build_resource(config: &TelemetryConfig, environment: &OtelEnvironment) -> Resource {
    // `Resource::builder` applies OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES.
    let mut builder = Resource::builder().with_attributes(
        config
            .resource_attributes
            .iter()
            .map(|(key, value)| KeyValue::new(key.clone(), value.clone())),
    );
    if !environment.service_name_set {
        builder = builder.with_service_name(config.service_name.clone());
    }
    builder.build()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn environment(pairs: &[(&str, &str)]) -> OtelEnvironment {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
            .collect();
        OtelEnvironment::from_lookup(|name| {
            pairs
                .iter()
                .find(|(key, _)| key == name)
                .map(|(_, value)| value.clone())
        })
    }

    #[test]
    fn test_nothing_is_exported_without_an_endpoint() {
        let empty = environment(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "  ")]);
        assert!(!empty.export_traces(false));
        assert!(!empty.export_metrics(false));
        assert!(empty.export_traces(true));
    }

    #[test]
    fn test_the_base_endpoint_exports_both_signals() {
        let both = environment(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318")]);
        assert!(both.export_traces(false));
        assert!(both.export_metrics(false));
    }

    #[test]
    fn test_per_signal_endpoints_and_exporter_none() {
        let traces_only =
            environment(&[("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://c/v1/traces")]);
        assert!(traces_only.export_traces(false));
        assert!(!traces_only.export_metrics(false));
        let no_traces = environment(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"),
            ("OTEL_TRACES_EXPORTER", "none"),
        ]);
        assert!(!no_traces.export_traces(false));
        assert!(no_traces.export_metrics(false));
    }

    #[test]
    fn test_sdk_disabled_wins() {
        let disabled = environment(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"),
            ("OTEL_SDK_DISABLED", "TRUE"),
        ]);
        assert!(disabled.sdk_disabled);
        assert!(!disabled.export_traces(true));
        assert!(!disabled.export_metrics(true));
        assert!(!environment(&[("OTEL_SDK_DISABLED", "false")]).sdk_disabled);
    }

    #[test]
    fn test_service_name_from_environment_takes_precedence() {
        assert!(environment(&[("OTEL_SERVICE_NAME", "strata-ingest")]).service_name_set);
        assert!(
            environment(&[(
                "OTEL_RESOURCE_ATTRIBUTES",
                "service.name=strata-gw,team=imaging"
            )])
            .service_name_set
        );
        assert!(!environment(&[("OTEL_RESOURCE_ATTRIBUTES", "team=imaging")]).service_name_set);
    }
}
