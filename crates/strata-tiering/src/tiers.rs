//! `TierSet`: the opened stores of every tier, `hot` included.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use strata_config::{HOT_TIER, S3Config, StorageConfig, TierConfig, TieringConfig};
use strata_storage::{BlobStore, StorageError, StorageErrorKind, StorageResult};
use strata_types::ObjectKey;

use crate::archive::ArchiveClient;

/// One tier: its store, its replica and, for S3 tiers with a storage class or an archive class,
/// the `aws-sdk-s3` client.
pub struct Tier {
    pub name: String,
    pub store: Arc<dyn BlobStore>,
    pub replica_opt: Option<Arc<dyn BlobStore>>,
    pub archive_opt: Option<ArchiveClient>,
    pub storage_class_opt: Option<String>,
    pub requires_restore: bool,
}

impl std::fmt::Debug for Tier {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Tier")
            .field("name", &self.name)
            .field("store", &self.store.describe())
            .field("requires_restore", &self.requires_restore)
            .finish_non_exhaustive()
    }
}

impl Tier {
    /// Returns a tier over a plain store (tests and the hot tier).
    pub fn plain(name: &str, store: Arc<dyn BlobStore>) -> Self {
        Self {
            name: name.to_owned(),
            store,
            replica_opt: None,
            archive_opt: None,
            storage_class_opt: None,
            requires_restore: false,
        }
    }

    /// Opens the tier `name` declared in `config`; `default_s3` is `[storage.s3]`.
    pub fn open(name: &str, config: &TierConfig, default_s3: &S3Config) -> StorageResult<Self> {
        let s3_config = config.s3.clone().unwrap_or_else(|| default_s3.clone());
        let open = |uri: &str| {
            strata_storage::open_blob_store(&StorageConfig {
                uri: uri.to_owned(),
                s3: s3_config.clone(),
            })
        };
        let store = open(&config.uri)?;
        let replica_opt = config.replica.as_deref().map(open).transpose()?;
        let archive_opt = match config.uri.strip_prefix("s3://") {
            Some(rest) if config.storage_class.is_some() || config.requires_restore => {
                let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
                Some(ArchiveClient::new(bucket, prefix, &s3_config)?)
            }
            _ => None,
        };
        Ok(Self {
            name: name.to_owned(),
            store,
            replica_opt,
            archive_opt,
            storage_class_opt: config.storage_class.clone(),
            requires_restore: config.requires_restore,
        })
    }

    /// Writes the verified local file `path` (`num_bytes`, `sha256_hex`) to this tier and to its
    /// replica.
    pub async fn put_file(
        &self,
        key: &ObjectKey,
        path: &Path,
        sha256_hex: &str,
        num_bytes: u64,
    ) -> StorageResult<()> {
        match &self.archive_opt {
            Some(archive) => {
                archive
                    .put_file(
                        key,
                        path,
                        sha256_hex,
                        num_bytes,
                        self.storage_class_opt.as_deref(),
                    )
                    .await?
            }
            None => self.store.put_file(key, path, sha256_hex).await?,
        }
        if let Some(replica) = &self.replica_opt {
            replica.put_file(key, path, sha256_hex).await?;
        }
        Ok(())
    }

    /// Deletes the object from this tier and its replica.
    pub async fn delete(&self, key: &ObjectKey) -> StorageResult<()> {
        self.store.delete(key).await?;
        if let Some(replica) = &self.replica_opt {
            replica.delete(key).await?;
        }
        Ok(())
    }
}

/// Every tier by name; `hot` always exists.
#[derive(Debug, Clone)]
pub struct TierSet {
    tiers: Arc<BTreeMap<String, Arc<Tier>>>,
}

impl TierSet {
    /// Returns the set of `hot` (the `[storage]` store) and `others`.
    pub fn new(hot: Arc<dyn BlobStore>, others: Vec<Tier>) -> Self {
        let mut tiers = BTreeMap::new();
        tiers.insert(HOT_TIER.to_owned(), Arc::new(Tier::plain(HOT_TIER, hot)));
        for tier in others {
            tiers.insert(tier.name.clone(), Arc::new(tier));
        }
        Self {
            tiers: Arc::new(tiers),
        }
    }

    /// Opens every tier declared in `config` besides `hot`.
    pub fn open(
        hot: Arc<dyn BlobStore>,
        config: &TieringConfig,
        default_s3: &S3Config,
    ) -> StorageResult<Self> {
        let others = config
            .tiers
            .iter()
            .map(|(name, tier_config)| Tier::open(name, tier_config, default_s3))
            .collect::<StorageResult<Vec<_>>>()?;
        Ok(Self::new(hot, others))
    }

    /// Returns the tier `name`, or a `Config` error naming it (a catalog row naming a tier
    /// removed from the configuration).
    pub fn get(&self, name: &str) -> StorageResult<&Arc<Tier>> {
        self.tiers.get(name).ok_or_else(|| {
            StorageError::new(
                StorageErrorKind::Config,
                format!("the catalog names the tier `{name}`, which is not configured"),
            )
        })
    }

    /// Returns the `hot` tier.
    pub fn hot(&self) -> &Arc<Tier> {
        self.tiers
            .get(HOT_TIER)
            .expect("a tier set always holds the hot tier")
    }

    /// Returns the tiers by name.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Tier>> {
        self.tiers.values()
    }
}
