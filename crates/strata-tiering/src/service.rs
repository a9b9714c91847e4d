//! `TieringService`: the policy scan and event follower that enqueue moves, the scheduled
//! fixity pass, restores, the status report and the deletion check.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde::Serialize;
use strata_catalog::{Catalog, EventKind, StudyFacts, StudyRetention, TierCatalog};
use strata_config::{HOT_TIER, TieringConfig};
use strata_types::{ObjectKey, StudyUid};
use tokio_util::sync::CancellationToken;

use crate::archive::RestoreStatus;
use crate::error::{TieringError, TieringResult};
use crate::fixity::{FixityReport, check_object};
use crate::mover::{MoveOutcome, Mover, RateLimiter};
use crate::policy::target_tier;
use crate::tiered_store::{TieredStore, now_ms};

/// The cursor of the event follower in `tiering_cursor`.
const EVENT_CURSOR: &str = "policy_events";
/// Studies read per page by scans, objects per page by fixity passes.
const PAGE_SIZE: u32 = 500;
const MS_PER_DAY: i64 = 86_400_000;

/// One move a scan wants.
#[derive(Debug, Clone, Serialize)]
pub struct PlannedMove {
    pub study_instance_uid: String,
    pub object_key: String,
    pub from_tier: String,
    pub to_tier: String,
    pub num_bytes: u64,
    /// The rule (or `pin`, `retention`, `default`) that decided.
    pub reason: String,
}

/// What a policy pass planned and did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ApplyReport {
    pub dry_run: bool,
    pub num_studies: u64,
    pub num_planned: u64,
    pub num_bytes_planned: u64,
    pub num_moved: u64,
    pub num_skipped: u64,
    pub num_failed: u64,
    /// Why moves failed (at most 100 listed).
    pub failures: Vec<String>,
    /// The planned moves (at most 1,000 listed).
    pub moves: Vec<PlannedMove>,
    pub elapsed_seconds: f64,
}

/// Objects, bytes, moves and fixity failures.
#[derive(Debug, Clone, Serialize)]
pub struct StatusReport {
    pub tiers: Vec<TierStatus>,
    pub num_pending_moves: u64,
    pub pending_moves: Vec<PendingMove>,
    pub fixity_failures: Vec<crate::fixity::FixityFailure>,
}

/// One tier in the status report.
#[derive(Debug, Clone, Serialize)]
pub struct TierStatus {
    pub name: String,
    pub store: String,
    pub requires_restore: bool,
    pub num_objects: u64,
    pub num_bytes: u64,
}

/// One journaled move in the status report.
#[derive(Debug, Clone, Serialize)]
pub struct PendingMove {
    pub object_key: String,
    pub from_tier: String,
    pub to_tier: String,
    pub state: &'static str,
}

/// The outcome of a study restore request.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RestoreReport {
    pub num_objects: u64,
    /// Restores started or already running.
    pub num_restoring: u64,
    /// Objects readable now.
    pub num_readable: u64,
    /// Seconds to wait before reading, when anything is restoring.
    pub retry_after_seconds: Option<u64>,
    /// Until when the study is pinned to hot (Unix ms), when promotion was asked.
    pub pinned_until_ms: Option<i64>,
}

/// The tiering service of a node; see the module documentation.
pub struct TieringService {
    config: TieringConfig,
    catalog: Arc<dyn Catalog>,
    tier_catalog: Arc<dyn TierCatalog>,
    store: Arc<TieredStore>,
    mover: Mover,
    spool_dir: PathBuf,
}

impl std::fmt::Debug for TieringService {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("TieringService")
            .finish_non_exhaustive()
    }
}

impl TieringService {
    /// Returns the service over `store`'s tiers; moves are staged in `spool_dir`.
    pub fn new(
        config: TieringConfig,
        catalog: Arc<dyn Catalog>,
        tier_catalog: Arc<dyn TierCatalog>,
        store: Arc<TieredStore>,
        spool_dir: PathBuf,
    ) -> Self {
        let mover = Mover::new(
            store.tiers().clone(),
            tier_catalog.clone(),
            spool_dir.clone(),
            RateLimiter::new(config.max_moves_per_second, config.max_bytes_per_second),
        );
        Self {
            config,
            catalog,
            tier_catalog,
            store,
            mover,
            spool_dir,
        }
    }

    /// Returns the mover (crash tests inject failures through it).
    pub fn mover(&self) -> &Mover {
        &self.mover
    }

    /// Returns the tiered store.
    pub fn store(&self) -> &Arc<TieredStore> {
        &self.store
    }

