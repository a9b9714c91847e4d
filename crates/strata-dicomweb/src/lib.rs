//! DICOMweb (PS3.18) over axum: STOW-RS, QIDO-RS and WADO-RS.
//!
//! A protocol adapter: STOW-RS calls the one ingest pipeline (`strata-ingest`), QIDO-RS the one
//! catalog query (`strata-catalog`), WADO-RS streams objects from `strata-storage`. Holds no
//! state of its own.

mod media;
mod problem;
mod qido;
mod qido_params;
mod stow;
mod wado;

use std::sync::Arc;

use axum::Router;
use axum::routing::get;
use strata_catalog::Catalog;
use strata_ingest::IngestPipeline;
use strata_storage::BlobStore;

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
}

/// Everything the handlers need; cheap to clone.
#[derive(Clone)]
pub struct DicomwebState {
    pub catalog: Arc<dyn Catalog>,
    pub store: Arc<dyn BlobStore>,
    pub pipeline: IngestPipeline,
    pub settings: Arc<DicomwebSettings>,
}

/// Returns the DICOMweb router, to be nested under `/dicomweb`.
pub fn router(state: DicomwebState) -> Router {
    Router::new()
        .route(
            "/studies",
            get(qido::search_studies).post(stow::store_instances),
        )
        .route("/series", get(qido::search_all_series))
        .route("/instances", get(qido::search_all_instances))
        .route(
            "/studies/{study}",
            get(wado::retrieve_study).post(stow::store_instances_in_study),
        )
        .route("/studies/{study}/metadata", get(wado::study_metadata))
        .route("/studies/{study}/series", get(qido::search_study_series))
        .route(
            "/studies/{study}/instances",
            get(qido::search_study_instances),
        )
        .route(
            "/studies/{study}/series/{series}",
            get(wado::retrieve_series),
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
            get(wado::retrieve_instance),
        )
        .route(
            "/studies/{study}/series/{series}/instances/{instance}/metadata",
            get(wado::instance_metadata),
        )
        .with_state(state)
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
