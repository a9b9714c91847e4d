//! The `strata` binary: parses arguments, loads the configuration and runs a node.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use strata_config::NodeConfig;
use tokio_util::sync::CancellationToken;
use tracing::info;

mod allocator;
mod dimse_cli;
mod search_cli;
mod tier_cli;

/// Strata: a Vendor Neutral Archive for medical images.
///
/// Runs on embedded defaults (SQLite catalog and local object directory under ./strata-data,
/// DICOMweb on 127.0.0.1:8080) with no configuration at all. A TOML config file and
/// STRATA__SECTION__KEY environment variables (e.g. STRATA__CATALOG__URI=postgres://...)
/// select PostgreSQL and S3 instead; command-line flags override both.
#[derive(Debug, Parser)]
#[command(name = "strata", version, about, long_about)]
struct Cli {
    /// Configuration file (TOML). See deploy/strata.example.toml.
    #[arg(long, global = true, env = "STRATA_CONFIG")]
    config: Option<PathBuf>,
    /// Log output format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

/// DIMSE listener flags of `strata serve`.
#[derive(Debug, clap::Args)]
struct DimseFlags {
    /// DIMSE listen address; port 0 picks a free port [default: 127.0.0.1:11112].
    #[arg(long, value_name = "HOST:PORT")]
    dimse_addr: Option<String>,
    /// This node's AE title [default: STRATA].
    #[arg(long, value_name = "AE_TITLE")]
    ae_title: Option<String>,
    /// A known C-MOVE destination, repeatable: `--dimse-peer PACS@10.0.0.5:104`.
    #[arg(long, value_name = "AE@HOST:PORT")]
    dimse_peer: Vec<String>,
}

/// The peer of `strata echo` and `strata store`.
#[derive(Debug, clap::Args)]
struct DimseTarget {
    /// The peer's address.
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:11112")]
    dimse_addr: String,
    /// The peer's (called) AE title.
    #[arg(long, value_name = "AE_TITLE", default_value = "STRATA")]
    ae_title: String,
    /// Our (calling) AE title.
    #[arg(long, value_name = "AE_TITLE", default_value = "STRATA_SCU")]
    calling_ae_title: String,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Starts the archive: DICOMweb (STOW-RS, QIDO-RS, WADO-RS) under /dicomweb, FHIR under
    /// /fhir, DIMSE, full-text search; every role in one process unless --roles says otherwise.
    Serve {
        /// The roles this process plays, comma-separated: ingest (STOW-RS, C-STORE), gateway
        /// (DICOMweb and DIMSE reads, FHIR), search (indexer, /api/search), tiering; or `all`
        /// [default: all].
        #[arg(long, env = "STRATA_ROLES", value_name = "ROLE,...", value_parser = parse_roles_flag)]
        roles: Option<RoleList>,
        /// Directory for embedded state (SQLite catalog, objects, spool) [default: ./strata-data].
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// HTTP listen address; port 0 picks a free port [default: 127.0.0.1:8080].
        #[arg(long, value_name = "HOST:PORT")]
        http_addr: Option<String>,
        #[command(flatten)]
        dimse: DimseFlags,
    },
    /// Sends a C-ECHO (DICOM verification) to a DIMSE peer and prints its status.
    Echo {
        #[command(flatten)]
        target: DimseTarget,
    },
    /// Sends DICOM files (and every file under the given folders) with C-STORE.
    Store {
        #[command(flatten)]
        target: DimseTarget,
        /// Files or folders to send.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Applies the catalog's schema migrations and exits (run once before rolling out replicas).
    Migrate {
        /// Directory for embedded state [default: ./strata-data].
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Searches the full-text metadata index: `strata search "right lung nodule"`;
    /// `strata search rebuild` rebuilds it from the catalog (docs/search.md).
    Search(search_cli::SearchArgs),
    /// Tiered storage: `strata tier status`, `strata tier apply [--dry-run]`,
    /// `strata tier restore STUDY` (docs/tiering.md).
    Tier(tier_cli::TierArgs),
    /// Fixity: `strata fixity check [--shallow] [--limit N]` (docs/tiering.md).
    Fixity(tier_cli::FixityArgs),
    /// API tokens for the HTTP APIs: `strata token new --name viewer --scopes read` prints a
    /// new token and the line to add to auth.tokens_file (docs/security.md).
    #[command(subcommand)]
    Token(TokenCommand),
    /// Prints the effective configuration (secrets hidden) and exits.
    Config {
        /// Directory for embedded state [default: ./strata-data].
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Makes a new random token. Prints the token (give it to the client; it is not stored)
    /// and its auth.tokens_file line (name, scopes and the token's SHA-256).
    New {
        /// The name audit records show for this token's requests (no spaces).
        #[arg(long)]
        name: String,
        /// Comma-separated scopes: read (QIDO/WADO/FHIR/search), write (STOW-RS), delete
        /// (DICOMweb DELETE), admin (tiering changes).
        #[arg(long, value_delimiter = ',', default_value = "read")]
        scopes: Vec<TokenScope>,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum TokenScope {
    Read,
    Write,
    Delete,
    Admin,
}

impl From<TokenScope> for strata_serve::Scope {
    fn from(scope: TokenScope) -> Self {
        match scope {
            TokenScope::Read => strata_serve::Scope::Read,
            TokenScope::Write => strata_serve::Scope::Write,
            TokenScope::Delete => strata_serve::Scope::Delete,
            TokenScope::Admin => strata_serve::Scope::Admin,
        }
    }
}

fn main() -> std::process::ExitCode {
    // Before any thread exists.
    allocator::cap_malloc_arenas();
    let cli = Cli::parse();
    let mut telemetry_config = strata_telemetry::TelemetryConfig::new("strata");
    telemetry_config.log_format = match cli.log_format {
        LogFormat::Text => strata_telemetry::LogFormat::Text,
        LogFormat::Json => strata_telemetry::LogFormat::Json,
    };
    if let Command::Serve {
        roles: Some(roles), ..
    } = &cli.command
    {
        let names: Vec<&str> = roles.0.iter().map(|role| role.as_str()).collect();
        telemetry_config
            .resource_attributes
            .push(("strata.roles".to_owned(), names.join(",")));
    }
    // Logs, traces (OTLP when OTEL_EXPORTER_OTLP_ENDPOINT is set) and metrics; the guard
    // exports what is left when it drops, after the runtime (docs/observability.md).
    let telemetry = match strata_telemetry::init(telemetry_config) {
        Ok(guard) => guard,
        Err(error) => {
            eprintln!("error: failed to start telemetry: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: failed to start the async runtime: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(cli));
    drop(runtime);
    drop(telemetry);
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve {
            roles,
            data_dir,
            http_addr,
            dimse,
        } => {
            let mut config = load_config(cli.config, data_dir, http_addr)?;
            if let Some(roles) = roles {
                config.roles = roles.0;
            }
            apply_dimse_flags(&mut config, dimse)?;
            let shutdown = CancellationToken::new();
            let signal_token = shutdown.clone();
            tokio::spawn(async move {
                wait_for_signal().await;
                signal_token.cancel();
            });
            strata_serve::serve_node(config, shutdown).await
        }
        Command::Echo { target } => dimse_cli::echo(target).await,
        Command::Token(TokenCommand::New { name, scopes }) => {
            if name.is_empty() || name.chars().any(char::is_whitespace) {
                anyhow::bail!("--name must be one word (it is the first field of the line)");
            }
            let scopes: Vec<strata_serve::Scope> = scopes.into_iter().map(Into::into).collect();
            let (token, line) = strata_serve::new_token(&name, &scopes);
            let text = format!("token: {token}\ntokens-file line: {line}\n");
            std::io::Write::write_all(&mut std::io::stdout(), text.as_bytes())?;
            Ok(())
        }
        Command::Search(args) => search_cli::run(cli.config, args).await,
        Command::Tier(args) => tier_cli::run_tier(cli.config, args).await,
        Command::Fixity(args) => tier_cli::run_fixity(cli.config, args).await,
        Command::Store { target, paths } => dimse_cli::store(target, paths).await,
        Command::Migrate { data_dir } => {
            let config = load_config(cli.config, data_dir, None)?;
            let catalog_uri = strata_serve::catalog_uri_with_password(&config)?;
            strata_catalog::open_catalog(&catalog_uri, 1)
                .await
                .with_context(|| {
                    format!(
                        "failed to migrate the catalog at `{}`",
                        strata_serve::redact(&config.catalog.uri)
                    )
                })?;
            info!("catalog schema is up to date");
            Ok(())
        }
        Command::Config { data_dir } => {
            let mut config = load_config(cli.config, data_dir, None)?;
            config.catalog.uri = strata_serve::redact(&config.catalog.uri);
            if config.storage.s3.secret_access_key.is_some() {
                config.storage.s3.secret_access_key = Some("***".to_owned());
            }
            let text = json_text(&config)?;
            std::io::Write::write_all(&mut std::io::stdout(), text.as_bytes())?;
            Ok(())
        }
    }
}

/// Flags have the highest precedence: they are applied as the last environment entries.
fn load_config(
    config_file: Option<PathBuf>,
    data_dir: Option<PathBuf>,
    http_addr: Option<String>,
) -> anyhow::Result<NodeConfig> {
    let mut env: Vec<(String, String)> = std::env::vars().collect();
    if let Some(data_dir) = data_dir {
        env.push((
            "STRATA__DATA_DIR".to_owned(),
            data_dir.display().to_string(),
        ));
    }
    if let Some(http_addr) = http_addr {
        env.push(("STRATA__HTTP__ADDR".to_owned(), http_addr));
    }
    Ok(NodeConfig::load(config_file.as_deref(), env)?)
}

/// Applies the DIMSE flags (highest precedence) and validates the result again.
fn apply_dimse_flags(config: &mut NodeConfig, flags: DimseFlags) -> anyhow::Result<()> {
    if let Some(dimse_addr) = flags.dimse_addr {
        config.dimse.addr = dimse_addr;
    }
    if let Some(ae_title) = flags.ae_title {
        config.dimse.ae_title = ae_title;
    }
    for peer in flags.dimse_peer {
        let (ae_title, address) = peer
            .split_once('@')
            .with_context(|| format!("--dimse-peer `{peer}` is not AE@HOST:PORT"))?;
        config
            .dimse
            .peers
            .insert(ae_title.to_owned(), address.to_owned());
    }
    *config = config.clone().resolved()?;
    Ok(())
}

/// The value of `--roles`: one flag holding the whole comma-separated list.
#[derive(Debug, Clone)]
struct RoleList(Vec<strata_config::Role>);

fn parse_roles_flag(list: &str) -> Result<RoleList, String> {
    let roles = strata_config::parse_roles(list).map_err(|error| error.to_string())?;
    if roles.is_empty() {
        return Err("name at least one role".to_owned());
    }
    Ok(RoleList(roles))
}

fn json_text(config: &NodeConfig) -> anyhow::Result<String> {
    Ok(serde_json::to_string_pretty(config)?)
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .expect("installing a SIGTERM handler succeeds on unix");
        tokio::select! {
            _ = ctrl_c => {},
            _ = terminate.recv() => {},
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
    info!("shutdown signal received");
}
