//! W3C trace context (`traceparent`, `tracestate`) across HTTP hops between roles.

use http::HeaderMap;
use http::header::{HeaderName, HeaderValue};
use opentelemetry::global;
use opentelemetry::propagation::{Extractor, Injector};
use tracing_opentelemetry::OpenTelemetrySpanExt;

struct HeaderExtractor<'headers>(&'headers HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(HeaderName::as_str).collect()
    }
}

struct HeaderInjector<'headers>(&'headers mut HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(key.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}

/// Returns the remote context carried by `traceparent`/`tracestate` in `headers` (an empty
/// context when there is none, or before [`crate::init`] installed the propagator).
pub fn extract_context(headers: &HeaderMap) -> opentelemetry::Context {
    global::get_text_map_propagator(|propagator| propagator.extract(&HeaderExtractor(headers)))
}

/// Makes the remote context of `headers` the parent of `span`, so that the span continues
/// the caller's trace. A request without `traceparent` starts a new trace.
pub fn set_parent_from_headers(span: &tracing::Span, headers: &HeaderMap) {
    // Fails only when the span is disabled or already started: then there is nothing to join.
    let _ = span.set_parent(extract_context(headers));
}

/// Writes the current span's context as `traceparent` (and `tracestate`) into the headers of
/// an outgoing request, so the called role continues this trace. With reqwest:
/// `let mut headers = HeaderMap::new(); inject_current_context(&mut headers);
/// client.get(url).headers(headers)`.
pub fn inject_current_context(headers: &mut HeaderMap) {
    let context = tracing::Span::current().context();
    global::get_text_map_propagator(|propagator| {
        propagator.inject_context(&context, &mut HeaderInjector(headers));
    });
}
