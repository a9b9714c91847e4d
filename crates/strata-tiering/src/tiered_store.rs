//! `TieredStore`: a `BlobStore` that reads each object from the tier the catalog names, so
//! every reader (WADO-RS, frames, DIMSE retrieve) is unaware of tiers.

use std::collections::HashMap;
use std::ops::Range;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use strata_catalog::{CatalogError, TierCatalog};
use strata_storage::{
    BlobStore, ByteStream, ObjectMeta, StorageError, StorageErrorKind, StorageResult,
};
use strata_types::{ObjectKey, StudyUid};
use tokio_util::sync::CancellationToken;

use crate::archive::RestoreStatus;
use crate::tiers::{Tier, TierSet};

/// How long a resolved tier is trusted. A stale entry costs one retry: a read that finds the
/// object missing on the cached tier resolves again (a move committed meanwhile).
const TIER_CACHE_TTL: Duration = Duration::from_secs(5);
/// The most cached tiers; the cache is cleared when full.
const TIER_CACHE_MAX_ENTRIES: usize = 20_000;

/// How restores of archived objects are started.
#[derive(Debug, Clone)]
pub struct RestoreSettings {
    /// Days the restored copy stays readable.
    pub days: u32,
    /// `Standard`, `Bulk` or `Expedited`.
    pub retrieval_tier: String,
    /// Answered as Retry-After while a restore runs.
    pub retry_after_seconds: u64,
    /// Days a study is pinned to `hot` when a read starts a restore of it (0: none).
    pub promote_days: u32,
}

impl Default for RestoreSettings {
    fn default() -> Self {
        Self {
            days: 7,
            retrieval_tier: "Standard".to_owned(),
            retry_after_seconds: 3600,
            promote_days: 0,
        }
    }
}

#[derive(Clone)]
struct CachedTier {
    tier: String,
    study_opt: Option<StudyUid>,
    resolved_at: Instant,
}

/// A [`BlobStore`] over every tier; see the module documentation.
///
/// Writes (ingest) go to the object's current tier, `hot` for a new object. Reads record the
/// study's last access in memory; [`TieredStore::flush_accesses`] writes them in one
/// transaction (run periodically by [`TieredStore::run_access_flush`]).
pub struct TieredStore {
    tiers: TierSet,
    catalog: Arc<dyn TierCatalog>,
    restore: RestoreSettings,
    cache: Mutex<HashMap<ObjectKey, CachedTier>>,
    accesses: Mutex<HashMap<StudyUid, i64>>,
}

impl std::fmt::Debug for TieredStore {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("TieredStore")
            .field("tiers", &self.tiers)
            .finish_non_exhaustive()
    }
}

