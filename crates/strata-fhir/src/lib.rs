//! FHIR R4 (4.0.1) over axum: ImagingStudy, Patient and Endpoint, read and search, built on
//! request from the catalog (no second copy to keep in step).
//!
//! A protocol adapter like `strata-dicomweb`: every search is the one catalog query
//! (`Catalog::query_in_order` / `count_matches`). Depends on `strata-catalog` and
//! `strata-types` only; it knows nothing of storage or ingest. Never logs query values
//! (they hold patient identifiers and names). See `docs/fhir.md`.

mod capability;
mod dates;
mod handlers;
mod outcome;
mod params;
mod resources;

use std::sync::Arc;

use axum::Router;
use axum::routing::get;
use strata_catalog::Catalog;

pub use outcome::FhirError;
pub use resources::{issuer_to_system, system_to_issuers};

/// The media type of every response.
pub const FHIR_JSON: &str = "application/fhir+json";

/// Settings of the FHIR service.
#[derive(Debug, Clone)]
pub struct FhirSettings {
    /// Public base URL of the FHIR service (`https://host/fhir`) for `fullUrl` and paging
    /// links; `None` derives it from the request's Host header.
    pub public_base_url: Option<String>,
    /// Public base URL of the DICOMweb service, the Endpoint's address; `None` derives it
    /// from the request's Host header (`/dicomweb` beside `/fhir`).
    pub dicomweb_base_url: Option<String>,
    /// Page size when the client sends no `_count`.
    pub default_page_size: u64,
    /// The largest page a client may ask for; larger `_count`s are lowered to it.
    pub max_page_size: u64,
}

impl Default for FhirSettings {
    fn default() -> Self {
        Self {
            public_base_url: None,
            dicomweb_base_url: None,
            default_page_size: 20,
            max_page_size: 200,
        }
    }
}

/// Everything the handlers need; cheap to clone.
#[derive(Clone)]
pub struct FhirState {
    pub catalog: Arc<dyn Catalog>,
    pub settings: Arc<FhirSettings>,
}

/// Returns the FHIR router, to be nested under `/fhir`.
pub fn router(state: FhirState) -> Router {
    Router::new()
        .route("/metadata", get(handlers::metadata))
        .route("/ImagingStudy", get(handlers::search_imaging_studies))
        .route("/ImagingStudy/{id}", get(handlers::read_imaging_study))
        .route("/Patient", get(handlers::search_patients))
        .route("/Patient/{id}", get(handlers::read_patient))
        .route("/Endpoint", get(handlers::search_endpoints))
        .route("/Endpoint/{id}", get(handlers::read_endpoint))
        .with_state(state)
}
