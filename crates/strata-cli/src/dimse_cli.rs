//! `strata echo` and `strata store`: the DIMSE SCU a PACS administrator uses to test a peer.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use strata_dimse::{StoreScu, StoreScuOutcome, read_part10};

use crate::DimseTarget;

/// Sends a C-ECHO and prints the status.
pub async fn echo(target: DimseTarget) -> anyhow::Result<()> {
    let status = tokio::task::spawn_blocking(move || {
        strata_dimse::echo(
            &target.dimse_addr,
            &target.calling_ae_title,
            &target.ae_title,
        )
    })
    .await??;
    if status != 0 {
        bail!("C-ECHO answered with status {status:#06x}");
    }
    std::io::Write::write_all(&mut std::io::stdout(), b"C-ECHO: success (0x0000)\n")?;
    Ok(())
}

/// Collects the files under `paths` (folders recursively), sorted.
fn collect_files(paths: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let mut pending: Vec<PathBuf> = paths.to_vec();
    while let Some(path) = pending.pop() {
        let metadata = std::fs::metadata(&path)
            .with_context(|| format!("cannot read `{}`", path.display()))?;
        if metadata.is_dir() {
            for entry in std::fs::read_dir(&path)? {
                pending.push(entry?.path());
            }
        } else {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

struct Prepared {
    path: PathBuf,
    bytes: Vec<u8>,
    parts: strata_dimse::Part10Parts,
}

fn prepare(path: &Path) -> anyhow::Result<Prepared> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read `{}`", path.display()))?;
    let parts = read_part10(&bytes).with_context(|| format!("`{}`", path.display()))?;
    Ok(Prepared {
        path: path.to_owned(),
        bytes,
        parts,
    })
}

/// Sends every DICOM file under `paths` with C-STORE over one association, with a progress
/// bar; fails when any instance was not stored.
pub async fn store(target: DimseTarget, paths: Vec<PathBuf>) -> anyhow::Result<()> {
    tokio::task::spawn_blocking(move || store_blocking(&target, &paths)).await?
}

fn store_blocking(target: &DimseTarget, paths: &[PathBuf]) -> anyhow::Result<()> {
    let files = collect_files(paths)?;
    let mut prepared = Vec::new();
    let mut num_skipped = 0u64;
    for path in &files {
        match prepare(path) {
            Ok(file) => prepared.push(file),
            Err(error) => {
                eprintln!("skipped: {error:#}");
                num_skipped += 1;
            }
        }
    }
    if prepared.is_empty() {
        bail!("no DICOM Part 10 file found");
    }
    let pairs: Vec<(String, String)> = prepared
        .iter()
        .map(|file| {
            (
                file.parts.sop_class_uid.clone(),
                file.parts.transfer_syntax_uid.clone(),
            )
        })
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    if pairs.len() > 128 {
        bail!(
            "more than 128 (SOP class, transfer syntax) combinations in one run; send fewer files"
        );
    }
    let mut scu = StoreScu::connect(
        &target.dimse_addr,
        &target.calling_ae_title,
        &target.ae_title,
        &pairs,
    )?;
    let progress = indicatif::ProgressBar::new(prepared.len() as u64);
    progress.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:40} {pos}/{len} instances {binary_bytes_per_sec} {msg}",
        )
        .expect("the progress template is valid"),
    );
    let mut num_failed = 0u64;
    for file in &prepared {
        let outcome = scu.store(
            &file.parts.sop_class_uid,
            &file.parts.sop_instance_uid,
            &file.parts.transfer_syntax_uid,
            &file.bytes[file.parts.data_set_offset..],
            None,
        )?;
        match outcome {
            StoreScuOutcome::Status(status) if status == 0 || status & 0xF000 == 0xB000 => {}
            other => {
                num_failed += 1;
                progress.println(format!("failed: {} ({other:?})", file.path.display()));
            }
        }
        progress.inc(1);
    }
    progress.finish();
    scu.release()?;
    let summary = format!(
        "stored {} of {} instances ({} skipped as not DICOM)\n",
        prepared.len() as u64 - num_failed,
        prepared.len(),
        num_skipped
    );
    std::io::Write::write_all(&mut std::io::stdout(), summary.as_bytes())?;
    if num_failed > 0 {
        bail!("{num_failed} instances were not stored");
    }
    Ok(())
}
