//! The mover: copy → verify at the destination → commit in the catalog → delete the source,
//! journaled so that a crash at any point is finished or rolled back by [`Mover::recover`].
//!
//! Invariant: outside the move journal, an object exists only on its committed tier. A
//! `copying` row means the committed tier is still the source and the destination may hold a
//! copy, which recovery deletes. A `committed` row means the committed tier is the destination
//! and the source may still hold a copy, which recovery deletes. Readers only ever read the
//! committed tier, which holds a verified, complete copy at every instant.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use sha2::{Digest, Sha256};
use strata_catalog::{MoveState, ObjectPlacement, TierCatalog};
use strata_storage::{StorageError, StorageErrorKind};
use strata_types::ObjectKey;
use tokio::io::AsyncWriteExt;

use crate::archive::RestoreStatus;
use crate::error::{TieringError, TieringResult};
use crate::tiers::{Tier, TierSet};

/// The steps of a move, in order; a crash can be injected after each (tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MoveStep {
    /// The move is in the journal (`copying`).
    Journaled,
    /// The destination holds a copy.
    Copied,
    /// The destination copy matches the recorded SHA-256.
    Verified,
    /// The catalog names the destination (`committed`).
    Committed,
    /// The source copy is deleted.
    SourceDeleted,
}

/// How a move ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MoveOutcome {
    /// The object is on the destination and nowhere else.
    Moved,
    /// Nothing was done: the object is not on the expected tier or another move runs.
    Skipped,
    /// The object was deleted during the move; the destination copy was removed.
    Cancelled,
}

/// Global pacing of moves: at most `max_moves_per_second` moves and `max_bytes_per_second`
/// bytes (0: unlimited), with bursts of up to one second's worth (a virtual-clock limiter:
/// idle time does not accumulate into a longer burst).
#[derive(Debug)]
pub struct RateLimiter {
    max_moves_per_second: u32,
    max_bytes_per_second: u64,
    /// The virtual time at which the next move would be on schedule.
    next_at: Mutex<Option<tokio::time::Instant>>,
}

/// The burst a limiter allows.
const RATE_BURST: Duration = Duration::from_secs(1);

impl RateLimiter {
    /// Returns a limiter; 0 disables a limit.
    pub fn new(max_moves_per_second: u32, max_bytes_per_second: u64) -> Self {
        Self {
            max_moves_per_second,
            max_bytes_per_second,
            next_at: Mutex::new(None),
        }
    }

    /// Waits until one more move of `num_bytes` keeps within the limits.
    pub async fn acquire(&self, num_bytes: u64) {
        let mut cost = Duration::ZERO;
        if self.max_moves_per_second > 0 {
            cost = cost.max(Duration::from_secs_f64(
                1.0 / f64::from(self.max_moves_per_second),
            ));
        }
        if self.max_bytes_per_second > 0 {
            cost = cost.max(Duration::from_secs_f64(
                num_bytes as f64 / self.max_bytes_per_second as f64,
            ));
        }
        if cost.is_zero() {
            return;
        }
        let wait = {
            let mut next_at = self
                .next_at
                .lock()
                .expect("rate limiter lock is never poisoned");
            let now = tokio::time::Instant::now();
            let scheduled = next_at.map_or(now, |at| at.max(now));
            *next_at = Some(scheduled + cost);
            scheduled
                .saturating_duration_since(now)
                .saturating_sub(RATE_BURST)
        };
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

/// Moves objects between tiers; see the module documentation.
pub struct Mover {
    tiers: TierSet,
    catalog: Arc<dyn TierCatalog>,
    spool_dir: PathBuf,
    limiter: RateLimiter,
    crash_after: Mutex<Option<MoveStep>>,
}

impl std::fmt::Debug for Mover {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("Mover").finish_non_exhaustive()
    }
}

impl Mover {
    /// Returns a mover that stages copies in `spool_dir`.
    pub fn new(
        tiers: TierSet,
        catalog: Arc<dyn TierCatalog>,
        spool_dir: PathBuf,
        limiter: RateLimiter,
    ) -> Self {
        Self {
            tiers,
            catalog,
            spool_dir,
            limiter,
            crash_after: Mutex::new(None),
        }
    }

    /// Makes the next moves stop dead after `step`, as if the process were killed there,
    /// leaving the journal and the stores as they are (crash tests).
    pub fn crash_after(&self, step: Option<MoveStep>) {
        *self
            .crash_after
            .lock()
            .expect("crash hook lock is never poisoned") = step;
    }

    fn checkpoint(&self, step: MoveStep) -> TieringResult<()> {
        let crash = *self
            .crash_after
            .lock()
            .expect("crash hook lock is never poisoned");
        if crash == Some(step) {
            return Err(TieringError::InjectedCrash(step));
        }
        Ok(())
    }

