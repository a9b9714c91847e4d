//! Errors of the search service.

/// What went wrong, for callers to branch on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SearchErrorKind {
    /// A request parameter is invalid; the message names it.
    InvalidRequest,
    /// The index on disk has another schema version: run `strata search rebuild`.
    SchemaMismatch,
    /// The index could not be read or written.
    Index,
    /// The catalog could not be read.
    Catalog,
    /// A remote search process did not answer (or answered with a server error).
    Unavailable,
}

/// An error of the search service. Messages name parameters and paths, never patient data.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct SearchError {
    pub kind: SearchErrorKind,
    pub message: String,
    #[source]
    pub(crate) source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl SearchError {
    /// An invalid request parameter.
    pub fn invalid_request(message: impl Into<String>) -> Self {
        Self {
            kind: SearchErrorKind::InvalidRequest,
            message: message.into(),
            source: None,
        }
    }

    pub(crate) fn schema_mismatch(message: impl Into<String>) -> Self {
        Self {
            kind: SearchErrorKind::SchemaMismatch,
            message: message.into(),
            source: None,
        }
    }

    pub(crate) fn new(
        kind: SearchErrorKind,
        message: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Self {
            kind,
            message: message.into(),
            source: Some(source.into()),
        }
    }

    pub(crate) fn index(message: impl Into<String>, source: tantivy::TantivyError) -> Self {
        Self::new(SearchErrorKind::Index, message, source)
    }
}

/// The result type of this crate.
pub type SearchResult<T> = Result<T, SearchError>;
