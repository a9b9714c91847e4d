//! Issue 7: one span per DIMSE association, with the C-STORE's ingest, object-store and catalog
//! spans under it in one trace, exported over OTLP/HTTP; no patient identifier in any span.
//!
//! One test per binary: `strata_telemetry::init` installs process-wide state.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use opentelemetry_proto::tonic::trace::v1::Span;
use strata_dimse::{DimseServices, DimseSettings, StoreScu, StoreScuOutcome, read_part10};
use strata_telemetry::TelemetryConfig;
use support::*;
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_c_store_association_yields_one_connected_trace() {
    let (endpoint, received) = start_otlp_receiver().await;
    let mut config = TelemetryConfig::new("strata-test");
    config.otlp_endpoint = Some(endpoint);
    config.enable_logs = false;
    let guard = strata_telemetry::init(config).unwrap();

    let data_dir = tempfile::tempdir().unwrap();
    let (catalog, store, pipeline) = archive_services(data_dir.path()).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let settings = DimseSettings {
        ae_title: "STRATA".to_owned(),
        accepted_calling_ae_titles: Vec::new(),
        max_pdu: 16384,
        max_associations: 4,
        artim_timeout: Duration::from_secs(10),
        idle_timeout: Duration::from_secs(10),
        peers: BTreeMap::new(),
        serve_storage: true,
        serve_query_retrieve: true,
        drain_timeout: Duration::from_secs(5),
        tls: None,
        tls_peers: Vec::new(),
        peer_tls: None,
    };
    let services = DimseServices {
        catalog,
        store,
        pipeline,
    };
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(strata_dimse::serve_dimse(
        listener,
        settings,
        services,
        shutdown.clone(),
    ));

    let file = planted_instance();
    let status = tokio::task::spawn_blocking(move || {
        let parts = read_part10(&file).unwrap();
        let mut scu = StoreScu::connect(
            &address,
            "TRACE-SCU",
            "STRATA",
            &[(
                parts.sop_class_uid.clone(),
                parts.transfer_syntax_uid.clone(),
            )],
        )
        .unwrap();
        let outcome = scu
            .store(
                &parts.sop_class_uid,
                &parts.sop_instance_uid,
                &parts.transfer_syntax_uid,
                &file[parts.data_set_offset..],
                None,
            )
            .unwrap();
        scu.release().unwrap();
        outcome
    })
    .await
    .unwrap();
    assert!(matches!(status, StoreScuOutcome::Status(0)), "{status:?}");
    shutdown.cancel();
    server.await.unwrap().unwrap();

    let spans = flushed_spans(
        &guard,
        &received,
        &[
            "dimse_association",
            "ingest",
            "dicom.parse",
            "catalog.instance_sha256",
            "storage.put",
            "catalog.store_instance",
        ],
    )
    .await;
    let names: Vec<&str> = spans.iter().map(|span| span.name.as_str()).collect();
    eprintln!("exported spans: {names:?}");
    let by_name =
        |name: &str| -> Vec<&Span> { spans.iter().filter(|span| span.name == name).collect() };

    let associations = by_name("dimse_association");
    assert_eq!(associations.len(), 1, "spans: {names:?}");
    let association = associations[0];
    assert!(
        association.parent_span_id.is_empty(),
        "an association starts a trace"
    );
    assert_eq!(
        string_attribute(association, "calling_ae_title").as_deref(),
        Some("TRACE-SCU")
    );
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
        assert_eq!(found[0].trace_id, association.trace_id, "`{name}` trace");
        assert!(
            descends_from(found[0], association, &spans),
            "`{name}` is not under the association span"
        );
    }
    assert_eq!(
        string_attribute(by_name("ingest")[0], "protocol").as_deref(),
        Some("c-store")
    );
    assert_no_patient_identifiers(&spans);

    let metrics = strata_telemetry::metrics::prometheus_text();
    for expected in [
        "strata_dimse_associations_total 1",
        "strata_dimse_associations_active 0",
        r#"strata_ingest_instances_total{outcome="stored",protocol="c-store"} 1"#,
    ] {
        assert!(
            metrics.contains(expected),
            "missing `{expected}` in\n{metrics}"
        );
    }
    tokio::task::block_in_place(|| drop(guard));
}
