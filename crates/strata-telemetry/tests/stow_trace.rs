//! Issue 7, "what it must show": one STOW-RS request through the real DICOMweb router, ingest
//! pipeline, SQLite catalog and local object store yields one connected trace, exported over
//! OTLP/HTTP to an in-process receiver, and no span attribute carries a patient identifier.
//!
//! One test per binary: `strata_telemetry::init` installs process-wide state.

mod support;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use http_body_util::BodyExt;
use opentelemetry_proto::tonic::common::v1::any_value;
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use strata_dicomweb::{DicomwebSettings, DicomwebState};
use strata_telemetry::{HttpTelemetryLayer, LogFormat, TelemetryConfig};
use support::*;
use tower::ServiceExt;

/// The trace the "client" started: its `traceparent` is sent with the request.
const CLIENT_TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN_ID: &str = "00f067aa0ba902b7";

/// The real DICOMweb router over a SQLite catalog and a local object store, wrapped like
/// `strata serve` wraps it.
async fn archive_router(data_dir: &std::path::Path) -> Router {
    let (catalog, store, pipeline) = archive_services(data_dir).await;
    let state = DicomwebState {
        catalog,
        store,
        pipeline,
        settings: Arc::new(DicomwebSettings {
            public_base_url: Some("http://archive.test/dicomweb".to_owned()),
            max_query_results: 100,
            ingest_concurrency: 2,
            allow_delete: false,
            cors_allowed_origins: Vec::new(),
        }),
        deletion_guard: None,
        frame_sources: Default::default(),
    };
    Router::new()
        .nest("/dicomweb", strata_dicomweb::router(state))
        .layer(HttpTelemetryLayer::new())
        .merge(strata_telemetry::metrics_router())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_stow_rs_request_yields_one_connected_trace_without_patient_identifiers() {
    let (endpoint, received) = start_otlp_receiver().await;
    let mut config = TelemetryConfig::new("strata-test");
    config.otlp_endpoint = Some(endpoint);
    config.log_format = LogFormat::Json;
    config.enable_logs = false;
    let guard = strata_telemetry::init(config).unwrap();

    let data_dir = tempfile::tempdir().unwrap();
    let router = archive_router(data_dir.path()).await;
    let traceparent = format!("00-{CLIENT_TRACE_ID}-{CLIENT_SPAN_ID}-01");

    let boundary = "strata-trace-test";
    let mut body = format!("--{boundary}\r\nContent-Type: application/dicom\r\n\r\n").into_bytes();
    body.extend_from_slice(&planted_instance());
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let stow = http::Request::post("/dicomweb/studies")
        .header(
            "content-type",
            format!("multipart/related; type=\"application/dicom\"; boundary={boundary}"),
        )
        .header("accept", "application/dicom+json")
        .header("traceparent", &traceparent)
        .body(Body::from(body))
        .unwrap();
    let response = router.clone().oneshot(stow).await.unwrap();
    let status = response.status();
    let response_body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&response_body));

    // A QIDO-RS query naming the patient, in the same trace: the query string must not reach
    // any span.
    let qido = http::Request::get(format!(
        "/dicomweb/studies?PatientName={}&PatientID={PLANTED_PATIENT_ID}",
        PLANTED_PATIENT_NAME.replace('^', "%5E")
    ))
    .header("traceparent", &traceparent)
    .body(Body::empty())
    .unwrap();
    let response = router.clone().oneshot(qido).await.unwrap();
    assert_eq!(response.status(), 200);
    response.into_body().collect().await.unwrap();

    let spans = flushed_spans(
        &guard,
        &received,
        &[
            "POST /dicomweb/studies",
            "GET /dicomweb/studies",
            "ingest",
            "dicom.parse",
            "catalog.instance_sha256",
            "storage.put",
            "catalog.store_instance",
        ],
    )
    .await;
    let by_name =
        |name: &str| -> Vec<&Span> { spans.iter().filter(|span| span.name == name).collect() };
    let names: Vec<&str> = spans.iter().map(|span| span.name.as_str()).collect();

    // One trace: the client's.
    assert!(!spans.is_empty(), "no span was exported");
    for span in &spans {
        assert_eq!(
            hex(&span.trace_id),
            CLIENT_TRACE_ID,
            "span {} is in another trace",
            span.name
        );
    }

    // The request span continues the client's span and names the route template.
    let http_spans = by_name("POST /dicomweb/studies");
    assert_eq!(http_spans.len(), 1, "spans: {names:?}");
    let http_span = http_spans[0];
    assert_eq!(hex(&http_span.parent_span_id), CLIENT_SPAN_ID);
    assert_eq!(http_span.kind, SpanKind::Server as i32);
    assert_eq!(
        string_attribute(http_span, "http.route").as_deref(),
        Some("/dicomweb/studies")
    );
    assert_eq!(
        string_attribute(http_span, "http.request.method").as_deref(),
        Some("POST")
    );
    assert!(
        matches!(
            attribute(http_span, "http.response.status_code"),
            Some(any_value::Value::IntValue(200))
        ),
        "{:?}",
        http_span.attributes
    );

    // parse, object store and catalog spans descend from the request span.
    for name in [
        "ingest",
        "dicom.parse",
        "catalog.instance_sha256",
        "storage.put",
        "catalog.store_instance",
    ] {
        let found = by_name(name);
        assert_eq!(
            found.len(),
            1,
            "expected one `{name}` span; spans: {names:?}"
        );
        assert!(
            descends_from(found[0], http_span, &spans),
            "`{name}` is not under the request span"
        );
    }
    let ingest_span = by_name("ingest")[0];
    for name in ["dicom.parse", "storage.put", "catalog.store_instance"] {
        assert_eq!(
            by_name(name)[0].parent_span_id,
            ingest_span.span_id,
            "`{name}` parent"
        );
    }

    // The QIDO-RS span carries the template, not the query.
    let qido_spans = by_name("GET /dicomweb/studies");
    assert_eq!(qido_spans.len(), 1, "spans: {names:?}");
    assert_eq!(hex(&qido_spans[0].parent_span_id), CLIENT_SPAN_ID);

    // No patient identifier anywhere: names, attributes, events, status messages.
    assert_no_patient_identifiers(&spans);
    eprintln!("exported spans: {names:?}");

    // Metrics of the same request, as Prometheus scrapes them.
    let response = router
        .oneshot(http::Request::get("/metrics").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let metrics = String::from_utf8(
        response
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec(),
    )
    .unwrap();
    assert!(
        metrics.contains(r#"strata_ingest_instances_total{outcome="stored",protocol="stow-rs"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            r#"strata_http_request_duration_seconds_count{method="POST",route="/dicomweb/studies",status="200"} 1"#
        ),
        "{metrics}"
    );
    let planted_family = PLANTED_PATIENT_NAME.split('^').next().unwrap();
    for planted in [planted_family, PLANTED_PATIENT_ID, SOP_INSTANCE_UID] {
        assert!(!metrics.contains(planted), "metrics carry `{planted}`");
    }

    // Shutting down exports the last metrics.
    tokio::task::block_in_place(|| drop(guard));
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert!(
        *received.num_metric_posts.lock().unwrap() >= 1,
        "metrics were not exported over OTLP"
    );
}
