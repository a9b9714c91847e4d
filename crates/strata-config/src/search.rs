//! The `[search]` section: the embedded full-text search service (issue 5).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::ConfigError;

/// The full-text search service: a tantivy index in `index_dir`, kept in step with the catalog
/// by an in-process indexer, served at `GET /api/search`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SearchConfig {
    /// Whether this node runs the indexer and serves `/api/search`.
    pub enabled: bool,
    /// The index directory (one per search replica, never shared). Empty means
    /// `{data_dir}/search`.
    pub index_dir: Option<PathBuf>,
    /// How often a caught-up indexer reads the catalog's event log, in milliseconds.
    pub poll_interval_ms: u64,
    /// While catching up on a backlog, the longest time between two index commits, in
    /// milliseconds (a caught-up indexer commits at once).
    pub commit_interval_ms: u64,
    /// Indexes private tags (odd groups) too.
    pub include_private_tags: bool,
    /// Base URL of a search process (`http://strata-search:8080`) that a process without the
    /// search role forwards `GET /api/search` to. Unset: such a process does not serve it.
    pub url: Option<String>,
}

impl Default for SearchConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            index_dir: None,
            poll_interval_ms: 500,
            commit_interval_ms: 5_000,
            include_private_tags: false,
            url: None,
        }
    }
}

impl SearchConfig {
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if self.poll_interval_ms == 0 {
            return Err(ConfigError::Invalid {
                key: "search.poll_interval_ms",
                reason: "must be at least 1".to_owned(),
            });
        }
        if self.commit_interval_ms == 0 {
            return Err(ConfigError::Invalid {
                key: "search.commit_interval_ms",
                reason: "must be at least 1".to_owned(),
            });
        }
        Ok(())
    }
}
