//! The indexer: follows the catalog's event log and keeps the index in step with it.
//!
//! Exactly-once in effect: each event names a study, and applying it makes that study's
//! document the rollup of the instances the catalog holds now, so applying an event twice
//! gives the same index as once. After `InstanceDeleted` the document is rebuilt from the
//! catalog (and removed when no instance is left).
//!
//! Incremental while a study is being stored: the indexer keeps the rollup of the studies it
//! indexed last (at most [`MAX_ROLLUPS`], with the SOP Instance UIDs each holds), so an
//! `InstanceStored` event for one of them reads that one instance, not the whole study again.
//! Without this, a 1,000-instance series stored over ten seconds was read in full at every
//! poll (twenty times). The rollups are only a cache of what the catalog says: they are
//! dropped on any error, on a delete in the study and on a rebuild, and a restarted indexer
//! starts without them.
//! The cursor (the last applied event) is committed in the same tantivy commit as the
//! documents, so after a kill the index and its cursor are those of the last commit, and the
//! events after it are applied again: nothing is lost, nothing is counted twice.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use strata_catalog::{Catalog, CatalogError, CatalogEvent, EventKind};
use strata_types::{SopInstanceUid, StudyUid};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::document::{StudyDocument, StudyRollup};
use crate::error::{SearchError, SearchErrorKind, SearchResult};
use crate::index::SearchIndex;

/// The most study rollups the indexer keeps between batches (the studies being stored now).
pub const MAX_ROLLUPS: usize = 32;

/// Rollups of larger studies are not kept (each holds the UIDs of its instances).
const MAX_ROLLUP_INSTANCES: usize = 100_000;

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
    rollups: Arc<Mutex<Rollups>>,
}

/// The rollup of a study whose document is staged in the index, and the instances it holds.
struct CachedRollup {
    rollup: StudyRollup,
    instances: HashSet<SopInstanceUid>,
    last_used: u64,
}

/// The cache of [`CachedRollup`]s, least recently used evicted first.
#[derive(Default)]
struct Rollups {
    studies: HashMap<StudyUid, CachedRollup>,
    clock: u64,
}

impl Rollups {
    fn take(&mut self, study_instance_uid: &StudyUid) -> Option<CachedRollup> {
        self.studies.remove(study_instance_uid)
    }

    fn put(&mut self, study_instance_uid: StudyUid, mut cached: CachedRollup) {
        if cached.instances.len() > MAX_ROLLUP_INSTANCES {
            return;
        }
        self.clock += 1;
        cached.last_used = self.clock;
        self.studies.insert(study_instance_uid, cached);
        while self.studies.len() > MAX_ROLLUPS {
            let Some(oldest) = self
                .studies
                .iter()
                .min_by_key(|(_, cached)| cached.last_used)
                .map(|(uid, _)| uid.clone())
            else {
                break;
            };
            self.studies.remove(&oldest);
        }
    }
}

/// What one batch of events asks of one study.
#[derive(Default)]
struct StudyEvents {
    stored: Vec<SopInstanceUid>,
    deleted: bool,
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
            rollups: Arc::default(),
        }
    }

    fn rollups(&self) -> std::sync::MutexGuard<'_, Rollups> {
        self.rollups.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The number of study rollups kept between batches (see [`MAX_ROLLUPS`]).
    pub fn num_cached_rollups(&self) -> usize {
        self.rollups().studies.len()
    }

    /// Applies every event after the committed cursor, committing at least every
    /// `commit_interval` and once at the end. Returns the number of events applied. Stops
    /// early (after committing) when `shutdown` is cancelled.
    pub async fn catch_up(&self, shutdown: &CancellationToken) -> SearchResult<u64> {
        let result = self.apply_events(shutdown).await;
        if result.is_err() {
            // Staged documents may have been rolled back: read every study afresh next time.
            self.rollups().studies.clear();
        }
        result
    }

    async fn apply_events(&self, shutdown: &CancellationToken) -> SearchResult<u64> {
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
            let mut staged = Vec::new();
            for (study_instance_uid, study_events) in events_by_study(&events) {
                if let Some(document) = self.roll_up(&study_instance_uid, study_events).await? {
                    staged.push((study_instance_uid, document));
                }
            }
            let index = self.index.clone();
            run_blocking(move || {
                for (study_instance_uid, document) in &staged {
                    index.stage_document(study_instance_uid.as_str(), document.as_ref())?;
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

    /// Brings the rollup of a study up to date with its events and returns the document to
    /// stage (`Some(None)`: remove it), or `None` when the document is already staged as is.
    async fn roll_up(
        &self,
        study_instance_uid: &StudyUid,
        study_events: StudyEvents,
    ) -> SearchResult<Option<Option<StudyDocument>>> {
        let cached = self.rollups().take(study_instance_uid);
        let cached = match cached {
            Some(mut cached) if !study_events.deleted => {
                let mut missing = study_events.stored;
                missing.retain(|uid| !cached.instances.contains(uid));
                if missing.is_empty() {
                    self.rollups().put(study_instance_uid.clone(), cached);
                    return Ok(None);
                }
                let found = self
                    .catalog
                    .instance_metadata_by_uid(study_instance_uid, &missing)
                    .await
                    .map_err(metadata_error)?;
                for (sop_instance_uid, instance_json) in found {
                    if cached.instances.insert(sop_instance_uid) {
                        cached.rollup.add_instance(&instance_json);
                    }
                }
                cached
            }
            _ => {
                let instances = self
                    .catalog
                    .instance_metadata_with_locations(study_instance_uid, None, None)
                    .await
                    .map_err(metadata_error)?;
                let mut rollup =
                    StudyRollup::new(study_instance_uid.as_str(), self.index.document_settings());
                let mut uids = HashSet::with_capacity(instances.len());
                for (location, instance_json) in instances {
                    uids.insert(location.sop_instance_uid);
                    rollup.add_instance(&instance_json);
                }
                CachedRollup {
                    rollup,
                    instances: uids,
                    last_used: 0,
                }
            }
        };
        let document = cached.rollup.document();
        if document.is_some() {
            self.rollups().put(study_instance_uid.clone(), cached);
        }
        Ok(Some(document))
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
        self.rollups().studies.clear();
        let index = self.index.clone();
        run_blocking(move || {
            index.stage_delete_all()?;
            index.commit(0)
        })
        .await?;
        self.catch_up(shutdown).await
    }
}

/// Groups a batch of events by study, in study UID order.
fn events_by_study(events: &[CatalogEvent]) -> BTreeMap<StudyUid, StudyEvents> {
    let mut by_study: BTreeMap<StudyUid, StudyEvents> = BTreeMap::new();
    for event in events {
        let study_events = by_study
            .entry(event.study_instance_uid.clone())
            .or_default();
        match event.kind {
            EventKind::InstanceStored => study_events.stored.push(event.sop_instance_uid.clone()),
            EventKind::InstanceDeleted => study_events.deleted = true,
        }
    }
    by_study
}

fn metadata_error(error: CatalogError) -> SearchError {
    SearchError::new(
        SearchErrorKind::Catalog,
        "failed to read a study's metadata",
        error,
    )
}

async fn run_blocking<T: Send + 'static>(
    work: impl FnOnce() -> SearchResult<T> + Send + 'static,
) -> SearchResult<T> {
    tokio::task::spawn_blocking(work).await.map_err(|error| {
        SearchError::new(SearchErrorKind::Index, "an index task panicked", error)
    })?
}
