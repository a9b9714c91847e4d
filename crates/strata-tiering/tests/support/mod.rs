//! A tiering sandbox: a SQLite catalog, a hot and a cold tier (with a replica) on S3-compatible
//! stores, objects with real bytes and checksums, and helpers to assert where they live.

#![allow(dead_code)]

use std::sync::Arc;

use futures::StreamExt;
use sha2::{Digest, Sha256};
use strata_catalog::conformance::synthetic_record;
use strata_catalog::{Catalog, SqlCatalog, TierCatalog};
use strata_config::{TierConfig, TierRule, TieringConfig};
use strata_storage::BlobStore;
use strata_tiering::{RestoreSettings, Tier, TierSet, TieredStore, TieringService};
use strata_types::{ObjectKey, StudyUid};

/// One seeded object.
#[derive(Debug, Clone)]
pub struct Seeded {
    pub key: ObjectKey,
    pub bytes: Vec<u8>,
    pub study: StudyUid,
}

pub struct Sandbox {
    pub directory: tempfile::TempDir,
    pub catalog: Arc<SqlCatalog>,
    pub hot: Arc<dyn BlobStore>,
    pub cold: Arc<dyn BlobStore>,
    pub replica: Arc<dyn BlobStore>,
    pub objects: Vec<Seeded>,
    pub config: TieringConfig,
}

/// A configuration with a tier `cold` and one rule sending every study there.
pub fn all_cold_config() -> TieringConfig {
    let mut config = TieringConfig::default();
    config.tiers.insert(
        "cold".to_owned(),
        TierConfig {
            uri: "s3://test/cold".to_owned(),
            s3: None,
            storage_class: None,
            requires_restore: false,
            replica: None,
        },
    );
    config.rules.push(TierRule {
        name: "everything-cold".to_owned(),
        tier: "cold".to_owned(),
        ..TierRule::default()
    });
    config
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

impl Sandbox {
    /// Opens a sandbox over the given stores and seeds `num_objects` instances in 2 studies
    /// (bytes on hot, rows in the catalog).
    pub async fn new(
        hot: Arc<dyn BlobStore>,
        cold: Arc<dyn BlobStore>,
        replica: Arc<dyn BlobStore>,
        num_objects: u32,
        object_bytes: usize,
    ) -> Self {
        let directory = tempfile::tempdir().unwrap();
        let uri = format!("sqlite://{}", directory.path().join("catalog.db").display());
        let catalog = Arc::new(SqlCatalog::connect(&uri, 4).await.unwrap());
        let mut objects = Vec::new();
        for index in 0..num_objects {
            let study_number = 1 + index % 2;
            let mut bytes = format!("DICM object {index} ").into_bytes();
            bytes.resize(object_bytes.max(bytes.len()), (index % 251) as u8);
            let sha256 = sha256_hex(&bytes);
            let key = ObjectKey::for_content(&sha256);
            let path = directory.path().join(format!("seed-{index}"));
            std::fs::write(&path, &bytes).unwrap();
            hot.put_file(&key, &path, &sha256).await.unwrap();
            let mut record = synthetic_record(study_number, 1, index + 1);
            record.object.key = key.clone();
            record.object.sha256 = sha256;
            record.object.size_bytes = bytes.len() as u64;
            catalog.store_instance(&record).await.unwrap();
            objects.push(Seeded {
                key,
                bytes,
                study: record.study.study_instance_uid.clone(),
            });
        }
        Self {
            directory,
            catalog,
            hot,
            cold,
            replica,
            objects,
            config: all_cold_config(),
        }
    }

    pub fn tier_catalog(&self) -> Arc<dyn TierCatalog> {
        self.catalog.clone()
    }

    pub fn tiers(&self) -> TierSet {
        let mut cold = Tier::plain("cold", self.cold.clone());
        cold.replica_opt = Some(self.replica.clone());
        TierSet::new(self.hot.clone(), vec![cold])
    }

    /// A fresh service (as after a restart): new store, mover and caches.
    pub fn service(&self) -> Arc<TieringService> {
        self.service_with(self.tiers(), RestoreSettings::default())
    }

    /// A fresh service over `tiers`.
    pub fn service_with(&self, tiers: TierSet, restore: RestoreSettings) -> Arc<TieringService> {
        let store = Arc::new(TieredStore::new(tiers, self.tier_catalog(), restore));
        let spool = self.directory.path().join("spool");
        std::fs::create_dir_all(&spool).unwrap();
        Arc::new(TieringService::new(
            self.config.clone(),
            self.catalog.clone(),
            self.tier_catalog(),
            store,
            spool,
        ))
    }

    /// Asserts every object is readable byte for byte through `store`.
    pub async fn assert_all_readable(&self, store: &dyn BlobStore) {
        for object in &self.objects {
            let (size, mut stream) = store
                .get(&object.key)
                .await
                .unwrap_or_else(|error| panic!("{} unreadable: {error}", object.key));
            let mut read = Vec::new();
            while let Some(chunk) = stream.next().await {
                read.extend_from_slice(&chunk.unwrap());
            }
            assert_eq!(size, object.bytes.len() as u64);
            assert!(read == object.bytes, "{} differs", object.key);
            let range = store.get_range(&object.key, 2..6).await.unwrap();
            assert_eq!(&range[..], &object.bytes[2..6]);
        }
    }

    /// Asserts each object is on exactly the tier the catalog names (and its replica for
    /// cold), and on no other store; returns the number of objects per tier (hot, cold).
    pub async fn assert_single_location(&self) -> (usize, usize) {
        let mut counts = (0, 0);
        for object in &self.objects {
            let tier = self.catalog.object_tier(&object.key).await.unwrap().tier;
            let on_hot = self.hot.head(&object.key).await.unwrap().is_some();
            let on_cold = self.cold.head(&object.key).await.unwrap().is_some();
            let on_replica = self.replica.head(&object.key).await.unwrap().is_some();
            match tier.as_str() {
                "hot" => {
                    assert!(
                        on_hot && !on_cold && !on_replica,
                        "{} on hot only",
                        object.key
                    );
                    counts.0 += 1;
                }
                "cold" => {
                    assert!(
                        !on_hot && on_cold && on_replica,
                        "{} on cold only",
                        object.key
                    );
                    counts.1 += 1;
                }
                other => panic!("unexpected tier {other}"),
            }
        }
        counts
    }
}