    /// Evaluates the rules for every study; unless `dry_run`, runs the moves with the
    /// configured concurrency.
    pub async fn apply(&self, dry_run: bool) -> TieringResult<ApplyReport> {
        let started = Instant::now();
        let mut report = ApplyReport {
            dry_run,
            ..ApplyReport::default()
        };
        if !dry_run {
            self.mover.finish_committed().await?;
        }
        let mut after: Option<String> = None;
        loop {
            let page = self
                .tier_catalog
                .study_facts_after(after.as_deref(), PAGE_SIZE)
                .await?;
            let Some(last) = page.last() else { break };
            after = Some(last.study_instance_uid.clone());
            for facts in &page {
                self.apply_study(facts, dry_run, &mut report).await?;
            }
        }
        report.elapsed_seconds = started.elapsed().as_secs_f64();
        Ok(report)
    }

    /// Plans (and unless `dry_run` runs) the moves of one study.
    async fn apply_study(
        &self,
        facts: &StudyFacts,
        dry_run: bool,
        report: &mut ApplyReport,
    ) -> TieringResult<()> {
        report.num_studies += 1;
        let placement = target_tier(&self.config, facts, now_ms());
        let study: StudyUid = match facts.study_instance_uid.parse() {
            Ok(study) => study,
            Err(_) => return Ok(()),
        };
        let placements = self.tier_catalog.study_placements(&study).await?;
        let to_move: Vec<_> = placements
            .into_iter()
            .filter(|object| object.tier != placement.tier)
            .collect();
        for object in &to_move {
            report.num_planned += 1;
            report.num_bytes_planned += object.size_bytes;
            if report.moves.len() < 1_000 {
                report.moves.push(PlannedMove {
                    study_instance_uid: facts.study_instance_uid.clone(),
                    object_key: object.object_key.to_string(),
                    from_tier: object.tier.clone(),
                    to_tier: placement.tier.clone(),
                    num_bytes: object.size_bytes,
                    reason: placement.reason.clone(),
                });
            }
        }
        if dry_run || to_move.is_empty() {
            return Ok(());
        }
        let target = placement.tier.clone();
        let outcomes: Vec<TieringResult<MoveOutcome>> = futures::stream::iter(to_move)
            .map(|object| self.move_one(object, target.clone()))
            .buffer_unordered(self.config.move_concurrency.max(1))
            .collect()
            .await;
        for outcome in outcomes {
            match outcome {
                Ok(MoveOutcome::Moved) => report.num_moved += 1,
                Ok(_) | Err(TieringError::RestorePending { .. }) => report.num_skipped += 1,
                Err(TieringError::InjectedCrash(step)) => {
                    return Err(TieringError::InjectedCrash(step));
                }
                Err(error) => {
                    report.num_failed += 1;
                    if report.failures.len() < 100 {
                        report.failures.push(error.to_string());
                    }
                    tracing::warn!(%error, "object move failed; it is retried at the next scan");
                }
            }
        }
        Ok(())
    }

