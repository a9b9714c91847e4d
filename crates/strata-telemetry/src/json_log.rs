//! JSON log lines with the trace and span ids of the current OpenTelemetry span.
//!
//! `tracing-subscriber`'s JSON formatter cannot see OpenTelemetry ids (they live in the
//! `tracing-opentelemetry` layer's span data), so this small layer writes the lines itself.

use std::io::Write;
use std::sync::OnceLock;

use opentelemetry::trace::TraceContextExt;
use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Dispatch, Event, Subscriber};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

use crate::privacy::is_patient_identifier_field;

/// Writes one JSON object per event to standard error:
/// `{"timestamp", "level", "target", "fields": {"message", ...}, "spans": [...],
/// "trace_id", "span_id"}`.
pub(crate) struct JsonLogLayer<W> {
    dispatch: OnceLock<tracing::dispatcher::WeakDispatch>,
    make_writer: W,
}

impl JsonLogLayer<fn() -> std::io::Stderr> {
    pub(crate) fn stderr() -> Self {
        Self::with_writer(std::io::stderr)
    }
}

impl<W> JsonLogLayer<W> {
    pub(crate) fn with_writer(make_writer: W) -> Self {
        Self {
            dispatch: OnceLock::new(),
            make_writer,
        }
    }
}

impl<S, W> tracing_subscriber::Layer<S> for JsonLogLayer<W>
where
    S: Subscriber + for<'lookup> LookupSpan<'lookup>,
    W: for<'writer> MakeWriter<'writer> + 'static,
{
    fn on_register_dispatch(&self, subscriber: &Dispatch) {
        let _ = self.dispatch.set(subscriber.downgrade());
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let mut line = Map::new();
        let mut timestamp = String::new();
        if SystemTime
            .format_time(&mut Writer::new(&mut timestamp))
            .is_ok()
        {
            line.insert("timestamp".to_owned(), Value::String(timestamp));
        }
        let metadata = event.metadata();
        line.insert(
            "level".to_owned(),
            Value::String(metadata.level().to_string()),
        );
        line.insert(
            "target".to_owned(),
            Value::String(metadata.target().to_owned()),
        );
        let mut visitor = JsonVisitor::default();
        event.record(&mut visitor);
        line.insert("fields".to_owned(), Value::Object(visitor.fields));

        let current_span_id = ctx.event_span(event).map(|span| span.id());
        if let Some(scope) = ctx.event_scope(event) {
            let names = scope
                .from_root()
                .map(|span| Value::String(span.name().to_owned()))
                .collect();
            line.insert("spans".to_owned(), Value::Array(names));
        }
        // The dispatch this layer was registered in; `Option<JsonLogLayer>` (how `init` adds
        // it) does not forward `on_register_dispatch`, so fall back to the current dispatch.
        let otel_context = current_span_id.and_then(|span_id| {
            match self.dispatch.get().and_then(|weak| weak.upgrade()) {
                Some(dispatch) => tracing_opentelemetry::get_otel_context(&span_id, &dispatch),
                None => tracing::dispatcher::get_default(|dispatch| {
                    tracing_opentelemetry::get_otel_context(&span_id, dispatch)
                }),
            }
        });
        if let Some(otel_context) = otel_context {
            let otel_span = otel_context.span();
            let span_context = otel_span.span_context();
            if span_context.is_valid() {
                line.insert(
                    "trace_id".to_owned(),
                    Value::String(span_context.trace_id().to_string()),
                );
                line.insert(
                    "span_id".to_owned(),
                    Value::String(span_context.span_id().to_string()),
                );
            }
        }
        let mut bytes = Value::Object(line).to_string().into_bytes();
        bytes.push(b'\n');
        let _ = self.make_writer.make_writer().write_all(&bytes);
    }
}

#[derive(Default)]
struct JsonVisitor {
    fields: Map<String, Value>,
}

impl JsonVisitor {
    fn insert(&mut self, field: &Field, value: Value) {
        let value = if is_patient_identifier_field(field.name()) {
            Value::String("[redacted]".to_owned())
        } else {
            value
        };
        self.fields.insert(field.name().to_owned(), value);
    }
}

impl Visit for JsonVisitor {
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.insert(field, Value::from(value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.insert(field, Value::from(value));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.insert(field, Value::from(value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.insert(field, Value::from(value));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.insert(field, Value::from(value));
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.insert(field, Value::String(value.to_string()));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.insert(field, Value::String(format!("{value:?}")));
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_sdk::trace::SdkTracerProvider;
    use tracing_subscriber::layer::SubscriberExt;

    use super::*;

    #[derive(Clone, Default)]
    struct SharedBuffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for SharedBuffer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn test_json_lines_carry_trace_ids_and_redact_patient_fields() {
        let tracer_provider = SdkTracerProvider::builder().build();
        let buffer = SharedBuffer::default();
        let writer_buffer = buffer.clone();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(tracer_provider.tracer("test")))
            .with(JsonLogLayer::with_writer(move || writer_buffer.clone()));
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("http_request");
            let _entered = span.enter();
            tracing::info!(
                patient_name = "PLANTED^NAME",
                sop_instance_uid = "1.2.3",
                num_bytes = 42u64,
                "instance stored"
            );
        });
        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        assert!(!text.contains("PLANTED"), "{text}");
        let line: Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(line["level"], "INFO");
        assert_eq!(line["fields"]["message"], "instance stored");
        assert_eq!(line["fields"]["patient_name"], "[redacted]");
        assert_eq!(line["fields"]["sop_instance_uid"], "1.2.3");
        assert_eq!(line["fields"]["num_bytes"], 42);
        assert_eq!(line["spans"], serde_json::json!(["http_request"]));
        let trace_id = line["trace_id"].as_str().unwrap();
        assert_eq!(trace_id.len(), 32, "{line}");
        assert_ne!(trace_id, "0".repeat(32));
        assert_eq!(line["span_id"].as_str().unwrap().len(), 16);
        assert!(line["timestamp"].as_str().unwrap().ends_with('Z'), "{line}");
    }
}
