//! `strata-bench tier-moves`: moves N small instances hot → cold and back through the tiering
//! mover (copy, verify, commit, delete source) and measures objects/s, MB/s and the peak
//! resident memory of this process (issue 4, docs/tiering.md).

use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;
use sha2::{Digest, Sha256};
use strata_catalog::conformance::synthetic_record;
use strata_catalog::{Catalog, SqlCatalog, TierCatalog};
use strata_config::{TierConfig, TierRule, TieringConfig};
use strata_storage::{BlobStore, ObjectStoreBlobStore};
use strata_tiering::{RestoreSettings, Tier, TierSet, TieredStore, TieringService};
use strata_types::ObjectKey;

/// Arguments of `tier-moves`.
#[derive(Debug, clap::Args)]
pub struct TierMovesArgs {
    /// Instances to move.
    #[arg(long, default_value_t = 10_000)]
    objects: u32,
    /// Bytes per instance.
    #[arg(long, default_value_t = 16_384)]
    object_bytes: usize,
    /// Moves in parallel.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Stores: `file` (two local directories) or `s3` (two prefixes of an in-process S3
    /// server).
    #[arg(long, default_value = "file")]
    backend: String,
}

/// One measured direction.
#[derive(Debug, Serialize)]
pub struct TierMovesResult {
    pub scenario: String,
    pub backend: String,
    pub num_objects: u64,
    pub num_bytes: u64,
    pub num_moved: u64,
    pub num_failed: u64,
    pub seconds: f64,
    pub objects_per_second: f64,
    pub megabytes_per_second: f64,
    pub peak_rss_mib: Option<f64>,
    /// Why moves failed (first ones).
    pub failures: Vec<String>,
}

/// Seeds the catalog and the hot store, then measures both directions.
pub async fn run(args: TierMovesArgs) -> anyhow::Result<Vec<TierMovesResult>> {
    let directory = tempfile::tempdir()?;
    let s3_opt = match args.backend.as_str() {
        "file" => None,
        "s3" => Some(strata_storage::testsuite::InProcessS3::start().await?),
        other => anyhow::bail!("unknown backend `{other}`: expected file or s3"),
    };
    let open = |name: &str| -> anyhow::Result<Arc<dyn BlobStore>> {
        Ok(match &s3_opt {
            Some(s3) => Arc::new(s3.blob_store(name)?),
            None => Arc::new(ObjectStoreBlobStore::local(directory.path().join(name))?),
        })
    };
    let hot = open("hot")?;
    let cold = open("cold")?;
    let catalog_uri = format!("sqlite://{}", directory.path().join("catalog.db").display());
    let catalog = Arc::new(SqlCatalog::connect(&catalog_uri, 8).await?);
    let seed_file = directory.path().join("seed");
    for index in 0..args.objects {
        let mut bytes = format!("DICM bench object {index} ").into_bytes();
        bytes.resize(args.object_bytes.max(bytes.len()), (index % 251) as u8);
        let sha256 = hex::encode(Sha256::digest(&bytes));
        let key = ObjectKey::for_content(&sha256);
        tokio::fs::write(&seed_file, &bytes).await?;
        hot.put_file(&key, &seed_file, &sha256).await?;
        let mut record = synthetic_record(1 + index / 500, 1, index + 1);
        record.object.key = key;
        record.object.sha256 = sha256;
        record.object.size_bytes = bytes.len() as u64;
        catalog.store_instance(&record).await?;
    }
    let mut config = TieringConfig {
        move_concurrency: args.concurrency,
        ..TieringConfig::default()
    };
    config.tiers.insert(
        "cold".to_owned(),
        TierConfig {
            uri: "file:///unused".to_owned(),
            s3: None,
            storage_class: None,
            requires_restore: false,
            replica: None,
        },
    );
    let spool = directory.path().join("spool");
    std::fs::create_dir_all(&spool)?;
    let mut results = Vec::new();
    for (scenario, rule_tier) in [("hot_to_cold", Some("cold")), ("cold_to_hot", None)] {
        config.rules = rule_tier
            .map(|tier| {
                vec![TierRule {
                    name: "bench".to_owned(),
                    tier: tier.to_owned(),
                    ..TierRule::default()
                }]
            })
            .unwrap_or_default();
        let tier_catalog: Arc<dyn TierCatalog> = catalog.clone();
        let tiers = TierSet::new(hot.clone(), vec![Tier::plain("cold", cold.clone())]);
        let store = Arc::new(TieredStore::new(
            tiers,
            tier_catalog.clone(),
            RestoreSettings::default(),
        ));
        let service = TieringService::new(
            config.clone(),
            catalog.clone(),
            tier_catalog,
            store,
            spool.clone(),
        );
        let sampler = crate::rss::RssSampler::start(Some(std::process::id()));
        let started = Instant::now();
        let report = service.apply(false).await?;
        let seconds = started.elapsed().as_secs_f64();
        let (peak_rss_mib, _) = sampler.finish().await;
        let num_bytes = report.num_bytes_planned;
        let num_moved = report.num_moved;
        results.push(TierMovesResult {
            scenario: scenario.to_owned(),
            backend: args.backend.clone(),
            num_objects: u64::from(args.objects),
            num_bytes,
            num_moved,
            num_failed: report.num_failed,
            seconds,
            objects_per_second: num_moved as f64 / seconds,
            megabytes_per_second: num_bytes as f64 / 1e6 / seconds,
            peak_rss_mib,
            failures: report.failures.into_iter().take(5).collect(),
        });
    }
    Ok(results)
}
