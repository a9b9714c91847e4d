//! Placement rules: which tier a study belongs on (pure functions, no I/O).

use serde::Serialize;
use strata_catalog::StudyFacts;
use strata_config::{HOT_TIER, TierRule, TieringConfig};

const MS_PER_DAY: i64 = 86_400_000;

/// Why a study belongs on a tier.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Placement {
    pub tier: String,
    /// The rule that matched, `pin` for a pinned study, `retention` for a study still in its
    /// minimum retention, or `default` when no rule matched.
    pub reason: String,
}

/// Returns the tier `facts` belongs on at `now_ms`: a live pin first, then `hot` during the
/// minimum retention, then the first matching rule, else `hot`.
pub fn target_tier(config: &TieringConfig, facts: &StudyFacts, now_ms: i64) -> Placement {
    let placement = |tier: &str, reason: &str| Placement {
        tier: tier.to_owned(),
        reason: reason.to_owned(),
    };
    let retention = &facts.retention;
    if let (Some(tier), Some(until_ms)) = (&retention.pinned_tier, retention.pinned_until_ms)
        && until_ms > now_ms
        && config.has_tier(tier)
    {
        return placement(tier, "pin");
    }
    let days_since = |since_ms: i64| (now_ms - since_ms).max(0) / MS_PER_DAY;
    if days_since(facts.first_ingest_ms) < i64::from(config.min_retention_days) {
        return placement(HOT_TIER, "retention");
    }
    for rule in &config.rules {
        if rule_matches(rule, facts, now_ms) {
            return placement(&rule.tier, &rule.name);
        }
    }
    placement(HOT_TIER, "default")
}

/// Returns true when every condition set in `rule` holds for `facts`.
pub fn rule_matches(rule: &TierRule, facts: &StudyFacts, now_ms: i64) -> bool {
    let days_since = |since_ms: i64| (now_ms - since_ms).max(0) / MS_PER_DAY;
    let intersects = |wanted: &[String], present: &[String]| {
        wanted.is_empty()
            || wanted
                .iter()
                .any(|value| present.iter().any(|have| have.eq_ignore_ascii_case(value)))
    };
    if let Some(min_days) = rule.min_days_since_ingest
        && days_since(facts.first_ingest_ms) < i64::from(min_days)
    {
        return false;
    }
    if let Some(min_days) = rule.min_days_since_access {
        let last_ms = facts.last_access_ms.unwrap_or(facts.first_ingest_ms);
        if days_since(last_ms) < i64::from(min_days) {
            return false;
        }
    }
    if let Some(before) = &rule.study_date_before
        && (facts.study_date.len() != 8 || facts.study_date.as_str() >= before.as_str())
    {
        return false;
    }
    intersects(&rule.modalities, &facts.modalities)
        && intersects(&rule.calling_ae_titles, &facts.calling_ae_titles)
        && intersects(&rule.sop_class_uids, &facts.sop_class_uids)
        && (rule.issuers_of_patient_id.is_empty()
            || rule
                .issuers_of_patient_id
                .contains(&facts.issuer_of_patient_id))
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_catalog::StudyRetention;

    fn facts(age_days: i64) -> StudyFacts {
        StudyFacts {
            study_instance_uid: "1.2.3".to_owned(),
            study_date: "20190102".to_owned(),
            issuer_of_patient_id: "HOSP_A".to_owned(),
            first_ingest_ms: 1_000 * MS_PER_DAY - age_days * MS_PER_DAY,
            last_access_ms: None,
            modalities: vec!["CT".to_owned()],
            calling_ae_titles: vec!["MOD1".to_owned()],
            sop_class_uids: vec!["1.2.840.10008.5.1.4.1.1.2".to_owned()],
            retention: StudyRetention::default(),
        }
    }

    fn config(rules: Vec<TierRule>) -> TieringConfig {
        let mut config = TieringConfig::default();
        config.tiers.insert(
            "cold".to_owned(),
            strata_config::TierConfig {
                uri: "file:///cold".to_owned(),
                s3: None,
                storage_class: None,
                requires_restore: false,
                replica: None,
            },
        );
        config.rules = rules;
        config
    }

    #[test]
    fn test_first_matching_rule_wins_and_every_condition_counts() {
        let now_ms = 1_000 * MS_PER_DAY;
        let old_ct = TierRule {
            name: "old-ct".to_owned(),
            tier: "cold".to_owned(),
            min_days_since_ingest: Some(30),
            modalities: vec!["ct".to_owned()],
            ..TierRule::default()
        };
        let config = config(vec![old_ct.clone()]);
        assert_eq!(target_tier(&config, &facts(31), now_ms).tier, "cold");
        assert_eq!(target_tier(&config, &facts(29), now_ms).reason, "default");
        let mut mr = facts(31);
        mr.modalities = vec!["MR".to_owned()];
        assert_eq!(target_tier(&config, &mr, now_ms).tier, "hot");

        let mut recently_read = facts(100);
        recently_read.last_access_ms = Some(now_ms - 2 * MS_PER_DAY);
        let by_access = TierRule {
            name: "idle".to_owned(),
            tier: "cold".to_owned(),
            min_days_since_access: Some(10),
            ..TierRule::default()
        };
        assert!(!rule_matches(&by_access, &recently_read, now_ms));
        assert!(rule_matches(&by_access, &facts(100), now_ms));

        let by_date = TierRule {
            study_date_before: Some("20190101".to_owned()),
            ..by_access.clone()
        };
        assert!(!rule_matches(&by_date, &facts(100), now_ms));
        let by_source = TierRule {
            calling_ae_titles: vec!["MOD2".to_owned()],
            ..by_access.clone()
        };
        assert!(!rule_matches(&by_source, &facts(100), now_ms));
        let by_issuer = TierRule {
            issuers_of_patient_id: vec!["HOSP_A".to_owned()],
            sop_class_uids: vec!["1.2.840.10008.5.1.4.1.1.2".to_owned()],
            ..by_access
        };
        assert!(rule_matches(&by_issuer, &facts(100), now_ms));
    }

    #[test]
    fn test_pin_and_minimum_retention_come_first() {
        let now_ms = 1_000 * MS_PER_DAY;
        let all_cold = TierRule {
            name: "all".to_owned(),
            tier: "cold".to_owned(),
            ..TierRule::default()
        };
        let mut config = config(vec![all_cold]);
        let mut pinned = facts(100);
        pinned.retention.pinned_tier = Some("hot".to_owned());
        pinned.retention.pinned_until_ms = Some(now_ms + 1);
        assert_eq!(target_tier(&config, &pinned, now_ms).reason, "pin");
        pinned.retention.pinned_until_ms = Some(now_ms - 1);
        assert_eq!(target_tier(&config, &pinned, now_ms).tier, "cold");
        config.min_retention_days = 200;
        assert_eq!(
            target_tier(&config, &facts(100), now_ms).reason,
            "retention"
        );
    }
}
