//! The indexer: follows the catalog's event log and keeps the index in step with it.
//!
//! Exactly-once in effect: each event names a study, and applying it rebuilds that study's
//! whole document from the catalog, so applying an event twice gives the same index as once.
//! Both kinds are handled alike: after `InstanceStored` (a new or additional instance) and
//! after `InstanceDeleted` the document is rebuilt from the instances the catalog holds now,
//! and removed when none is left.
//! The cursor (the last applied event) is committed in the same tantivy commit as the
//! documents, so after a kill the index and its cursor are those of the last commit, and the
//! events after it are applied again: nothing is lost, nothing is counted twice.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use strata_catalog::Catalog;
use strata_types::StudyUid;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::error::{SearchError, SearchErrorKind, SearchResult};
use crate::index::SearchIndex;

/// How the indexer paces itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexerSettings {
    /// How long the indexer sleeps when it has caught up before it reads the log again.
    pub poll_interval: Duration,
    /// While catching up on a backlog, the longest time between two commits. Once caught up,
    /// the indexer commits at once, so a stored study is searchable within about
    /// `poll_interval` plus one commit.
    pub commit_interval: Duration,
    /// Events read from the log per batch.
    pub batch_size: u32,
}

impl Default for IndexerSettings {
    fn default() -> Self {
        Self {
            poll_interval: Duration::from_millis(500),
            commit_interval: Duration::from_secs(5),
            batch_size: 1000,
        }
    }
}

/// Applies the catalog's events to a [`SearchIndex`].
#[derive(Clone)]
pub struct Indexer {
    catalog: Arc<dyn Catalog>,
    index: Arc<SearchIndex>,
    settings: IndexerSettings,
}

impl Indexer {
    /// An indexer of `catalog` into `index`.
    pub fn new(
        catalog: Arc<dyn Catalog>,
        index: Arc<SearchIndex>,
        settings: IndexerSettings,
    ) -> Self {
        Self {
            catalog,
            index,
            settings,
        }
    }

    /// Applies every event after the committed cursor, committing at least every
    /// `commit_interval` and once at the end. Returns the number of events applied. Stops
    /// early (after committing) when `shutdown` is cancelled.
    pub async fn catch_up(&self, shutdown: &CancellationToken) -> SearchResult<u64> {
        let mut cursor = self.index.committed_sequence()?;
        let mut committed_cursor = cursor;
        let mut last_commit = Instant::now();
        let mut num_applied = 0u64;
        while !shutdown.is_cancelled() {
            let events = self
                .catalog
                .events_after(cursor, self.settings.batch_size)
                .await
                .map_err(|error| {
                    SearchError::new(
                        SearchErrorKind::Catalog,
                        "failed to read the catalog event log",
                        error,
                    )
                })?;
            let Some(last_event) = events.last() else {
                strata_telemetry::metrics::set_search_indexer_lag(0);
                break;
            };
            // A lower bound while catching up (a full batch may be followed by more).
            strata_telemetry::metrics::set_search_indexer_lag(events.len() as i64);
            let last_sequence = last_event.sequence;
            let studies: BTreeSet<StudyUid> = events
                .iter()
                .map(|event| event.study_instance_uid.clone())
                .collect();
            let mut staged = Vec::with_capacity(studies.len());
            for study_instance_uid in studies {
                let instances_json = self
                    .catalog
                    .instance_metadata(&study_instance_uid, None, None)
                    .await
                    .map_err(|error| {
                        SearchError::new(
                            SearchErrorKind::Catalog,
                            "failed to read a study's metadata",
                            error,
                        )
                    })?;
                staged.push((study_instance_uid, instances_json));
            }
            let index = self.index.clone();
            run_blocking(move || {
                for (study_instance_uid, instances_json) in &staged {
                    index.stage_study(study_instance_uid.as_str(), instances_json)?;
                }
                Ok(())
            })
            .await?;
            num_applied += events.len() as u64;
            cursor = last_sequence;
            if last_commit.elapsed() >= self.settings.commit_interval {
                self.commit(cursor).await?;
                committed_cursor = cursor;
                last_commit = Instant::now();
            }
        }
        if cursor != committed_cursor {
            self.commit(cursor).await?;
        }
        if num_applied > 0 {
            debug!(num_applied, sequence = cursor, "search index caught up");
        }
        Ok(num_applied)
    }

    async fn commit(&self, sequence: i64) -> SearchResult<()> {
        let index = self.index.clone();
        run_blocking(move || index.commit(sequence)).await
    }

    /// Follows the log until `shutdown`: catches up, sleeps `poll_interval`, again. Errors
    /// (catalog down) are logged and retried; staged changes are rebuilt from the catalog on
    /// the retry, so none is lost.
    pub async fn run(self, shutdown: CancellationToken) {
        info!(
            sequence = self.index.committed_sequence().unwrap_or_default(),
            "search indexer started"
        );
        loop {
            if let Err(error) = self.catch_up(&shutdown).await {
                warn!(%error, "search indexer failed; retrying");
            }
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep(self.settings.poll_interval) => {}
            }
        }
        info!("search indexer stopped");
    }

    /// Empties the index, commits cursor 0, and replays the whole log. Searches see an empty
    /// or partial index until it completes; a rebuild interrupted by a kill resumes from its
    /// last commit like any catch-up.
    pub async fn rebuild(&self, shutdown: &CancellationToken) -> SearchResult<u64> {
        let index = self.index.clone();
        run_blocking(move || {
            index.stage_delete_all()?;
            index.commit(0)
        })
        .await?;
        self.catch_up(shutdown).await
    }
}

async fn run_blocking<T: Send + 'static>(
    work: impl FnOnce() -> SearchResult<T> + Send + 'static,
) -> SearchResult<T> {
    tokio::task::spawn_blocking(work).await.map_err(|error| {
        SearchError::new(SearchErrorKind::Index, "an index task panicked", error)
    })?
}