fn catalog_error(error: CatalogError, key: &ObjectKey) -> StorageError {
    StorageError::new(
        StorageErrorKind::Unavailable,
        "failed to read the tier of object",
    )
    .with_key(key)
    .with_source(error)
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

impl TieredStore {
    /// Returns a store over `tiers` whose object locations are in `catalog`.
    pub fn new(tiers: TierSet, catalog: Arc<dyn TierCatalog>, restore: RestoreSettings) -> Self {
        Self {
            tiers,
            catalog,
            restore,
            cache: Mutex::new(HashMap::new()),
            accesses: Mutex::new(HashMap::new()),
        }
    }

    /// Returns the tiers.
    pub fn tiers(&self) -> &TierSet {
        &self.tiers
    }

    /// Returns the restore settings.
    pub fn restore_settings(&self) -> &RestoreSettings {
        &self.restore
    }

    /// Resolves the tier of `key`, from the cache unless `fresh`.
    async fn resolve(&self, key: &ObjectKey, fresh: bool) -> StorageResult<CachedTier> {
        if !fresh && let Some(cached) = self.cached(key) {
            return Ok(cached);
        }
        let object_tier = self
            .catalog
            .object_tier(key)
            .await
            .map_err(|error| catalog_error(error, key))?;
        let resolved = CachedTier {
            tier: object_tier.tier,
            study_opt: object_tier.study_instance_uid,
            resolved_at: Instant::now(),
        };
        self.remember([(key.clone(), resolved.clone())]);
        Ok(resolved)
    }

    /// The cached tier of `key`, unless missing or older than `TIER_CACHE_TTL`.
    fn cached(&self, key: &ObjectKey) -> Option<CachedTier> {
        self.cache
            .lock()
            .expect("tier cache lock is never poisoned")
            .get(key)
            .filter(|cached| cached.resolved_at.elapsed() < TIER_CACHE_TTL)
            .cloned()
    }

    /// Caches resolved tiers; the cache is cleared first when they would overfill it.
    fn remember(&self, resolved: impl IntoIterator<Item = (ObjectKey, CachedTier)>) {
        let resolved: Vec<(ObjectKey, CachedTier)> = resolved.into_iter().collect();
        let mut cache = self
            .cache
            .lock()
            .expect("tier cache lock is never poisoned");
        if cache.len() + resolved.len() > TIER_CACHE_MAX_ENTRIES {
            cache.clear();
        }
        cache.extend(resolved);
    }

    /// Resolves the tiers of every key not cached in one catalog read per few hundred keys,
    /// so that a retrieval of a whole study does not ask the catalog once per object.
    async fn resolve_all(&self, keys: &[ObjectKey]) -> StorageResult<()> {
        if keys.len() < 2 {
            return Ok(());
        }
        let missing: Vec<ObjectKey> = keys
            .iter()
            .filter(|key| self.cached(key).is_none())
            .cloned()
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let placements = self
            .catalog
            .placements_of(&missing)
            .await
            .map_err(|error| catalog_error(error, &missing[0]))?;
        let resolved_at = Instant::now();
        // Keys without an instance are left to `resolve`, which reports them one by one.
        self.remember(placements.into_iter().map(|placement| {
            let cached = CachedTier {
                tier: placement.tier,
                study_opt: Some(placement.study_instance_uid),
                resolved_at,
            };
            (placement.object_key, cached)
        }));
        Ok(())
    }

    /// Forgets the cached tier of `key` (after a move of it).
    pub fn invalidate(&self, key: &ObjectKey) {
        self.cache
            .lock()
            .expect("tier cache lock is never poisoned")
            .remove(key);
    }

    fn record_access(&self, study_opt: Option<&StudyUid>) {
        if let Some(study) = study_opt {
            self.accesses
                .lock()
                .expect("access lock is never poisoned")
                .insert(study.clone(), now_ms());
        }
    }

    /// Writes the study reads recorded since the last flush, in one transaction.
    pub async fn flush_accesses(&self) -> Result<usize, CatalogError> {
        let batch: Vec<(StudyUid, i64)> = {
            let mut accesses = self.accesses.lock().expect("access lock is never poisoned");
            accesses.drain().collect()
        };
        if batch.is_empty() {
            return Ok(0);
        }
        match self.catalog.record_study_access(&batch).await {
            Ok(()) => Ok(batch.len()),
            Err(error) => {
                // Keep them for the next flush (a newer read of the same study wins).
                let mut accesses = self.accesses.lock().expect("access lock is never poisoned");
                for (study, accessed_at_ms) in batch {
                    accesses.entry(study).or_insert(accessed_at_ms);
                }
                Err(error)
            }
        }
    }

    /// Flushes study reads every `interval` until `shutdown`, then once more.
    pub async fn run_access_flush(
        self: Arc<Self>,
        interval: Duration,
        shutdown: CancellationToken,
    ) {
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep(interval) => {}
            }
            if let Err(error) = self.flush_accesses().await {
                tracing::warn!(%error, "failed to record study reads; retrying at the next flush");
            }
        }
        if let Err(error) = self.flush_accesses().await {
            tracing::warn!(%error, "failed to record study reads at shutdown");
        }
    }

    /// Turns a failed read on an archive tier into `RestoreRequired` when the object is
    /// archived, starting its restore.
    async fn explain_failed_read(
        &self,
        tier: &Tier,
        key: &ObjectKey,
        error: StorageError,
    ) -> StorageError {
        if !tier.requires_restore {
            return error;
        }
        let Some(archive) = &tier.archive_opt else {
            return error;
        };
        match archive.head(key).await {
            Ok(head) if head.status == RestoreStatus::Archived => {
                if let Err(restore_error) = archive
                    .restore(key, self.restore.days, &self.restore.retrieval_tier)
                    .await
                {
                    tracing::warn!(error = %restore_error, object_key = %key, "failed to start a restore");
                    return restore_error;
                }
                tracing::info!(object_key = %key, tier = %tier.name, "restore started on read");
                self.promote_after_restore(key).await;
                self.restore_required(key)
            }
            Ok(head) if head.status == RestoreStatus::InProgress => self.restore_required(key),
            _ => error,
        }
    }

    /// Pins the study of `key` to `hot` for `promote_days` after a read started its restore.
    async fn promote_after_restore(&self, key: &ObjectKey) {
        if self.restore.promote_days == 0 {
            return;
        }
        let Ok(resolved) = self.resolve(key, false).await else {
            return;
        };
        let Some(study) = resolved.study_opt else {
            return;
        };
        let until_ms = now_ms() + i64::from(self.restore.promote_days) * 86_400_000;
        let result = async {
            let mut retention = self.catalog.study_retention(&study).await?;
            if retention
                .pinned_until_ms
                .is_some_and(|pinned| pinned >= until_ms - 60_000)
            {
                return Ok(());
            }
            retention.pinned_tier = Some(strata_config::HOT_TIER.to_owned());
            retention.pinned_until_ms = Some(until_ms);
            self.catalog.set_study_retention(&study, &retention).await
        }
        .await;
        if let Err(error) = result {
            tracing::warn!(%error, study_instance_uid = %study, "failed to pin a restored study to hot");
        }
    }

    fn restore_required(&self, key: &ObjectKey) -> StorageError {
        StorageError::new(
            StorageErrorKind::RestoreRequired {
                retry_after_seconds: self.restore.retry_after_seconds,
            },
            "failed to read object",
        )
        .with_key(key)
    }

    /// The tier a write of `key` goes to: its current tier, `hot` for a new object. With `hot`
    /// as the only tier, no catalog lookup is needed.
    async fn write_tier(&self, key: &ObjectKey) -> StorageResult<&Arc<Tier>> {
        if self.tiers.iter().nth(1).is_none() {
            return Ok(self.tiers.hot());
        }
        let resolved = self.resolve(key, true).await?;
        self.tiers.get(&resolved.tier)
    }

    /// Runs `read` on the object's tier; when the object is missing there, resolves the tier
    /// again (a move may have committed) and retries once on the new tier.
    async fn read_with<T, F, Fut>(&self, key: &ObjectKey, read: F) -> StorageResult<T>
    where
        F: Fn(Arc<Tier>) -> Fut,
        Fut: std::future::Future<Output = StorageResult<T>>,
    {
        let resolved = self.resolve(key, false).await?;
        self.record_access(resolved.study_opt.as_ref());
        let tier = self.tiers.get(&resolved.tier)?.clone();
        match read(tier.clone()).await {
            Ok(value) => Ok(value),
            Err(error) if error.kind == StorageErrorKind::NotFound => {
                let fresh = self.resolve(key, true).await?;
                if fresh.tier == resolved.tier {
                    return Err(error);
                }
                let fresh_tier = self.tiers.get(&fresh.tier)?.clone();
                match read(fresh_tier.clone()).await {
                    Ok(value) => Ok(value),
                    Err(error) => Err(self.explain_failed_read(&fresh_tier, key, error).await),
                }
            }
            Err(error) => Err(self.explain_failed_read(&tier, key, error).await),
        }
    }
}

