//! Tiering scenarios (issue 4): object locations, the move journal, access, retention,
//! fixity results and the cursor. Run on every engine by `tests/tiering.rs`.

use strata_types::ObjectKey;

use crate::Catalog;
use crate::tiering::{
    DEFAULT_TIER, FixityRecord, FixityStatus, MoveState, StudyRetention, TierCatalog,
};

use super::{store_all, synthetic_record, synthetic_study_uid};

/// A move is journaled, committed in one step, and ended; a second move of the same object
/// cannot start while one is in progress; a forgotten object cancels its move.
pub async fn move_journal<C: Catalog + TierCatalog>(catalog: &C) {
    let records = [synthetic_record(1, 1, 1), synthetic_record(1, 1, 2)];
    store_all(catalog, &records).await;
    let key = records[0].object.key.clone();
    let study = synthetic_study_uid(1);

    let placement = catalog.object_tier(&key).await.unwrap();
    assert_eq!(placement.tier, DEFAULT_TIER);
    assert_eq!(placement.study_instance_uid.as_ref(), Some(&study));
    assert!(placement.move_opt.is_none());

    // Wrong source tier: refused.
    assert!(!catalog.begin_move(&key, "cold", "hot").await.unwrap());
    assert!(catalog.begin_move(&key, "hot", "cold").await.unwrap());
    assert!(!catalog.begin_move(&key, "hot", "warm").await.unwrap());
    let moves = catalog.moves().await.unwrap();
    assert_eq!(moves.len(), 1);
    assert_eq!(moves[0].state, MoveState::Copying);
    assert_eq!(catalog.object_tier(&key).await.unwrap().tier, "hot");

    assert!(catalog.commit_move(&key).await.unwrap());
    // Committing twice changes nothing.
    assert!(!catalog.commit_move(&key).await.unwrap());
    let placement = catalog.object_tier(&key).await.unwrap();
    assert_eq!(placement.tier, "cold");
    assert_eq!(placement.move_opt.unwrap().state, MoveState::Committed);
    catalog.end_move(&key).await.unwrap();
    catalog.end_move(&key).await.unwrap();
    assert!(catalog.moves().await.unwrap().is_empty());

    let placements = catalog.study_placements(&study).await.unwrap();
    assert_eq!(placements.len(), 2);
    let moved = placements.iter().find(|p| p.object_key == key).unwrap();
    assert_eq!(moved.tier, "cold");
    assert_eq!(moved.sha256, records[0].object.sha256);
    let usage = catalog.tier_usage().await.unwrap();
    let tiers: Vec<(&str, u64)> = usage
        .iter()
        .map(|usage| (usage.tier.as_str(), usage.num_objects))
        .collect();
    assert_eq!(tiers, vec![("cold", 1), ("hot", 1)]);

    // Back to hot removes the row.
    assert!(catalog.begin_move(&key, "cold", "hot").await.unwrap());
    // A delete racing the move cancels it: the commit is refused.
    catalog.forget_object(&key).await.unwrap();
    assert!(!catalog.commit_move(&key).await.unwrap());
    assert!(catalog.moves().await.unwrap().is_empty());
    assert_eq!(catalog.object_tier(&key).await.unwrap().tier, "hot");

    let unknown = ObjectKey::from_stored("instances/unknown.dcm");
    let placement = catalog.object_tier(&unknown).await.unwrap();
    assert_eq!(placement.tier, "hot");
    assert!(placement.study_instance_uid.is_none());

    let page = catalog.placements_after(None, 1).await.unwrap();
    assert_eq!(page.len(), 1);
    let rest = catalog
        .placements_after(Some(&page[0].object_key), 10)
        .await
        .unwrap();
    assert_eq!(rest.len(), 1);
    assert_ne!(rest[0].object_key, page[0].object_key);
}

/// Study facts carry what rules look at; accesses keep the latest time; retention round-trips;
/// fixity failures are listed; the cursor persists.
pub async fn study_facts_and_bookkeeping<C: Catalog + TierCatalog>(catalog: &C) {
    let records = [
        synthetic_record(2, 1, 1),
        synthetic_record(2, 2, 1),
        synthetic_record(3, 1, 1),
    ];
    store_all(catalog, &records).await;
    let study = synthetic_study_uid(2);
    let facts = catalog.study_facts(&study).await.unwrap().unwrap();
    assert_eq!(facts.study_instance_uid, study.as_str());
    assert!(facts.first_ingest_ms > 0);
    assert!(facts.last_access_ms.is_none());
    assert!(!facts.modalities.is_empty());
    assert_eq!(facts.sop_class_uids.len(), 1);
    assert_eq!(facts.study_date, records[0].study.study_date);

    catalog
        .record_study_access(&[(study.clone(), 5_000), (synthetic_study_uid(3), 7)])
        .await
        .unwrap();
    catalog
        .record_study_access(&[(study.clone(), 4_000)])
        .await
        .unwrap();
    let facts = catalog.study_facts(&study).await.unwrap().unwrap();
    assert_eq!(facts.last_access_ms, Some(5_000));

    let page = catalog.study_facts_after(None, 10).await.unwrap();
    let uids: Vec<&str> = page.iter().map(|f| f.study_instance_uid.as_str()).collect();
    let mut sorted = uids.clone();
    sorted.sort_unstable();
    assert_eq!(uids, sorted);
    assert!(uids.contains(&study.as_str()));
    let after = catalog
        .study_facts_after(Some(study.as_str()), 10)
        .await
        .unwrap();
    assert!(
        after
            .iter()
            .all(|f| f.study_instance_uid.as_str() > study.as_str())
    );

    assert_eq!(
        catalog.study_retention(&study).await.unwrap(),
        StudyRetention::default()
    );
    let retention = StudyRetention {
        legal_hold: true,
        retain_until_ms: Some(99),
        pinned_tier: Some("hot".to_owned()),
        pinned_until_ms: Some(1234),
    };
    catalog
        .set_study_retention(&study, &retention)
        .await
        .unwrap();
    assert_eq!(catalog.study_retention(&study).await.unwrap(), retention);
    let facts = catalog.study_facts(&study).await.unwrap().unwrap();
    assert_eq!(facts.retention, retention);

    let key = records[0].object.key.clone();
    let mut record = FixityRecord {
        object_key: key.clone(),
        tier: "hot".to_owned(),
        checked_at_ms: 10,
        deep: true,
        status: FixityStatus::Mismatch,
        detail: "sha256 differs".to_owned(),
    };
    catalog.record_fixity(&record).await.unwrap();
    assert_eq!(
        catalog.fixity_failures(10).await.unwrap(),
        vec![record.clone()]
    );
    record.status = FixityStatus::Repaired;
    catalog.record_fixity(&record).await.unwrap();
    assert!(catalog.fixity_failures(10).await.unwrap().is_empty());

    assert_eq!(catalog.tiering_cursor("events").await.unwrap(), 0);
    catalog.set_tiering_cursor("events", 42).await.unwrap();
    catalog.set_tiering_cursor("events", 43).await.unwrap();
    assert_eq!(catalog.tiering_cursor("events").await.unwrap(), 43);
}
