//! Full-text search over the archive's metadata (issue 5): a tantivy index with one document
//! per study, the indexer that follows the catalog's event log, and `GET /api/search`.
//!
//! Owns the index directory and its schema. Reads the catalog only through the `Catalog`
//! trait (events and DICOM JSON metadata), never objects or SQL; depends on `strata-types`
//! and `strata-catalog` only, plus an HTTP client for [`RemoteSearchService`], which lets a
//! process without the search role answer `/api/search` through a search process. See
//! `docs/search.md`.

mod api;
mod document;
mod error;
mod index;
mod indexer;
mod query;
mod remote;
mod schema;

pub use api::{LocalSearchService, SearchApiState, SearchService, parse_parameters, router};
pub use document::{
    DocumentSettings, SeriesSummary, StudyDocument, StudyRollup, StudySummary, build_study_document,
};
pub use error::{SearchError, SearchErrorKind, SearchResult};
pub use index::SearchIndex;
pub use indexer::{Indexer, IndexerSettings, MAX_ROLLUPS};
pub use query::{MAX_LIMIT, MAX_OFFSET, SearchHit, SearchRequest, SearchResponse, SortOrder};
pub use remote::{HeaderInjector, RemoteSearchService};