#[async_trait]
impl BlobStore for TieredStore {
    async fn put_file(&self, key: &ObjectKey, path: &Path, sha256_hex: &str) -> StorageResult<()> {
        let tier = self.write_tier(key).await?;
        if tier.archive_opt.is_none() {
            return tier
                .store
                .put_file(key, path, sha256_hex)
                .await
                .and(match &tier.replica_opt {
                    Some(replica) => replica.put_file(key, path, sha256_hex).await,
                    None => Ok(()),
                });
        }
        let num_bytes = tokio::fs::metadata(path)
            .await
            .map_err(|error| {
                StorageError::new(StorageErrorKind::Io, "failed to write object")
                    .with_key(key)
                    .with_source(error)
            })?
            .len();
        tier.put_file(key, path, sha256_hex, num_bytes).await
    }

    async fn put_spooled(
        &self,
        key: &ObjectKey,
        path: &Path,
        sha256_hex: &str,
    ) -> StorageResult<()> {
        let tier = self.write_tier(key).await?;
        if tier.archive_opt.is_some() {
            return self.put_file(key, path, sha256_hex).await;
        }
        tier.store.put_spooled(key, path, sha256_hex).await?;
        match &tier.replica_opt {
            Some(replica) => replica.put_file(key, path, sha256_hex).await,
            None => Ok(()),
        }
    }

