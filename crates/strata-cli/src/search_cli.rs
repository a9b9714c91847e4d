//! `strata search "<query>"` and `strata search rebuild`: the administrator's view of the
//! full-text index (issue 5, docs/search.md).
//!
//! Queries read the node's local index directly, read-only: no HTTP client, no credentials,
//! and they work while the node runs (readers need no lock) or is stopped. Remote nodes are
//! searched through `GET /api/search` instead.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;
use strata_config::NodeConfig;
use strata_search::{DocumentSettings, Indexer, IndexerSettings, SearchIndex};
use tokio_util::sync::CancellationToken;

/// Arguments of `strata search`.
#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub(crate) struct SearchArgs {
    #[command(subcommand)]
    command: Option<SearchCommand>,
    /// The query: words (ANDed, names typo-tolerant) and "quoted phrases". Use `--` before a
    /// query that is literally `rebuild`.
    query: Vec<String>,
    /// Only studies with this modality (repeatable).
    #[arg(long)]
    modality: Vec<String>,
    /// Only studies from this source (Issuer of Patient ID / Source AE title; repeatable).
    #[arg(long)]
    source: Vec<String>,
    /// Study Date range: YYYYMMDD, YYYYMMDD-, -YYYYMMDD or YYYYMMDD-YYYYMMDD.
    #[arg(long)]
    date: Option<String>,
    /// `relevance`, `date_desc` or `date_asc`.
    #[arg(long, default_value = "relevance")]
    sort: String,
    /// Results to print.
    #[arg(long, default_value_t = 20)]
    limit: usize,
    /// Prints the results as JSON (the API response without its links) instead of lines.
    #[arg(long)]
    json: bool,
    /// Directory for embedded state [default: ./strata-data].
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum SearchCommand {
    /// Deletes the index and rebuilds it from the catalog's whole event log. Stop the node
    /// first (it holds the index); refused otherwise.
    Rebuild {
        /// Directory for embedded state [default: ./strata-data].
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
}

/// Runs `strata search`.
pub(crate) async fn run(config_file: Option<PathBuf>, args: SearchArgs) -> anyhow::Result<()> {
    match args.command {
        Some(SearchCommand::Rebuild { data_dir }) => {
            rebuild(crate::load_config(config_file, data_dir, None)?).await
        }
        None => {
            let config = crate::load_config(config_file, args.data_dir.clone(), None)?;
            query(&config, args)
        }
    }
}

fn index_dir(config: &NodeConfig) -> PathBuf {
    config
        .search
        .index_dir
        .clone()
        .unwrap_or_else(|| config.data_dir.join("search"))
}

fn query(config: &NodeConfig, args: SearchArgs) -> anyhow::Result<()> {
    let mut parameters = vec![
        ("q".to_owned(), args.query.join(" ")),
        ("sort".to_owned(), args.sort),
        ("limit".to_owned(), args.limit.to_string()),
    ];
    parameters.extend(
        args.modality
            .into_iter()
            .map(|value| ("modality".to_owned(), value)),
    );
    parameters.extend(
        args.source
            .into_iter()
            .map(|value| ("source".to_owned(), value)),
    );
    parameters.extend(args.date.map(|value| ("date".to_owned(), value)));
    let request = strata_search::parse_parameters(&parameters)?;
    let directory = index_dir(config);
    let index = SearchIndex::open_read_only(&directory).with_context(|| {
        format!(
            "no search index in `{}` (is search enabled?)",
            directory.display()
        )
    })?;
    let response = index.search(&request)?;
    let mut stdout = std::io::stdout().lock();
    if args.json {
        writeln!(stdout, "{}", serde_json::to_string_pretty(&response)?)?;
        return Ok(());
    }
    writeln!(
        stdout,
        "{} studies match ({:.1} ms, index at event {})",
        response.total, response.took_ms, response.indexed_sequence
    )?;
    for hit in &response.hits {
        writeln!(
            stdout,
            "{}  {:<8} {}  {}  {}",
            hit.study_date.as_deref().unwrap_or("--------"),
            hit.modalities.join(","),
            hit.study_instance_uid,
            hit.summary.patient_name,
            hit.summary.study_description
        )?;
        if !hit.snippet.is_empty() {
            let plain = hit.snippet.replace("<b>", "[").replace("</b>", "]");
            writeln!(stdout, "    {plain}")?;
        }
    }
    Ok(())
}

async fn rebuild(config: NodeConfig) -> anyhow::Result<()> {
    let catalog = strata_catalog::open_catalog(&config.catalog.uri, 2)
        .await
        .with_context(|| {
            format!(
                "failed to open the catalog at `{}`",
                strata_serve::redact(&config.catalog.uri)
            )
        })?;
    let directory = index_dir(&config);
    let settings = DocumentSettings {
        include_private_tags: config.search.include_private_tags,
    };
    let index = std::sync::Arc::new(SearchIndex::recreate(&directory, settings).with_context(
        || {
            format!(
                "failed to recreate the search index in `{}` (stop the node that holds it)",
                directory.display()
            )
        },
    )?);
    let started = std::time::Instant::now();
    let num_events = Indexer::new(catalog, index.clone(), IndexerSettings::default())
        .rebuild(&CancellationToken::new())
        .await?;
    writeln!(
        std::io::stdout(),
        "rebuilt the search index in `{}`: {num_events} events, {} studies, {:.1} s",
        directory.display(),
        index.num_studies(),
        started.elapsed().as_secs_f64()
    )?;
    Ok(())
}
