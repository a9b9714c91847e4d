//! Fixity: checks that stored objects still match the SHA-256 recorded at ingest, and repairs
//! them from the tier's replica.

use serde::Serialize;
use strata_catalog::{FixityRecord, FixityStatus, ObjectPlacement};
use strata_storage::StorageErrorKind;

use crate::archive::RestoreStatus;
use crate::error::TieringResult;
use crate::mover::download_hashing;
use crate::tiered_store::now_ms;
use crate::tiers::{Tier, TierSet};

/// What a fixity pass found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FixityReport {
    pub num_checked: u64,
    pub num_ok: u64,
    pub num_repaired: u64,
    pub num_unchecked: u64,
    /// Objects that are wrong or missing and could not be repaired.
    pub failures: Vec<FixityFailure>,
}

/// One object that failed its check.
#[derive(Debug, Clone, Serialize)]
pub struct FixityFailure {
    pub object_key: String,
    pub tier: String,
    pub status: &'static str,
    pub detail: String,
}

impl FixityReport {
    pub(crate) fn add(&mut self, record: &FixityRecord) {
        self.num_checked += 1;
        match record.status {
            FixityStatus::Ok => self.num_ok += 1,
            FixityStatus::Repaired => self.num_repaired += 1,
            FixityStatus::Unchecked => self.num_unchecked += 1,
            FixityStatus::Mismatch | FixityStatus::Missing => self.failures.push(FixityFailure {
                object_key: record.object_key.to_string(),
                tier: record.tier.clone(),
                status: record.status.as_str(),
                detail: record.detail.clone(),
            }),
        }
    }
}

/// Checks one object on its tier: deep reads and hashes it, shallow compares its size (and,
/// on tiers written with `aws-sdk-s3`, its SHA-256 metadata). A wrong or missing object is
/// rewritten from the tier's replica when the replica's copy is right.
pub async fn check_object(
    tiers: &TierSet,
    placement: &ObjectPlacement,
    deep: bool,
    spool_dir: &std::path::Path,
) -> TieringResult<FixityRecord> {
    let tier = tiers.get(&placement.tier)?;
    let (status, detail) = inspect(tier, placement, deep).await?;
    let (status, detail) = match status {
        FixityStatus::Mismatch | FixityStatus::Missing if tier.replica_opt.is_some() => {
            match repair(tier, placement, spool_dir).await {
                Ok(()) => {
                    tracing::warn!(object_key = %placement.object_key, tier = %tier.name, %detail, "fixity: object repaired from the replica");
                    (
                        FixityStatus::Repaired,
                        format!("{detail}; repaired from the replica"),
                    )
                }
                Err(error) => {
                    tracing::error!(object_key = %placement.object_key, tier = %tier.name, %detail, %error, "fixity: object damaged and the replica could not repair it");
                    (status, format!("{detail}; repair failed: {error}"))
                }
            }
        }
        FixityStatus::Mismatch | FixityStatus::Missing => {
            tracing::error!(object_key = %placement.object_key, tier = %tier.name, %detail, "fixity: object damaged and no replica");
            (status, detail)
        }
        _ => (status, detail),
    };
    Ok(FixityRecord {
        object_key: placement.object_key.clone(),
        tier: tier.name.clone(),
        checked_at_ms: now_ms(),
        deep,
        status,
        detail,
    })
}

async fn inspect(
    tier: &Tier,
    placement: &ObjectPlacement,
    deep: bool,
) -> TieringResult<(FixityStatus, String)> {
    let key = &placement.object_key;
    if let Some(archive) = &tier.archive_opt {
        let head = archive.head(key).await?;
        if head.status == RestoreStatus::Missing {
            return Ok((FixityStatus::Missing, "object missing".to_owned()));
        }
        if head.size_bytes != placement.size_bytes {
            return Ok((
                FixityStatus::Mismatch,
                format!(
                    "size {} instead of {}",
                    head.size_bytes, placement.size_bytes
                ),
            ));
        }
        if let Some(sha256) = &head.sha256_opt
            && sha256 != &placement.sha256
        {
            return Ok((FixityStatus::Mismatch, "sha256 metadata differs".to_owned()));
        }
        if !deep {
            return Ok((
                FixityStatus::Ok,
                "size and sha256 metadata match".to_owned(),
            ));
        }
        if matches!(
            head.status,
            RestoreStatus::Archived | RestoreStatus::InProgress
        ) {
            return Ok((
                FixityStatus::Unchecked,
                "archived: not readable without a restore".to_owned(),
            ));
        }
    }
    let Some(meta) = tier.store.head(key).await? else {
        return Ok((FixityStatus::Missing, "object missing".to_owned()));
    };
    if meta.size_bytes != placement.size_bytes {
        return Ok((
            FixityStatus::Mismatch,
            format!(
                "size {} instead of {}",
                meta.size_bytes, placement.size_bytes
            ),
        ));
    }
    if !deep {
        return Ok((FixityStatus::Ok, "size matches".to_owned()));
    }
    match download_hashing(tier, key, None).await {
        Ok((_, sha256_hex)) if sha256_hex == placement.sha256 => {
            Ok((FixityStatus::Ok, "sha256 matches".to_owned()))
        }
        Ok((_, sha256_hex)) => Ok((
            FixityStatus::Mismatch,
            format!("sha256 {sha256_hex} instead of {}", placement.sha256),
        )),
        Err(crate::TieringError::Storage(error)) if error.kind == StorageErrorKind::NotFound => {
            Ok((FixityStatus::Missing, "object missing".to_owned()))
        }
        Err(error) => Err(error),
    }
}

/// Rewrites the object on `tier` from the replica, after checking the replica's copy.
async fn repair(
    tier: &Tier,
    placement: &ObjectPlacement,
    spool_dir: &std::path::Path,
) -> TieringResult<()> {
    let key = &placement.object_key;
    let replica = tier
        .replica_opt
        .clone()
        .expect("repair is only called on tiers with a replica");
    let replica_tier = Tier::plain(&format!("{}-replica", tier.name), replica);
    let staged = tempfile::NamedTempFile::new_in(spool_dir).map_err(|error| {
        strata_storage::StorageError::new(StorageErrorKind::Io, "failed to stage object")
            .with_key(key)
            .with_source(error)
    })?;
    let (num_bytes, sha256_hex) =
        download_hashing(&replica_tier, key, Some(staged.path().to_path_buf())).await?;
    if sha256_hex != placement.sha256 {
        return Err(crate::TieringError::SourceCorrupt {
            key: key.clone(),
            detail: "the replica copy is damaged too".to_owned(),
        });
    }
    match &tier.archive_opt {
        Some(archive) => {
            archive
                .put_file(
                    key,
                    staged.path(),
                    &placement.sha256,
                    num_bytes,
                    tier.storage_class_opt.as_deref(),
                )
                .await?
        }
        None => {
            tier.store
                .put_file(key, staged.path(), &placement.sha256)
                .await?
        }
    }
    Ok(())
}