    async fn get(&self, key: &ObjectKey) -> StorageResult<(u64, ByteStream)> {
        self.read_with(key, |tier| async move { tier.store.get(key).await })
            .await
    }

    async fn get_range(&self, key: &ObjectKey, range: Range<u64>) -> StorageResult<Bytes> {
        self.read_with(key, |tier| {
            let range = range.clone();
            async move { tier.store.get_range(key, range).await }
        })
        .await
    }

    async fn head(&self, key: &ObjectKey) -> StorageResult<Option<ObjectMeta>> {
        let resolved = self.resolve(key, false).await?;
        let tier = self.tiers.get(&resolved.tier)?;
        match tier.store.head(key).await? {
            Some(meta) => Ok(Some(meta)),
            None => {
                let fresh = self.resolve(key, true).await?;
                self.tiers.get(&fresh.tier)?.store.head(key).await
            }
        }
    }

    /// Deletes every copy: the committed tier, both ends of a move in progress and the
    /// replicas. The catalog's tiering rows go first, so a move racing this delete fails to
    /// commit and removes its own copy.
    async fn delete(&self, key: &ObjectKey) -> StorageResult<()> {
        let object_tier = self
            .catalog
            .object_tier(key)
            .await
            .map_err(|error| catalog_error(error, key))?;
        self.catalog
            .forget_object(key)
            .await
            .map_err(|error| catalog_error(error, key))?;
        self.invalidate(key);
        let mut tier_names = vec![object_tier.tier];
        if let Some(tier_move) = object_tier.move_opt {
            tier_names.push(tier_move.from_tier);
            tier_names.push(tier_move.to_tier);
        }
        tier_names.sort();
        tier_names.dedup();
        for tier_name in tier_names {
            match self.tiers.get(&tier_name) {
                Ok(tier) => tier.delete(key).await?,
                Err(error) => {
                    tracing::warn!(%error, object_key = %key, "copy on an unconfigured tier left in place")
                }
            }
        }
        Ok(())
    }

    /// Starts the restore of every archived object among `keys` and fails with
    /// `RestoreRequired` when any is archived or still restoring.
    async fn check_readable(&self, keys: &[ObjectKey]) -> StorageResult<()> {
        self.resolve_all(keys).await?;
        let mut num_restoring = 0usize;
        for key in keys {
            let resolved = self.resolve(key, false).await?;
            let tier = self.tiers.get(&resolved.tier)?;
            let (true, Some(archive)) = (tier.requires_restore, &tier.archive_opt) else {
                continue;
            };
            match archive.head(key).await?.status {
                RestoreStatus::Archived => {
                    archive
                        .restore(key, self.restore.days, &self.restore.retrieval_tier)
                        .await?;
                    self.promote_after_restore(key).await;
                    num_restoring += 1;
                }
                RestoreStatus::InProgress => num_restoring += 1,
                RestoreStatus::Readable | RestoreStatus::Missing => {}
            }
        }
        match keys.first() {
            Some(first) if num_restoring > 0 => {
                tracing::info!(
                    num_restoring,
                    "read of archived objects refused until restored"
                );
                Err(self.restore_required(first))
            }
            _ => Ok(()),
        }
    }

    /// Lists the `hot` tier only (the start-up probe and orphan sweeps of ingest).
    async fn list(&self, prefix: &str) -> StorageResult<Vec<ObjectMeta>> {
        self.tiers.hot().store.list(prefix).await
    }

    fn describe(&self) -> String {
        let tiers: Vec<String> = self
            .tiers
            .iter()
            .map(|tier| format!("{}: {}", tier.name, tier.store.describe()))
            .collect();
        format!("tiered ({})", tiers.join(", "))
    }
}
