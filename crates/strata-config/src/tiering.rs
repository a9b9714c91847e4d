//! The `[tiering]` section: storage tiers, placement rules, the mover and fixity (issue 4).
//!
//! The tier named `hot` is implicit: it is `[storage]`, where ingest writes. Every other tier is
//! declared under `[tiering.tiers.NAME]`. Rules are evaluated in order per study; the first rule
//! whose every condition holds names the study's tier; a study no rule matches stays `hot`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{ConfigError, S3Config};

/// The name of the implicit tier: the `[storage]` object store.
pub const HOT_TIER: &str = "hot";

/// Tiered storage: where objects live besides `[storage]`, when they move, how they are checked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TieringConfig {
    /// Runs the tiering service (policy scan, mover, scheduled fixity) on nodes with the
    /// tiering role. Reads always go through the tiers, enabled or not.
    pub enabled: bool,
    /// Seconds between two full policy scans of the catalog.
    pub scan_interval_seconds: u64,
    /// Milliseconds between two reads of the catalog's event log by the policy follower.
    pub poll_interval_ms: u64,
    /// Object moves run in parallel.
    pub move_concurrency: usize,
    /// Most objects moved per second (0: unlimited).
    pub max_moves_per_second: u32,
    /// Most bytes copied per second by the mover (0: unlimited).
    pub max_bytes_per_second: u64,
    /// Seconds between two flushes of the per-study last-access times to the catalog.
    pub access_flush_seconds: u64,
    /// Days after its first ingest during which a study can be neither moved off `hot` nor
    /// deleted (0: none).
    pub min_retention_days: u32,
    /// Hours between two scheduled fixity passes (0: on demand only).
    pub fixity_interval_hours: u64,
    /// Scheduled passes read and hash every object (deep); false compares the size and the
    /// recorded checksum metadata only (shallow).
    pub fixity_deep: bool,
    /// Days a restored copy of an archived object stays readable (S3 RestoreObject `Days`).
    pub restore_days: u32,
    /// The S3 retrieval tier of a restore: `Standard`, `Bulk` or `Expedited`.
    pub restore_retrieval_tier: String,
    /// The Retry-After (seconds) answered while an object is being restored.
    pub restore_retry_after_seconds: u64,
    /// When a read starts the restore of an archived object, pins its study to `hot` for this
    /// many days, so the scan brings the study back once restored (0: no promotion).
    pub restore_promote_days: u32,
    /// The tiers besides `hot`, by name.
    pub tiers: BTreeMap<String, TierConfig>,
    /// The placement rules, first match wins.
    pub rules: Vec<TierRule>,
}

impl Default for TieringConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            scan_interval_seconds: 3600,
            poll_interval_ms: 2000,
            move_concurrency: 4,
            max_moves_per_second: 0,
            max_bytes_per_second: 0,
            access_flush_seconds: 30,
            min_retention_days: 0,
            fixity_interval_hours: 0,
            fixity_deep: false,
            restore_days: 7,
            restore_retrieval_tier: "Standard".to_owned(),
            restore_retry_after_seconds: 3600,
            restore_promote_days: 0,
            tiers: BTreeMap::new(),
            rules: Vec::new(),
        }
    }
}

/// One storage tier: an object store location.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TierConfig {
    /// `file://PATH` or `s3://BUCKET[/PREFIX]`.
    pub uri: String,
    /// S3 settings of this tier; unset: those of `[storage.s3]`.
    #[serde(default)]
    pub s3: Option<S3Config>,
    /// The S3 storage class objects are written with (`STANDARD_IA`, `GLACIER_IR`, `GLACIER`,
    /// `DEEP_ARCHIVE`, or a provider's own name); unset: the bucket's default.
    #[serde(default)]
    pub storage_class: Option<String>,
    /// Objects must be restored (S3 RestoreObject) before they can be read.
    #[serde(default)]
    pub requires_restore: bool,
    /// A second location (same S3 settings) holding a copy of every object of this tier; fixity
    /// repairs from it.
    #[serde(default)]
    pub replica: Option<String>,
}

/// A placement rule: the study goes to `tier` when every condition that is set holds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TierRule {
    /// A name for logs and dry runs.
    pub name: String,
    /// The target tier (`hot` or a declared tier).
    pub tier: String,
    /// At least this many days since the study's first instance was ingested.
    pub min_days_since_ingest: Option<u32>,
    /// At least this many days since the study was last read (never read: since ingest).
    pub min_days_since_access: Option<u32>,
    /// Study Date (`YYYYMMDD`) strictly before this date.
    pub study_date_before: Option<String>,
    /// One of the study's modalities is in this list.
    pub modalities: Vec<String>,
    /// One of the study's instances came from one of these calling AE titles.
    pub calling_ae_titles: Vec<String>,
    /// The study's patient has one of these Issuers of Patient ID.
    pub issuers_of_patient_id: Vec<String>,
    /// One of the study's instances has one of these SOP Class UIDs.
    pub sop_class_uids: Vec<String>,
}

