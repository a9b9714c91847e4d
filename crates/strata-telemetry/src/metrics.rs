//! Strata's metrics: the instruments, the functions lower crates call to record, and the
//! Prometheus `/metrics` endpoint. Every function is a no-op until [`crate::init`] ran, so
//! libraries and their tests record freely.
//!
//! Names are the Prometheus names, also used over OTLP so that dashboards match both paths.
//! Labels are bounded sets (route templates, protocol names, outcomes): never UIDs, AE titles
//! or anything from a data set.

use std::sync::OnceLock;

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Gauge, Histogram, Meter, UpDownCounter};

/// Histogram bucket boundaries for request latency, in seconds (5 ms … 2 min: a WADO-RS of a
/// large study streams for minutes).
const LATENCY_BOUNDARIES_SECONDS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

struct Instruments {
    ingest_instances: Counter<u64>,
    ingest_bytes: Counter<u64>,
    http_request_duration: Histogram<f64>,
    dimse_associations: Counter<u64>,
    dimse_associations_active: UpDownCounter<i64>,
    store_errors: Counter<u64>,
    search_indexer_lag: Gauge<i64>,
    tier_size: Gauge<u64>,
    tier_objects: Gauge<u64>,
    tier_moves: Counter<u64>,
    fixity_checks: Counter<u64>,
}

static INSTRUMENTS: OnceLock<Instruments> = OnceLock::new();
static PROMETHEUS_REGISTRY: OnceLock<prometheus::Registry> = OnceLock::new();

pub(crate) fn install(meter: &Meter, registry: prometheus::Registry) {
    let instruments = Instruments {
        ingest_instances: meter
            .u64_counter("strata_ingest_instances_total")
            .with_description("Instances received, by protocol and outcome")
            .build(),
        ingest_bytes: meter
            .u64_counter("strata_ingest_bytes_total")
            .with_description("Bytes of the received instances, by protocol and outcome")
            .with_unit("By")
            .build(),
        http_request_duration: meter
            .f64_histogram("strata_http_request_duration_seconds")
            .with_description("HTTP request latency until the response head, by method, route template and status")
            .with_unit("s")
            .with_boundaries(LATENCY_BOUNDARIES_SECONDS.to_vec())
            .build(),
        dimse_associations: meter
            .u64_counter("strata_dimse_associations_total")
            .with_description("DIMSE associations accepted on the TCP listener")
            .build(),
        dimse_associations_active: meter
            .i64_up_down_counter("strata_dimse_associations_active")
            .with_description("DIMSE associations in progress")
            .build(),
        store_errors: meter
            .u64_counter("strata_store_errors_total")
            .with_description("Failed object store operations, by operation")
            .build(),
        search_indexer_lag: meter
            .i64_gauge("strata_search_indexer_lag_events")
            .with_description("Catalog events not yet applied to the search index")
            .build(),
        tier_size: meter
            .u64_gauge("strata_tier_size_bytes")
            .with_description("Bytes stored per storage tier, as last measured")
            .with_unit("By")
            .build(),
        tier_objects: meter
            .u64_gauge("strata_tier_objects")
            .with_description("Objects stored per storage tier, as last measured")
            .build(),
        tier_moves: meter
            .u64_counter("strata_tier_moves_total")
            .with_description("Objects moved between tiers, by outcome (moved, failed)")
            .build(),
        fixity_checks: meter
            .u64_counter("strata_fixity_checks_total")
            .with_description("Objects checked by fixity passes, by outcome (ok, repaired, mismatch, missing, unchecked)")
            .build(),
    };
    let _ = INSTRUMENTS.set(instruments);
    let _ = PROMETHEUS_REGISTRY.set(registry);
}

/// Bounds a protocol name to the known set, so that a label can never carry free text.
fn protocol_label(protocol: &str) -> &'static str {
    match protocol {
        "stow-rs" => "stow-rs",
        "c-store" => "c-store",
        "import" => "import",
        _ => "other",
    }
}

/// The outcome of one received instance, as counted by `strata_ingest_instances_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IngestOutcomeLabel {
    /// Newly stored.
    Stored,
    /// Already stored with the same content (an idempotent retry).
    Duplicate,
    /// Refused (invalid object, conflict, or the archive could not store it).
    Refused,
}

impl IngestOutcomeLabel {
    fn as_str(self) -> &'static str {
        match self {
            IngestOutcomeLabel::Stored => "stored",
            IngestOutcomeLabel::Duplicate => "duplicate",
            IngestOutcomeLabel::Refused => "refused",
        }
    }
}

