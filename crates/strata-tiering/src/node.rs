//! `TieringNode`: what `strata serve` needs from tiering, built from the node configuration.

use std::sync::Arc;
use std::time::Duration;

use strata_catalog::{Catalog, TierCatalog};
use strata_config::NodeConfig;
use strata_storage::{BlobStore, StorageError, StorageErrorKind, StorageResult};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::service::TieringService;
use crate::tiered_store::{RestoreSettings, TieredStore};
use crate::tiers::TierSet;

/// The tiers of a node, its tiering service and the store its readers use.
pub struct TieringNode {
    tiered: Arc<TieredStore>,
    service: Arc<TieringService>,
    hot: Arc<dyn BlobStore>,
    tiers_configured: bool,
    enabled: bool,
    access_flush: Duration,
}

impl std::fmt::Debug for TieringNode {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("TieringNode")
            .field("tiers_configured", &self.tiers_configured)
            .finish_non_exhaustive()
    }
}

impl TieringNode {
    /// Opens the tiers of `[tiering.tiers]` beside `hot` (the `[storage]` store). Runs
    /// blocking calls (creating directories): call it at start-up.
    pub fn open(
        config: &NodeConfig,
        hot: Arc<dyn BlobStore>,
        catalog: Arc<dyn Catalog>,
        tier_catalog: Arc<dyn TierCatalog>,
    ) -> StorageResult<Self> {
        let tiering = &config.tiering;
        let tiers = TierSet::open(hot.clone(), tiering, &config.storage.s3)?;
        let restore = RestoreSettings {
            days: tiering.restore_days,
            retrieval_tier: tiering.restore_retrieval_tier.clone(),
            retry_after_seconds: tiering.restore_retry_after_seconds,
            promote_days: tiering.restore_promote_days,
        };
        let tiered = Arc::new(TieredStore::new(tiers, tier_catalog.clone(), restore));
        let spool_dir = config.spool_dir().join("tiering");
        std::fs::create_dir_all(&spool_dir).map_err(|error| {
            StorageError::new(
                StorageErrorKind::Io,
                format!("failed to create `{}`", spool_dir.display()),
            )
            .with_source(error)
        })?;
        let service = Arc::new(TieringService::new(
            tiering.clone(),
            catalog,
            tier_catalog,
            tiered.clone(),
            spool_dir,
        ));
        Ok(Self {
            tiered,
            service,
            hot,
            tiers_configured: !tiering.tiers.is_empty(),
            enabled: tiering.enabled,
            access_flush: Duration::from_secs(tiering.access_flush_seconds.max(1)),
        })
    }

    /// Returns the store every reader and writer uses: the tiered store when tiers are
    /// configured, else `[storage]` itself (no catalog lookup per read).
    pub fn store(&self) -> Arc<dyn BlobStore> {
        if self.tiers_configured {
            self.tiered.clone()
        } else {
            self.hot.clone()
        }
    }

    /// Returns the tiering service.
    pub fn service(&self) -> &Arc<TieringService> {
        &self.service
    }

    /// Returns the admin router.
    pub fn router(&self) -> axum::Router {
        crate::admin::router(self.service.clone())
    }

    /// Starts the background tasks until `shutdown`: the flush of study reads (when tiers are
    /// configured) and, when `run_service` (the tiering role) and `[tiering] enabled`, the
    /// tiering service.
    pub fn spawn(&self, run_service: bool, shutdown: CancellationToken) -> Vec<JoinHandle<()>> {
        let mut tasks = Vec::new();
        if self.tiers_configured {
            tasks.push(tokio::spawn(
                self.tiered
                    .clone()
                    .run_access_flush(self.access_flush, shutdown.clone()),
            ));
        }
        if run_service && self.enabled {
            tasks.push(tokio::spawn(self.service.clone().run(shutdown)));
        }
        tasks
    }
}
