//! DICOMweb (PS3.18) over axum: STOW-RS, QIDO-RS and WADO-RS.
//!
//! A protocol adapter: STOW-RS calls the one ingest pipeline (`strata-ingest`), QIDO-RS the one
//! catalog query (`strata-catalog`), WADO-RS streams objects from `strata-storage`. Holds no
//! state of its own.

mod bulkdata;
mod delete;
mod frames;
mod http_layers;
mod media;
mod problem;
mod qido;
mod qido_params;
mod rendered;
mod series_cache;
mod stow;
mod stow_json;
mod transcode;
mod wado;
mod wado_uri;
mod zip;

use std::sync::Arc;

use axum::Router;
use axum::routing::get;
use strata_catalog::Catalog;
use strata_ingest::IngestPipeline;
use strata_storage::BlobStore;

pub use delete::{DeletionCheck, DeletionGuard, delete_and_purge, find_unreferenced_objects};
pub use frames::FrameSourceCache;
pub use problem::Problem;

/// Settings of the DICOMweb service.
#[derive(Debug, Clone)]
pub struct DicomwebSettings {
    /// Public base URL (`https://host/dicomweb`) for RetrieveURL and BulkDataURI; `None`
    /// derives it from the request's Host header.
    pub public_base_url: Option<String>,
    /// QIDO-RS results returned when the client sets no limit, and the most it may ask for.
    pub max_query_results: u64,
    /// Instances of one STOW-RS request processed concurrently.
    pub ingest_concurrency: usize,
    /// Whether `DELETE` on studies, series and instances is allowed (405 otherwise).
    pub allow_delete: bool,
    /// Origins allowed to call the service from a browser (CORS); `*` allows any; empty sends
    /// no CORS headers.
    pub cors_allowed_origins: Vec<String>,
}

/// Everything the handlers need; cheap to clone.
#[derive(Clone)]
pub struct DicomwebState {
    pub catalog: Arc<dyn Catalog>,
    pub store: Arc<dyn BlobStore>,
    pub pipeline: IngestPipeline,
    pub settings: Arc<DicomwebSettings>,
    /// Retention / legal-hold check before a DELETE; `None` allows every deletion.
    pub deletion_guard: Option<DeletionGuard>,
    /// Recently read frame sources (`FrameSourceCache::default()` for a new state).
    pub frame_sources: Arc<FrameSourceCache>,
}

/// Returns the DICOMweb router, to be nested under `/dicomweb`.
pub fn router(state: DicomwebState) -> Router {
    let cors_allowed_origins = state.settings.cors_allowed_origins.clone();
    let router = Router::new()
        .route(
            "/studies",
            get(qido::search_studies).post(stow::store_instances),
        )
        .route("/series", get(qido::search_all_series))
        .route("/instances", get(qido::search_all_instances))
        .route(
            "/studies/{study}",
            get(wado::retrieve_study)
                .post(stow::store_instances_in_study)
                .delete(delete::delete_study),
        )
        .route("/studies/{study}/metadata", get(wado::study_metadata))
        .route("/studies/{study}/series", get(qido::search_study_series))
        .route(
            "/studies/{study}/instances",
            get(qido::search_study_instances),
        )
        .route(
            "/studies/{study}/series/{series}",
            get(wado::retrieve_series).delete(delete::delete_series),
        )
        .route(
            "/studies/{study}/series/{series}/metadata",
            get(wado::series_metadata),
        )
        .route(
            "/studies/{study}/series/{series}/instances",
            get(qido::search_series_instances),
        )
        .route(
            "/studies/{study}/series/{series}/instances/{instance}",
            get(wado::retrieve_instance).delete(delete::delete_instance),
        )
        .route(
            "/studies/{study}/series/{series}/instances/{instance}/metadata",
            get(wado::instance_metadata),
        )
        .route(
            "/studies/{study}/series/{series}/instances/{instance}/frames/{frames}",
            get(frames::retrieve_frames),
        )
        .route(
            "/studies/{study}/series/{series}/instances/{instance}/bulk/{*path}",
            get(bulkdata::retrieve_bulkdata),
        )
        // Rendered and thumbnail resources, WADO-URI (issue 3, rendered.rs / wado_uri.rs).
        .route("/studies/{study}/rendered", get(rendered::rendered))
        .route("/studies/{study}/thumbnail", get(rendered::thumbnail))
        .route(
            "/studies/{study}/series/{series}/rendered",
            get(rendered::rendered),
        )
        .route(
            "/studies/{study}/series/{series}/thumbnail",
            get(rendered::thumbnail),
        )
        .route(
            "/studies/{study}/series/{series}/instances/{instance}/rendered",
            get(rendered::rendered),
        )
        .route(
            "/studies/{study}/series/{series}/instances/{instance}/thumbnail",
            get(rendered::thumbnail),
        )
        .route(
            "/studies/{study}/series/{series}/instances/{instance}/frames/{frames}/rendered",
            get(rendered::rendered),
        )
        .route(
            "/studies/{study}/series/{series}/instances/{instance}/frames/{frames}/thumbnail",
            get(rendered::thumbnail),
        )
        .route("/wado", get(wado_uri::retrieve))
        .with_state(state);
    http_layers::browser_layers(router, &cors_allowed_origins)
}

/// Returns the base URL of the DICOMweb service for RetrieveURL and BulkDataURI.
pub(crate) fn base_url(settings: &DicomwebSettings, headers: &http::HeaderMap) -> String {
    if let Some(base) = &settings.public_base_url {
        return base.trim_end_matches('/').to_owned();
    }
    let header = |name: &str| headers.get(name).and_then(|value| value.to_str().ok());
    let origin = strata_types::request_origin(header("host"), header("x-forwarded-proto"));
    format!("{origin}/dicomweb")
}