    /// Moves one object to `to_tier`; see the module documentation.
    #[tracing::instrument(name = "tiering.move", skip_all, fields(object_key = %placement.object_key, from = %placement.tier, to = to_tier))]
    pub async fn move_object(
        &self,
        placement: &ObjectPlacement,
        to_tier: &str,
    ) -> TieringResult<MoveOutcome> {
        let key = &placement.object_key;
        let source = self.tiers.get(&placement.tier)?.clone();
        let destination = self.tiers.get(to_tier)?.clone();
        if source.name == destination.name {
            return Ok(MoveOutcome::Skipped);
        }
        if source.requires_restore
            && let Some(archive) = &source.archive_opt
        {
            let head = archive.head(key).await?;
            if matches!(
                head.status,
                RestoreStatus::Archived | RestoreStatus::InProgress
            ) {
                return Err(TieringError::RestorePending { key: key.clone() });
            }
        }
        self.limiter.acquire(placement.size_bytes).await;
        if !self
            .catalog
            .begin_move(key, &source.name, &destination.name)
            .await?
        {
            return Ok(MoveOutcome::Skipped);
        }
        self.checkpoint(MoveStep::Journaled)?;
        match self.copy_and_verify(placement, &source, &destination).await {
            Ok(()) => {}
            Err(TieringError::InjectedCrash(step)) => {
                return Err(TieringError::InjectedCrash(step));
            }
            Err(error) => {
                // Roll back now; if that fails too, recovery rolls back later.
                if destination.delete(key).await.is_ok() {
                    self.catalog.end_move(key).await?;
                }
                return Err(error);
            }
        }
        if !self.catalog.commit_move(key).await? {
            destination.delete(key).await?;
            return Ok(MoveOutcome::Cancelled);
        }
        self.checkpoint(MoveStep::Committed)?;
        source.delete(key).await?;
        self.checkpoint(MoveStep::SourceDeleted)?;
        self.catalog.end_move(key).await?;
        tracing::debug!("object moved");
        Ok(MoveOutcome::Moved)
    }

    async fn copy_and_verify(
        &self,
        placement: &ObjectPlacement,
        source: &Tier,
        destination: &Tier,
    ) -> TieringResult<()> {
        let key = &placement.object_key;
        let staged = tempfile::NamedTempFile::new_in(&self.spool_dir).map_err(|error| {
            TieringError::Storage(
                StorageError::new(StorageErrorKind::Io, "failed to stage object")
                    .with_key(key)
                    .with_source(error),
            )
        })?;
        let (num_bytes, sha256_hex) =
            download_hashing(source, key, Some(staged.path().to_path_buf())).await?;
        if sha256_hex != placement.sha256 || num_bytes != placement.size_bytes {
            return Err(TieringError::SourceCorrupt {
                key: key.clone(),
                detail: format!(
                    "source on tier `{}` has {num_bytes} bytes with sha256 {sha256_hex}, \
                     expected {} bytes with {}",
                    source.name, placement.size_bytes, placement.sha256
                ),
            });
        }
        destination
            .put_file(key, staged.path(), &placement.sha256, num_bytes)
            .await?;
        self.checkpoint(MoveStep::Copied)?;
        verify_copy(destination, placement).await?;
        self.checkpoint(MoveStep::Verified)?;
        Ok(())
    }

    /// Finishes the `committed` moves whose source deletion failed (store unavailable): safe
    /// at any time, unlike rolling back `copying` rows, which may be live. Returns how many.
    pub async fn finish_committed(&self) -> TieringResult<usize> {
        let mut num_finished = 0;
        for tier_move in self.catalog.moves().await? {
            if tier_move.state != MoveState::Committed {
                continue;
            }
            let Ok(source) = self.tiers.get(&tier_move.from_tier) else {
                continue;
            };
            source.delete(&tier_move.object_key).await?;
            self.catalog.end_move(&tier_move.object_key).await?;
            num_finished += 1;
        }
        Ok(num_finished)
    }

