//! `strata-bench`: drives any DICOMweb archive with synthetic studies and measures it.
//!
//! `strata-bench run` measures one scenario against one archive and prints one JSON line;
//! `strata-bench report` turns the collected lines into the Markdown table of
//! `docs/benchmarks.md`; `benches/run.sh` runs everything against Strata and Orthanc,
//! alternating, in one command.

// Printing results on standard output is this tool's job.
#![allow(clippy::print_stdout)]

mod catalog_scale;
mod limits;
mod report;
mod rss;
mod scenarios;
mod search_scale;
mod tier_moves;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "strata-bench", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs one scenario against one archive and prints the result as one JSON line.
    Run(scenarios::RunArgs),
    /// Measures what the machine allows: sequential disk write/read, loopback HTTP, and the
    /// floors of a frame request, of one durable 512 KiB object and of a retrieval of files.
    Limits {
        /// Directory on the disk to measure.
        #[arg(long, default_value = "/tmp")]
        dir: PathBuf,
        /// Bytes to write, read and transfer.
        #[arg(long, default_value_t = 2 << 30)]
        bytes: u64,
        /// Requests of the frame floor, and objects of the durable-object floor.
        #[arg(long, default_value_t = 1000)]
        repeat: u32,
    },
    /// Fills a catalog directly (no objects) in steps and measures its size, commit rate and
    /// query latency at each step, for the scale estimates.
    CatalogScale(catalog_scale::CatalogScaleArgs),
    /// Indexes synthetic studies into a full-text index and measures indexing throughput,
    /// index size and query latency (issue 5).
    SearchScale(search_scale::SearchScaleArgs),
    /// Moves synthetic instances hot → cold → hot through the tiering mover and measures
    /// objects/s, MB/s and peak memory (issue 4).
    TierMoves(tier_moves::TierMovesArgs),
    /// The in-memory HTTP server of the frame floor (`limits` starts it in its own process).
    #[command(hide = true)]
    ServeFrameFloor,
    /// The file-reading HTTP server of the retrieval floor (`limits` starts it).
    #[command(hide = true)]
    ServeFilesFloor {
        /// The directory whose files every response sends.
        dir: PathBuf,
    },
    /// Reads JSON result lines and prints the Markdown report.
    Report {
        /// The JSON lines written by `run` and `limits`.
        results: PathBuf,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = match &cli.command {
        // One request at a time: a single-threaded client, so the measured latency is the
        // server's and not hyper's hand-offs between the client's own threads (about 0.2 ms
        // per 0.5 MB response on the project machine).
        Command::Run(args) if args.scenario.is_one_request_at_a_time() => {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?
        }
        _ => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?,
    };
    match cli.command {
        Command::Run(args) => {
            let result = runtime.block_on(scenarios::run(args))?;
            println!("{}", serde_json::to_string(&result)?);
        }
        Command::Limits { dir, bytes, repeat } => {
            for result in runtime.block_on(limits::measure(&dir, bytes, repeat))? {
                println!("{}", serde_json::to_string(&result)?);
            }
        }
        Command::ServeFrameFloor => runtime.block_on(limits::serve_frame_floor())?,
        Command::ServeFilesFloor { dir } => runtime.block_on(limits::serve_files_floor(&dir))?,
        Command::CatalogScale(args) => {
            for result in runtime.block_on(catalog_scale::run(args))? {
                println!("{}", serde_json::to_string(&result)?);
            }
        }
        Command::SearchScale(args) => search_scale::run(args)?,
        Command::TierMoves(args) => {
            for result in runtime.block_on(tier_moves::run(args))? {
                println!("{}", serde_json::to_string(&result)?);
            }
        }
        Command::Report { results } => {
            let text = std::fs::read_to_string(&results)?;
            print!("{}", report::render(&text)?);
        }
    }
    Ok(())
}
