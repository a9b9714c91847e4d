//! `strata tier status|apply|restore` and `strata fixity check`: the administrator's view of
//! tiered storage (issue 4, docs/tiering.md).
//!
//! The commands open the node's catalog and stores directly (like `strata migrate`), so they
//! work whether or not the node runs; moves they start are journaled like the service's own.
//! Output is JSON on stdout.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Subcommand;
use strata_catalog::{Catalog, SqlCatalog};
use strata_config::NodeConfig;
use strata_tiering::{TieringNode, TieringService};

/// Arguments of `strata tier`.
#[derive(Debug, clap::Args)]
pub(crate) struct TierArgs {
    #[command(subcommand)]
    command: TierCommand,
    /// Directory for embedded state [default: ./strata-data].
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum TierCommand {
    /// Objects and bytes per tier, pending moves, recent fixity failures.
    Status,
    /// Evaluates the placement rules and runs the moves they want.
    Apply {
        /// Lists the moves without running them.
        #[arg(long)]
        dry_run: bool,
    },
    /// Restores a study's archived objects ahead of need.
    Restore {
        /// The Study Instance UID.
        study_instance_uid: String,
        /// Keeps the study on hot for this many days once restored.
        #[arg(long)]
        promote_days: Option<u32>,
    },
}

/// Arguments of `strata fixity`.
#[derive(Debug, clap::Args)]
pub(crate) struct FixityArgs {
    #[command(subcommand)]
    command: FixityCommand,
    /// Directory for embedded state [default: ./strata-data].
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum FixityCommand {
    /// Checks stored objects against their SHA-256 and repairs from replicas; exits with 1 when
    /// an object is damaged or missing.
    Check {
        /// Compares sizes and checksum metadata only, without reading the objects.
        #[arg(long)]
        shallow: bool,
        /// Checks at most this many objects.
        #[arg(long)]
        limit: Option<u64>,
    },
}

async fn open_service(config: &NodeConfig) -> anyhow::Result<Arc<TieringService>> {
    let catalog_uri = strata_serve::catalog_uri_with_password(config)?;
    let sql_catalog = Arc::new(
        SqlCatalog::connect(&catalog_uri, 2)
            .await
            .with_context(|| {
                format!(
                    "failed to open the catalog at `{}`",
                    strata_serve::redact(&config.catalog.uri)
                )
            })?,
    );
    let catalog: Arc<dyn Catalog> = sql_catalog.clone();
    let hot = strata_storage::open_blob_store(&config.storage)
        .with_context(|| format!("failed to open the object store `{}`", config.storage.uri))?;
    let node = TieringNode::open(config, hot, catalog, sql_catalog)
        .context("failed to open the storage tiers ([tiering.tiers])")?;
    Ok(node.service().clone())
}

fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    let mut text = serde_json::to_string_pretty(value)?;
    text.push('\n');
    std::io::stdout().write_all(text.as_bytes())?;
    Ok(())
}

/// Runs `strata tier`.
pub(crate) async fn run_tier(config_file: Option<PathBuf>, args: TierArgs) -> anyhow::Result<()> {
    let config = crate::load_config(config_file, args.data_dir, None)?;
    let service = open_service(&config).await?;
    match args.command {
        TierCommand::Status => print_json(&service.status().await?),
        TierCommand::Apply { dry_run } => print_json(&service.apply(dry_run).await?),
        TierCommand::Restore {
            study_instance_uid,
            promote_days,
        } => {
            let study = study_instance_uid
                .parse()
                .map_err(|_| anyhow::anyhow!("`{study_instance_uid}` is not a valid UID"))?;
            print_json(&service.restore_study(&study, promote_days).await?)
        }
    }
}

/// Runs `strata fixity`; fails when an object is damaged or missing.
pub(crate) async fn run_fixity(
    config_file: Option<PathBuf>,
    args: FixityArgs,
) -> anyhow::Result<()> {
    let config = crate::load_config(config_file, args.data_dir, None)?;
    let service = open_service(&config).await?;
    match args.command {
        FixityCommand::Check { shallow, limit } => {
            let report = service.fixity_check(!shallow, limit).await?;
            print_json(&report)?;
            if !report.failures.is_empty() {
                anyhow::bail!(
                    "{} object(s) damaged or missing (see the report above)",
                    report.failures.len()
                );
            }
            Ok(())
        }
    }
}