    fn move_one(
        &self,
        object: strata_catalog::ObjectPlacement,
        target: String,
    ) -> futures::future::BoxFuture<'_, TieringResult<MoveOutcome>> {
        Box::pin(async move {
            let outcome = self.mover.move_object(&object, &target).await;
            self.store.invalidate(&object.object_key);
            outcome
        })
    }

    /// Applies the rules to the studies named by new events of the catalog's log, from the
    /// persisted cursor on. Returns the number of events read.
    pub async fn follow_events(&self) -> TieringResult<usize> {
        let cursor = self.tier_catalog.tiering_cursor(EVENT_CURSOR).await?;
        let events = self.catalog.events_after(cursor, 1_000).await?;
        let Some(last) = events.last() else {
            return Ok(0);
        };
        let last_sequence = last.sequence;
        let studies: BTreeSet<StudyUid> = events
            .iter()
            .filter(|event| event.kind == EventKind::InstanceStored)
            .map(|event| event.study_instance_uid.clone())
            .collect();
        let mut report = ApplyReport::default();
        for study in studies {
            if let Some(facts) = self.tier_catalog.study_facts(&study).await? {
                self.apply_study(&facts, false, &mut report).await?;
            }
        }
        self.tier_catalog
            .set_tiering_cursor(EVENT_CURSOR, last_sequence)
            .await?;
        Ok(events.len())
    }

    /// Checks up to `limit` objects (all when `None`), records the results and repairs from
    /// replicas.
    pub async fn fixity_check(
        &self,
        deep: bool,
        limit: Option<u64>,
    ) -> TieringResult<FixityReport> {
        let mut report = FixityReport::default();
        let mut after: Option<ObjectKey> = None;
        'pages: loop {
            let page = self
                .tier_catalog
                .placements_after(after.as_ref(), PAGE_SIZE)
                .await?;
            let Some(last) = page.last() else { break };
            after = Some(last.object_key.clone());
            for placement in &page {
                if limit.is_some_and(|limit| report.num_checked >= limit) {
                    break 'pages;
                }
                let record =
                    check_object(self.store.tiers(), placement, deep, &self.spool_dir).await?;
                self.tier_catalog.record_fixity(&record).await?;
                strata_telemetry::metrics::record_fixity_check(record.status.as_str());
                report.add(&record);
            }
        }
        tracing::info!(
            deep,
            num_checked = report.num_checked,
            num_ok = report.num_ok,
            num_repaired = report.num_repaired,
            num_failed = report.failures.len(),
            "fixity pass done"
        );
        Ok(report)
    }

    /// Returns objects and bytes per tier, the move journal and recent fixity failures.
    pub async fn status(&self) -> TieringResult<StatusReport> {
        let usage = self.tier_catalog.tier_usage().await?;
        let tiers = self
            .store
            .tiers()
            .iter()
            .map(|tier| {
                let used = usage.iter().find(|usage| usage.tier == tier.name);
                TierStatus {
                    name: tier.name.clone(),
                    store: tier.store.describe(),
                    requires_restore: tier.requires_restore,
                    num_objects: used.map_or(0, |used| used.num_objects),
                    num_bytes: used.map_or(0, |used| used.num_bytes),
                }
            })
            .collect();
        let moves = self.tier_catalog.moves().await?;
        let fixity_failures = self
            .tier_catalog
            .fixity_failures(100)
            .await?
            .iter()
            .map(|record| crate::fixity::FixityFailure {
                object_key: record.object_key.to_string(),
                tier: record.tier.clone(),
                status: record.status.as_str(),
                detail: record.detail.clone(),
            })
            .collect();
        Ok(StatusReport {
            tiers,
            num_pending_moves: moves.len() as u64,
            pending_moves: moves
                .iter()
                .take(100)
                .map(|tier_move| PendingMove {
                    object_key: tier_move.object_key.to_string(),
                    from_tier: tier_move.from_tier.clone(),
                    to_tier: tier_move.to_tier.clone(),
                    state: tier_move.state.as_str(),
                })
                .collect(),
            fixity_failures,
        })
    }

    /// Starts restores of every archived object of a study; with `promote_days`, pins the
    /// study to `hot` for that many days so the next scan brings it back once restored.
    pub async fn restore_study(
        &self,
        study: &StudyUid,
        promote_days: Option<u32>,
    ) -> TieringResult<RestoreReport> {
        let placements = self.tier_catalog.study_placements(study).await?;
        if placements.is_empty() {
            return Err(TieringError::NotFound(format!("no study {study}")));
        }
        let settings = self.store.restore_settings().clone();
        let mut report = RestoreReport::default();
        for placement in &placements {
            report.num_objects += 1;
            let tier = self.store.tiers().get(&placement.tier)?;
            let archive = match (&tier.archive_opt, tier.requires_restore) {
                (Some(archive), true) => archive,
                _ => {
                    report.num_readable += 1;
                    continue;
                }
            };
            match archive.head(&placement.object_key).await?.status {
                RestoreStatus::Archived => {
                    archive
                        .restore(
                            &placement.object_key,
                            settings.days,
                            &settings.retrieval_tier,
                        )
                        .await?;
                    report.num_restoring += 1;
                }
                RestoreStatus::InProgress => report.num_restoring += 1,
                RestoreStatus::Readable | RestoreStatus::Missing => report.num_readable += 1,
            }
        }
        if report.num_restoring > 0 {
            report.retry_after_seconds = Some(settings.retry_after_seconds);
        }
        if let Some(days) = promote_days {
            let mut retention = self.tier_catalog.study_retention(study).await?;
            let until_ms = now_ms() + i64::from(days) * MS_PER_DAY;
            retention.pinned_tier = Some(HOT_TIER.to_owned());
            retention.pinned_until_ms = Some(until_ms);
            self.tier_catalog
                .set_study_retention(study, &retention)
                .await?;
            report.pinned_until_ms = Some(until_ms);
        }
        tracing::info!(study_instance_uid = %study, num_restoring = report.num_restoring, "study restore requested");
        Ok(report)
    }

    /// Replaces a study's legal hold and retention date (the pin is kept).
    pub async fn set_retention(
        &self,
        study: &StudyUid,
        legal_hold: bool,
        retain_until_ms: Option<i64>,
    ) -> TieringResult<StudyRetention> {
        let mut retention = self.tier_catalog.study_retention(study).await?;
        retention.legal_hold = legal_hold;
        retention.retain_until_ms = retain_until_ms;
        self.tier_catalog
            .set_study_retention(study, &retention)
            .await?;
        Ok(retention)
    }

    /// Runs the service until `shutdown`: recovers interrupted moves, then follows the event
    /// log, scans every `scan_interval_seconds` and runs scheduled fixity passes.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        match self.mover.recover().await {
            Ok(0) => {}
            Ok(num_resolved) => tracing::info!(num_resolved, "interrupted moves resolved"),
            Err(error) => tracing::error!(%error, "failed to resolve interrupted moves"),
        }
        let poll_interval = Duration::from_millis(self.config.poll_interval_ms);
        let scan_interval = Duration::from_secs(self.config.scan_interval_seconds);
        let fixity_interval_opt = (self.config.fixity_interval_hours > 0)
            .then(|| Duration::from_secs(self.config.fixity_interval_hours * 3600));
        let mut last_scan: Option<Instant> = None;
        let mut last_fixity = Instant::now();
        loop {
            if shutdown.is_cancelled() {
                break;
            }
            if last_scan.is_none_or(|at| at.elapsed() >= scan_interval) {
                last_scan = Some(Instant::now());
                match self.apply(false).await {
                    Ok(report) => {
                        tracing::info!(
                            num_studies = report.num_studies,
                            num_moved = report.num_moved,
                            num_failed = report.num_failed,
                            "tiering scan done"
                        );
                        strata_telemetry::metrics::record_tier_moves(
                            report.num_moved,
                            report.num_failed,
                        );
                    }
                    Err(error) => tracing::warn!(%error, "tiering scan failed"),
                }
                // Objects and bytes per tier for `/metrics` (one aggregate query per scan).
                match self.tier_catalog.tier_usage().await {
                    Ok(usage) => {
                        for tier in self.store.tiers().iter() {
                            let used = usage.iter().find(|usage| usage.tier == tier.name);
                            strata_telemetry::metrics::set_tier_usage(
                                &tier.name,
                                used.map_or(0, |used| used.num_objects),
                                used.map_or(0, |used| used.num_bytes),
                            );
                        }
                    }
                    Err(error) => tracing::warn!(%error, "failed to measure tier usage"),
                }
            }
            if let Err(error) = self.follow_events().await {
                tracing::warn!(%error, "tiering failed to follow the event log");
            }
            if let Some(fixity_interval) = fixity_interval_opt
                && last_fixity.elapsed() >= fixity_interval
            {
                last_fixity = Instant::now();
                if let Err(error) = self.fixity_check(self.config.fixity_deep, None).await {
                    tracing::warn!(%error, "scheduled fixity pass failed");
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep(poll_interval) => {}
            }
        }
        tracing::info!("tiering service stopped");
    }
}

/// Refuses the deletion of a study under legal hold, before its retention date, or within
/// `min_retention_days` of its ingest. Call before [`Catalog::delete`] of a study, series or
/// instance of it; an unknown study is allowed (the delete answers 404 itself).
pub async fn check_deletion_allowed(
    tier_catalog: &dyn TierCatalog,
    config: &TieringConfig,
    study: &StudyUid,
) -> TieringResult<()> {
    let Some(facts) = tier_catalog.study_facts(study).await? else {
        return Ok(());
    };
    let now = now_ms();
    if facts.retention.legal_hold {
        return Err(TieringError::DeletionRefused(format!(
            "study {study} is under legal hold"
        )));
    }
    if let Some(until_ms) = facts.retention.retain_until_ms
        && until_ms > now
    {
        return Err(TieringError::DeletionRefused(format!(
            "study {study} is retained until {until_ms} (Unix ms)"
        )));
    }
    let retained_until = facts.first_ingest_ms + i64::from(config.min_retention_days) * MS_PER_DAY;
    if config.min_retention_days > 0 && retained_until > now {
        return Err(TieringError::DeletionRefused(format!(
            "study {study} is within the minimum retention of {} days",
            config.min_retention_days
        )));
    }
    Ok(())
}
