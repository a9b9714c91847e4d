//! One span and one latency measurement per HTTP request, continuing the caller's trace.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::extract::MatchedPath;
use http::{Request, Response};
use tracing::Instrument;

use crate::propagation::set_parent_from_headers;

/// A tower layer for axum routers: wraps each request in an `http_request` span (parent: the
/// `traceparent` of the request) and records `strata_http_request_duration_seconds`.
///
/// Apply it with `Router::layer` so that the route template (`MatchedPath`) is known: spans
/// and metrics carry the template (`/dicomweb/studies/{study}`), never the raw path or the
/// query string, which may hold patient names and IDs (QIDO-RS).
#[derive(Debug, Clone, Copy, Default)]
pub struct HttpTelemetryLayer;

impl HttpTelemetryLayer {
    /// Returns the layer.
    pub fn new() -> Self {
        Self
    }
}

impl<S> tower::Layer<S> for HttpTelemetryLayer {
    type Service = HttpTelemetry<S>;

    fn layer(&self, inner: S) -> Self::Service {
        HttpTelemetry { inner }
    }
}

/// The service of [`HttpTelemetryLayer`].
#[derive(Debug, Clone)]
pub struct HttpTelemetry<S> {
    inner: S,
}

impl<S, RequestBody, ResponseBody> tower::Service<Request<RequestBody>> for HttpTelemetry<S>
where
    S: tower::Service<Request<RequestBody>, Response = Response<ResponseBody>>,
    S::Future: Send + 'static,
    S::Error: 'static,
{
    type Response = Response<ResponseBody>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<RequestBody>) -> Self::Future {
        let method = request.method().as_str().to_owned();
        let route = request
            .extensions()
            .get::<MatchedPath>()
            .map(|path| path.as_str().to_owned())
            .unwrap_or_else(|| "unmatched".to_owned());
        let span = tracing::info_span!(
            "http_request",
            otel.name = %format!("{method} {route}"),
            otel.kind = "server",
            otel.status_code = tracing::field::Empty,
            http.request.method = %method,
            http.route = %route,
            http.response.status_code = tracing::field::Empty,
        );
        set_parent_from_headers(&span, request.headers());
        let started = Instant::now();
        let response_future = {
            let _entered = span.enter();
            self.inner.call(request)
        };
        let request_span = span.clone();
        Box::pin(
            async move {
                let result = response_future.await;
                let status = match &result {
                    Ok(response) => response.status().as_u16(),
                    Err(_) => 500,
                };
                request_span.record("http.response.status_code", i64::from(status));
                if status >= 500 {
                    request_span.record("otel.status_code", "ERROR");
                }
                crate::metrics::record_http_request(
                    &method,
                    &route,
                    status,
                    started.elapsed().as_secs_f64(),
                );
                result
            }
            .instrument(span),
        )
    }
}