impl TieringConfig {
    /// Returns true when `name` is `hot` or a declared tier.
    pub fn has_tier(&self, name: &str) -> bool {
        name == HOT_TIER || self.tiers.contains_key(name)
    }

    pub(crate) fn validate(&self, hot_uri: &str) -> Result<(), ConfigError> {
        let invalid = |key: &'static str, reason: String| ConfigError::Invalid { key, reason };
        if self.move_concurrency == 0 {
            return Err(invalid(
                "tiering.move_concurrency",
                "must be at least 1".to_owned(),
            ));
        }
        if self.scan_interval_seconds == 0 || self.poll_interval_ms == 0 {
            return Err(invalid(
                "tiering.scan_interval_seconds",
                "scan_interval_seconds and poll_interval_ms must be at least 1".to_owned(),
            ));
        }
        if self.access_flush_seconds == 0 {
            return Err(invalid(
                "tiering.access_flush_seconds",
                "must be at least 1".to_owned(),
            ));
        }
        if !["Standard", "Bulk", "Expedited"].contains(&self.restore_retrieval_tier.as_str()) {
            return Err(invalid(
                "tiering.restore_retrieval_tier",
                "must be Standard, Bulk or Expedited".to_owned(),
            ));
        }
        let mut seen_uris = vec![hot_uri.trim_end_matches('/').to_owned()];
        for (name, tier) in &self.tiers {
            if name == HOT_TIER || name.is_empty() || !name.chars().all(is_tier_name_char) {
                return Err(invalid(
                    "tiering.tiers",
                    format!(
                        "tier name `{name}` must be [a-z0-9_-]+ and not `hot` (the [storage] tier)"
                    ),
                ));
            }
            let uris = std::iter::once(&tier.uri).chain(tier.replica.iter());
            for uri in uris {
                if !(uri.starts_with("file://") || uri.starts_with("s3://")) {
                    return Err(invalid(
                        "tiering.tiers",
                        format!("tier `{name}`: `{uri}` is neither file://PATH nor s3://BUCKET"),
                    ));
                }
                let normalized = uri.trim_end_matches('/').to_owned();
                if seen_uris.contains(&normalized) {
                    return Err(invalid(
                        "tiering.tiers",
                        format!("tier `{name}`: `{uri}` is already used by another tier"),
                    ));
                }
                seen_uris.push(normalized);
            }
            if tier.requires_restore && !tier.uri.starts_with("s3://") {
                return Err(invalid(
                    "tiering.tiers",
                    format!("tier `{name}`: requires_restore needs an s3:// tier"),
                ));
            }
            if tier.storage_class.is_some() && !tier.uri.starts_with("s3://") {
                return Err(invalid(
                    "tiering.tiers",
                    format!("tier `{name}`: storage_class needs an s3:// tier"),
                ));
            }
        }
        for rule in &self.rules {
            if !self.has_tier(&rule.tier) {
                return Err(invalid(
                    "tiering.rules",
                    format!(
                        "rule `{}` names the unknown tier `{}`",
                        rule.name, rule.tier
                    ),
                ));
            }
            if let Some(date) = &rule.study_date_before
                && (date.len() != 8 || !date.bytes().all(|byte| byte.is_ascii_digit()))
            {
                return Err(invalid(
                    "tiering.rules",
                    format!("rule `{}`: study_date_before must be YYYYMMDD", rule.name),
                ));
            }
        }
        Ok(())
    }
}

fn is_tier_name_char(character: char) -> bool {
    character.is_ascii_lowercase() || character.is_ascii_digit() || "_-".contains(character)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tier(uri: &str) -> TierConfig {
        TierConfig {
            uri: uri.to_owned(),
            s3: None,
            storage_class: None,
            requires_restore: false,
            replica: None,
        }
    }

    #[test]
    fn test_tiering_validation_refuses_bad_tiers_and_rules() {
        let mut config = TieringConfig::default();
        assert!(config.validate("file://./objects").is_ok());
        config
            .tiers
            .insert("cold".to_owned(), tier("file://./cold"));
        config.rules.push(TierRule {
            name: "old".to_owned(),
            tier: "cold".to_owned(),
            min_days_since_ingest: Some(30),
            ..TierRule::default()
        });
        assert!(config.validate("file://./objects").is_ok());
        // The same location twice would let a move delete its own destination.
        assert!(config.validate("file://./cold/").is_err());
        config.rules[0].tier = "nowhere".to_owned();
        assert!(config.validate("file://./objects").is_err());
        config.rules[0].tier = "hot".to_owned();
        config.tiers.insert("hot".to_owned(), tier("file://./x"));
        assert!(config.validate("file://./objects").is_err());
        config.tiers.remove("hot");
        config.tiers.get_mut("cold").unwrap().requires_restore = true;
        assert!(config.validate("file://./objects").is_err());
    }
}