/// Counts one received instance of `num_bytes` (`strata_ingest_instances_total`,
/// `strata_ingest_bytes_total`); `protocol` is `stow-rs`, `c-store` or `import`.
pub fn record_ingest(protocol: &str, outcome: IngestOutcomeLabel, num_bytes: u64) {
    if let Some(instruments) = INSTRUMENTS.get() {
        let labels = [
            KeyValue::new("protocol", protocol_label(protocol)),
            KeyValue::new("outcome", outcome.as_str()),
        ];
        instruments.ingest_instances.add(1, &labels);
        instruments.ingest_bytes.add(num_bytes, &labels);
    }
}

/// Records one HTTP request (`strata_http_request_duration_seconds`). `route` must be a
/// route template, never a raw path.
pub fn record_http_request(method: &str, route: &str, status: u16, duration_seconds: f64) {
    if let Some(instruments) = INSTRUMENTS.get() {
        instruments.http_request_duration.record(
            duration_seconds,
            &[
                KeyValue::new("method", method.to_owned()),
                KeyValue::new("route", route.to_owned()),
                KeyValue::new("status", i64::from(status)),
            ],
        );
    }
}

/// Counts a DIMSE association and keeps it in `strata_dimse_associations_active` until the
/// returned guard is dropped.
pub fn dimse_association_started() -> DimseAssociationGuard {
    if let Some(instruments) = INSTRUMENTS.get() {
        instruments.dimse_associations.add(1, &[]);
        instruments.dimse_associations_active.add(1, &[]);
        DimseAssociationGuard { counted: true }
    } else {
        DimseAssociationGuard { counted: false }
    }
}

/// Decrements `strata_dimse_associations_active` when dropped.
#[must_use = "the association counts as active until the guard is dropped"]
#[derive(Debug)]
pub struct DimseAssociationGuard {
    counted: bool,
}

impl Drop for DimseAssociationGuard {
    fn drop(&mut self) {
        if self.counted
            && let Some(instruments) = INSTRUMENTS.get()
        {
            instruments.dimse_associations_active.add(-1, &[]);
        }
    }
}

/// Counts one failed object store operation (`strata_store_errors_total{op}`); `op` is one of
/// `put`, `get`, `get_range`, `head`, `delete`, `list`.
pub fn record_store_error(op: &'static str) {
    if let Some(instruments) = INSTRUMENTS.get() {
        instruments.store_errors.add(1, &[KeyValue::new("op", op)]);
    }
}

/// Sets `strata_search_indexer_lag_events`: catalog events the search indexer has not applied
/// yet (the newest event sequence minus the indexer's cursor).
pub fn set_search_indexer_lag(num_events: i64) {
    if let Some(instruments) = INSTRUMENTS.get() {
        instruments.search_indexer_lag.record(num_events, &[]);
    }
}

/// Sets `strata_tier_size_bytes{tier}` and `strata_tier_objects{tier}` to a measured usage;
/// `tier` is a configured tier name (`hot`, `cold`), never data.
pub fn set_tier_usage(tier: &str, num_objects: u64, num_bytes: u64) {
    if let Some(instruments) = INSTRUMENTS.get() {
        let labels = [KeyValue::new("tier", tier.to_owned())];
        instruments.tier_size.record(num_bytes, &labels);
        instruments.tier_objects.record(num_objects, &labels);
    }
}

/// Counts tier moves of one scan (`strata_tier_moves_total{outcome}`).
pub fn record_tier_moves(num_moved: u64, num_failed: u64) {
    if let Some(instruments) = INSTRUMENTS.get() {
        instruments
            .tier_moves
            .add(num_moved, &[KeyValue::new("outcome", "moved")]);
        instruments
            .tier_moves
            .add(num_failed, &[KeyValue::new("outcome", "failed")]);
    }
}

/// Counts one object checked by a fixity pass (`strata_fixity_checks_total{outcome}`);
/// `outcome` is one of `ok`, `repaired`, `mismatch`, `missing`, `unchecked`.
pub fn record_fixity_check(outcome: &'static str) {
    if let Some(instruments) = INSTRUMENTS.get() {
        instruments
            .fixity_checks
            .add(1, &[KeyValue::new("outcome", outcome)]);
    }
}

/// Returns the current metrics in the Prometheus text exposition format (empty before
/// [`crate::init`]).
pub fn prometheus_text() -> String {
    let Some(registry) = PROMETHEUS_REGISTRY.get() else {
        return String::new();
    };
    let mut text = String::new();
    if let Err(error) = prometheus::TextEncoder::new().encode_utf8(&registry.gather(), &mut text) {
        tracing::warn!(%error, "failed to encode metrics");
    }
    text
}

/// Returns a router serving `GET /metrics` (Prometheus text format 0.0.4); merge it into a
/// role's HTTP router.
pub fn metrics_router<S>() -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    Router::new().route("/metrics", get(serve_metrics))
}

async fn serve_metrics() -> impl IntoResponse {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)],
        prometheus_text(),
    )
}