    /// Finishes or rolls back every journaled move (run at start-up, before any new move):
    /// a `copying` move loses its destination copy, a `committed` one its source copy.
    /// Returns the number of journal rows resolved.
    pub async fn recover(&self) -> TieringResult<usize> {
        let moves = self.catalog.moves().await?;
        let mut num_resolved = 0;
        for tier_move in moves {
            let key = &tier_move.object_key;
            let (stale_tier, action) = match tier_move.state {
                MoveState::Copying => (&tier_move.to_tier, "rolled back"),
                MoveState::Committed => (&tier_move.from_tier, "finished"),
            };
            match self.tiers.get(stale_tier) {
                Ok(tier) => tier.delete(key).await?,
                Err(error) => {
                    tracing::warn!(%error, object_key = %key, "journaled move names an unconfigured tier; left in the journal");
                    continue;
                }
            }
            self.catalog.end_move(key).await?;
            tracing::info!(object_key = %key, from = %tier_move.from_tier, to = %tier_move.to_tier, "interrupted move {action}");
            num_resolved += 1;
        }
        Ok(num_resolved)
    }
}

/// Reads the object from `tier`, hashing it, into `path_opt` when set; returns its size and
/// SHA-256.
pub(crate) async fn download_hashing(
    tier: &Tier,
    key: &ObjectKey,
    path_opt: Option<PathBuf>,
) -> TieringResult<(u64, String)> {
    let (_, mut stream) = tier.store.get(key).await?;
    let mut hasher = Sha256::new();
    let mut num_bytes = 0u64;
    let mut file_opt = match &path_opt {
        Some(path) => Some(tokio::fs::File::create(path).await.map_err(|error| {
            StorageError::new(StorageErrorKind::Io, "failed to stage object")
                .with_key(key)
                .with_source(error)
        })?),
        None => None,
    };
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        hasher.update(&chunk);
        num_bytes += chunk.len() as u64;
        if let Some(file) = &mut file_opt {
            file.write_all(&chunk).await.map_err(|error| {
                StorageError::new(StorageErrorKind::Io, "failed to stage object")
                    .with_key(key)
                    .with_source(error)
            })?;
        }
    }
    if let Some(mut file) = file_opt {
        file.flush().await.map_err(|error| {
            StorageError::new(StorageErrorKind::Io, "failed to stage object")
                .with_key(key)
                .with_source(error)
        })?;
    }
    Ok((num_bytes, hex::encode(hasher.finalize())))
}

/// Checks the destination copy: read back and hashed, or, on an archive tier that cannot be
/// read, the size and the SHA-256 metadata (the server already verified the request checksum).
async fn verify_copy(destination: &Tier, placement: &ObjectPlacement) -> TieringResult<()> {
    let key = &placement.object_key;
    let mismatch = |detail: String| TieringError::VerifyFailed {
        key: key.clone(),
        detail,
    };
    if let Some(archive) = &destination.archive_opt {
        let head = archive.head(key).await?;
        if head.status == RestoreStatus::Missing {
            return Err(mismatch("destination copy is missing".to_owned()));
        }
        if head.size_bytes != placement.size_bytes
            || head.sha256_opt.as_deref() != Some(placement.sha256.as_str())
        {
            return Err(mismatch(format!(
                "destination has {} bytes with sha256 metadata {:?}",
                head.size_bytes, head.sha256_opt
            )));
        }
        if head.status != RestoreStatus::Archived && !destination.requires_restore {
            let (num_bytes, sha256_hex) = download_hashing(destination, key, None).await?;
            if sha256_hex != placement.sha256 || num_bytes != placement.size_bytes {
                return Err(mismatch(format!(
                    "destination reads back as sha256 {sha256_hex}"
                )));
            }
        }
        return Ok(());
    }
    let (num_bytes, sha256_hex) = download_hashing(destination, key, None).await?;
    if sha256_hex != placement.sha256 || num_bytes != placement.size_bytes {
        return Err(mismatch(format!(
            "destination reads back as {num_bytes} bytes with sha256 {sha256_hex}"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn test_rate_limiter_paces_after_one_second_of_burst() {
        let limiter = RateLimiter::new(100, 0);
        let started = tokio::time::Instant::now();
        for _ in 0..150 {
            limiter.acquire(0).await;
        }
        // 150 moves at 100/s with a burst of 100: about 0.5 s.
        let elapsed = started.elapsed();
        assert!(elapsed >= Duration::from_millis(450), "{elapsed:?}");
        assert!(elapsed <= Duration::from_millis(1_500), "{elapsed:?}");
        // Idle time does not bank a longer burst.
        tokio::time::sleep(Duration::from_millis(1_200)).await;
        let started = tokio::time::Instant::now();
        for _ in 0..150 {
            limiter.acquire(0).await;
        }
        assert!(started.elapsed() >= Duration::from_millis(450));
        let bytes_limiter = RateLimiter::new(0, 1_000);
        let started = tokio::time::Instant::now();
        for _ in 0..3 {
            bytes_limiter.acquire(1_000).await;
        }
        assert!(started.elapsed() >= Duration::from_millis(900));
        let unlimited = RateLimiter::new(0, 0);
        let started = tokio::time::Instant::now();
        unlimited.acquire(u64::MAX).await;
        assert!(started.elapsed() < Duration::from_millis(50));
    }
}
