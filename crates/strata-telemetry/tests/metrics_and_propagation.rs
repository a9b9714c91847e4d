//! The Prometheus endpoint, metric names and labels, and W3C trace-context propagation
//! between roles. One test per binary: `strata_telemetry::init` installs process-wide state.

use axum::Router;
use axum::body::Body;
use axum::routing::get;
use http::HeaderMap;
use http_body_util::BodyExt;
use strata_telemetry::metrics::{self, IngestOutcomeLabel};
use strata_telemetry::{HttpTelemetryLayer, TelemetryConfig};
use tower::ServiceExt;

const CLIENT_TRACE_ID: &str = "0af7651916cd43dd8448eb211c80319c";
const CLIENT_SPAN_ID: &str = "b7ad6b7169203331";

async fn body_text(response: http::Response<Body>) -> String {
    String::from_utf8(
        response
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec(),
    )
    .unwrap()
}

/// A handler that calls "another role": returns the `traceparent` it would send.
async fn outgoing_traceparent() -> String {
    let mut headers = HeaderMap::new();
    strata_telemetry::inject_current_context(&mut headers);
    headers
        .get("traceparent")
        .map(|value| value.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

#[tokio::test]
async fn test_metrics_endpoint_and_trace_context_propagation() {
    let mut config = TelemetryConfig::new("strata-test");
    config.enable_logs = false;
    let _guard = strata_telemetry::init(config).unwrap();

    let router = Router::new()
        .route("/dicomweb/studies/{study}", get(outgoing_traceparent))
        .layer(HttpTelemetryLayer::new())
        .merge(strata_telemetry::metrics_router());

    // Propagation: the outgoing call continues the incoming trace, from the request's span.
    let request = http::Request::get("/dicomweb/studies/2.25.999?PatientID=SECRET-ID")
        .header(
            "traceparent",
            format!("00-{CLIENT_TRACE_ID}-{CLIENT_SPAN_ID}-01"),
        )
        .body(Body::empty())
        .unwrap();
    let response = router.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), 200);
    let outgoing = body_text(response).await;
    let parts: Vec<&str> = outgoing.split('-').collect();
    assert_eq!(parts.len(), 4, "traceparent `{outgoing}`");
    assert_eq!(parts[0], "00");
    assert_eq!(parts[1], CLIENT_TRACE_ID, "the trace is continued");
    assert_ne!(
        parts[2], CLIENT_SPAN_ID,
        "the parent is this process's request span"
    );
    assert_eq!(parts[2].len(), 16);
    assert_eq!(parts[3], "01");

    // Without an incoming traceparent a new trace starts.
    let response = router
        .clone()
        .oneshot(
            http::Request::get("/dicomweb/studies/2.25.998")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    let fresh = body_text(response).await;
    assert_eq!(fresh.len(), 55, "traceparent `{fresh}`");
    assert!(!fresh.contains(CLIENT_TRACE_ID));

    // An unrouted path is never a label (axum's default fallback runs outside route layers).
    let response = router
        .clone()
        .oneshot(
            http::Request::get("/no/such/2.25.997")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), 404);

    metrics::record_ingest("c-store", IngestOutcomeLabel::Stored, 1000);
    metrics::record_ingest("c-store", IngestOutcomeLabel::Stored, 500);
    metrics::record_ingest("free text from a peer", IngestOutcomeLabel::Refused, 10);
    metrics::record_store_error("put");
    {
        let _association = metrics::dimse_association_started();
        let text = metrics::prometheus_text();
        assert!(
            text.contains("strata_dimse_associations_active 1"),
            "{text}"
        );
    }
    metrics::set_search_indexer_lag(7);

    let response = router
        .oneshot(http::Request::get("/metrics").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let text = body_text(response).await;
    for expected in [
        r#"strata_http_request_duration_seconds_count{method="GET",route="/dicomweb/studies/{study}",status="200"} 2"#,
        r#"strata_http_request_duration_seconds_bucket{method="GET",route="/dicomweb/studies/{study}",status="200",le="0.005"}"#,
        r#"strata_ingest_instances_total{outcome="stored",protocol="c-store"} 2"#,
        r#"strata_ingest_bytes_total{outcome="stored",protocol="c-store"} 1500"#,
        r#"strata_ingest_instances_total{outcome="refused",protocol="other"} 1"#,
        r#"strata_store_errors_total{op="put"} 1"#,
        "strata_dimse_associations_total 1",
        "strata_dimse_associations_active 0",
        "strata_search_indexer_lag_events 7",
        "# TYPE strata_http_request_duration_seconds histogram",
        "# TYPE strata_ingest_instances_total counter",
        "# TYPE strata_search_indexer_lag_events gauge",
    ] {
        assert!(text.contains(expected), "missing `{expected}` in\n{text}");
    }
    for leaked in ["2.25.999", "2.25.997", "/no/such", "SECRET-ID", "free text"] {
        assert!(!text.contains(leaked), "metrics carry `{leaked}`");
    }
}
