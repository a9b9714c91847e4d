//! [`TierCatalog`] on SQL: tables of migration 0006 (`tier_object`, `tier_move`,
//! `study_access`, `study_retention`, `fixity_result`, `tiering_cursor`).

use std::collections::BTreeMap;

use async_trait::async_trait;
use sqlx::any::AnyRow;
use strata_types::{ObjectKey, StudyUid};

use crate::tiering::{
    DEFAULT_TIER, FixityRecord, FixityStatus, MoveState, ObjectPlacement, ObjectTier, StudyFacts,
    StudyRetention, TierCatalog, TierMove, TierUsage,
};
use crate::{CatalogError, CatalogResult};

use super::rows::CatalogRow;
use super::store::unix_time_ms;
use super::{SqlCatalog, rows};

/// The placement columns of one object key, grouped over the instances that share it.
const PLACEMENT_SELECT: &str = "SELECT i.object_key AS object_key, \
     MIN(i.sha256) AS sha256, MAX(i.size_bytes) AS size_bytes, \
     MIN(st.study_instance_uid) AS study_instance_uid, \
     COALESCE(MIN(t.tier), 'hot') AS tier \
     FROM instance i JOIN study st ON st.study_pk = i.study_pk \
     LEFT JOIN tier_object t ON t.object_key = i.object_key ";

/// The study columns of [`StudyFacts`].
const STUDY_FACTS_SELECT: &str = "SELECT st.study_pk AS study_pk, \
     st.study_instance_uid AS study_instance_uid, st.study_date AS study_date, \
     p.issuer_of_patient_id AS issuer_of_patient_id, \
     (SELECT MIN(i.created_at_ms) FROM instance i WHERE i.study_pk = st.study_pk) \
        AS first_ingest_ms, \
     a.last_access_ms AS last_access_ms, r.legal_hold AS legal_hold, \
     r.retain_until_ms AS retain_until_ms, r.pinned_tier AS pinned_tier, \
     r.pinned_until_ms AS pinned_until_ms \
     FROM study st JOIN patient p ON p.patient_pk = st.patient_pk \
     LEFT JOIN study_access a ON a.study_instance_uid = st.study_instance_uid \
     LEFT JOIN study_retention r ON r.study_instance_uid = st.study_instance_uid ";

fn sql_error(action: &'static str) -> impl FnOnce(sqlx::Error) -> CatalogError {
    move |error| CatalogError::from_sqlx(action, error)
}

fn placement(row: &AnyRow) -> CatalogResult<ObjectPlacement> {
    Ok(ObjectPlacement {
        object_key: ObjectKey::from_stored(rows::text(row, "object_key")?),
        tier: rows::text(row, "tier")?,
        study_instance_uid: rows::uid(row, "study_instance_uid")?,
        sha256: rows::text(row, "sha256")?,
        size_bytes: u64::try_from(rows::integer(row, "size_bytes")?)
            .map_err(|_| CatalogError::corrupted("size_bytes"))?,
    })
}

fn tier_move(row: &impl CatalogRow) -> CatalogResult<TierMove> {
    let state = match row.text("state")?.as_str() {
        "copying" => MoveState::Copying,
        "committed" => MoveState::Committed,
        _ => return Err(CatalogError::corrupted("tier_move.state")),
    };
    Ok(TierMove {
        object_key: ObjectKey::from_stored(row.text("object_key")?),
        from_tier: row.text("from_tier")?,
        to_tier: row.text("to_tier")?,
        state,
        created_at_ms: row.integer("created_at_ms")?,
    })
}

/// The tier of an object and the study it belongs to (see `object_tier`), from its row.
fn object_tier_row(row: &impl CatalogRow, move_opt: Option<TierMove>) -> CatalogResult<ObjectTier> {
    Ok(ObjectTier {
        tier: row
            .optional_text("tier")?
            .unwrap_or_else(|| DEFAULT_TIER.to_owned()),
        study_instance_uid: row
            .optional_text("study_instance_uid")?
            .map(|uid| {
                uid.parse()
                    .map_err(|_| CatalogError::corrupted("study_instance_uid"))
            })
            .transpose()?,
        move_opt,
    })
}

const OBJECT_TIER_SELECT: &str = "SELECT (SELECT tier FROM tier_object WHERE object_key = $1) AS tier, \
     (SELECT MIN(st.study_instance_uid) FROM instance i \
        JOIN study st ON st.study_pk = i.study_pk WHERE i.object_key = $2) \
        AS study_instance_uid";

const TIER_MOVE_SELECT: &str = "SELECT object_key, from_tier, to_tier, state, created_at_ms \
     FROM tier_move WHERE object_key = $1";

fn fixity_record(row: &AnyRow) -> CatalogResult<FixityRecord> {
    Ok(FixityRecord {
        object_key: ObjectKey::from_stored(rows::text(row, "object_key")?),
        tier: rows::text(row, "tier")?,
        checked_at_ms: rows::integer(row, "checked_at_ms")?,
        deep: rows::integer(row, "deep")? != 0,
        status: FixityStatus::parse(&rows::text(row, "status")?)
            .ok_or_else(|| CatalogError::corrupted("fixity_result.status"))?,
        detail: rows::text(row, "detail")?,
    })
}

fn study_facts_row(row: &AnyRow) -> CatalogResult<(i64, StudyFacts)> {
    let study_pk = rows::integer(row, "study_pk")?;
    let facts = StudyFacts {
        study_instance_uid: rows::text(row, "study_instance_uid")?,
        study_date: rows::text(row, "study_date")?,
        issuer_of_patient_id: rows::text(row, "issuer_of_patient_id")?,
        first_ingest_ms: rows::optional_integer(row, "first_ingest_ms")?.unwrap_or(0),
        last_access_ms: rows::optional_integer(row, "last_access_ms")?,
        modalities: Vec::new(),
        calling_ae_titles: Vec::new(),
        sop_class_uids: Vec::new(),
        retention: StudyRetention {
            legal_hold: rows::optional_integer(row, "legal_hold")?.unwrap_or(0) != 0,
            retain_until_ms: rows::optional_integer(row, "retain_until_ms")?,
            pinned_tier: row.optional_text("pinned_tier")?,
            pinned_until_ms: rows::optional_integer(row, "pinned_until_ms")?,
        },
    };
    Ok((study_pk, facts))
}

impl SqlCatalog {
    /// Fills in the modalities, calling AE titles and SOP classes of the studies in `facts`
    /// (keyed by study_pk) with one query.
    async fn fill_study_sets(&self, facts: &mut BTreeMap<i64, StudyFacts>) -> CatalogResult<()> {
        if facts.is_empty() {
            return Ok(());
        }
        let placeholders: Vec<String> =
            (1..=facts.len()).map(|index| format!("${index}")).collect();
        let sql = format!(
            "SELECT DISTINCT i.study_pk AS study_pk, se.modality AS modality, \
             i.sop_class_uid AS sop_class_uid, \
             COALESCE(i.calling_ae_title, '') AS calling_ae_title \
             FROM instance i JOIN series se ON se.series_pk = i.series_pk \
             WHERE i.study_pk IN ({})",
            placeholders.join(", ")
        );
        let mut query = sqlx::query(&sql);
        for study_pk in facts.keys() {
            query = query.bind(*study_pk);
        }
        let found_rows = query
            .fetch_all(&self.pool)
            .await
            .map_err(sql_error("read the studies' modalities"))?;
        for row in &found_rows {
            let Some(study) = facts.get_mut(&rows::integer(row, "study_pk")?) else {
                continue;
            };
            let push_unique = |values: &mut Vec<String>, value: String| {
                if !value.is_empty() && !values.contains(&value) {
                    values.push(value);
                }
            };
            push_unique(&mut study.modalities, rows::text(row, "modality")?);
            push_unique(&mut study.sop_class_uids, rows::text(row, "sop_class_uid")?);
            push_unique(
                &mut study.calling_ae_titles,
                rows::text(row, "calling_ae_title")?.trim().to_owned(),
            );
        }
        Ok(())
    }
}

#[async_trait]
impl TierCatalog for SqlCatalog {
    async fn object_tier(&self, object_key: &ObjectKey) -> CatalogResult<ObjectTier> {
        // On every first read of an object (a frame, a retrieval): the synchronous readers.
        let read = self.sqlite_readers.as_ref().and_then(|readers| {
            readers.read_or_fall_back("read the tier of an object", |connection| {
                let move_opt = connection
                    .prepare_cached(TIER_MOVE_SELECT)?
                    .query([object_key.as_str()])?
                    .next()?
                    .map(tier_move)
                    .transpose();
                let mut statement = connection.prepare_cached(OBJECT_TIER_SELECT)?;
                let mut found = statement.query([object_key.as_str(), object_key.as_str()])?;
                let row = found.next()?.ok_or(rusqlite::Error::QueryReturnedNoRows)?;
                Ok(move_opt.and_then(|move_opt| object_tier_row(row, move_opt)))
            })
        });
        if let Some(object_tier) = read {
            return object_tier;
        }
        let row = sqlx::query(OBJECT_TIER_SELECT)
            .bind(object_key.as_str())
            .bind(object_key.as_str())
            .fetch_one(&self.pool)
            .await
            .map_err(sql_error("read the tier of an object"))?;
        let move_row = sqlx::query(TIER_MOVE_SELECT)
            .bind(object_key.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(sql_error("read the move of an object"))?;
        object_tier_row(&row, move_row.as_ref().map(tier_move).transpose()?)
    }

    async fn study_placements(
        &self,
        study_instance_uid: &StudyUid,
    ) -> CatalogResult<Vec<ObjectPlacement>> {
        let found_rows = sqlx::query(&format!(
            "{PLACEMENT_SELECT} WHERE st.study_instance_uid = $1 \
             GROUP BY i.object_key ORDER BY i.object_key"
        ))
        .bind(study_instance_uid.as_str())
        .fetch_all(&self.pool)
        .await
        .map_err(sql_error("read the placements of a study"))?;
        found_rows.iter().map(placement).collect()
    }

    async fn placements_of(
        &self,
        object_keys: &[ObjectKey],
    ) -> CatalogResult<Vec<ObjectPlacement>> {
        /// Bound parameters per statement, well under SQLite's and PostgreSQL's limits.
        const KEYS_PER_QUERY: usize = 500;
        let mut placements = Vec::with_capacity(object_keys.len());
        for keys in object_keys.chunks(KEYS_PER_QUERY) {
            let mut builder = super::builder::SqlBuilder::new(&format!(
                "{PLACEMENT_SELECT} WHERE i.object_key IN "
            ));
            builder.push_bind_list(keys.iter().map(ObjectKey::as_str));
            builder.push(" GROUP BY i.object_key");
            let found_rows = builder
                .build()
                .fetch_all(&self.pool)
                .await
                .map_err(sql_error("read object placements"))?;
            for row in &found_rows {
                placements.push(placement(row)?);
            }
        }
        Ok(placements)
    }

    async fn placements_after(
        &self,
        after: Option<&ObjectKey>,
        limit: u32,
    ) -> CatalogResult<Vec<ObjectPlacement>> {
        let found_rows = sqlx::query(&format!(
            "{PLACEMENT_SELECT} WHERE i.object_key > $1 \
             GROUP BY i.object_key ORDER BY i.object_key LIMIT $2"
        ))
        .bind(after.map(ObjectKey::as_str).unwrap_or(""))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(sql_error("read object placements"))?;
        found_rows.iter().map(placement).collect()
    }

    async fn study_facts_after(
        &self,
        after: Option<&str>,
        limit: u32,
    ) -> CatalogResult<Vec<StudyFacts>> {
        let found_rows = sqlx::query(&format!(
            "{STUDY_FACTS_SELECT} WHERE st.study_instance_uid > $1 \
             ORDER BY st.study_instance_uid LIMIT $2"
        ))
        .bind(after.unwrap_or(""))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(sql_error("read study facts"))?;
        let mut order = Vec::with_capacity(found_rows.len());
        let mut by_pk = BTreeMap::new();
        for row in &found_rows {
            let (study_pk, facts) = study_facts_row(row)?;
            order.push(study_pk);
            by_pk.insert(study_pk, facts);
        }
        self.fill_study_sets(&mut by_pk).await?;
        Ok(order
            .into_iter()
            .filter_map(|study_pk| by_pk.remove(&study_pk))
            .collect())
    }

    async fn study_facts(
        &self,
        study_instance_uid: &StudyUid,
    ) -> CatalogResult<Option<StudyFacts>> {
        let row_opt = sqlx::query(&format!(
            "{STUDY_FACTS_SELECT} WHERE st.study_instance_uid = $1"
        ))
        .bind(study_instance_uid.as_str())
        .fetch_optional(&self.pool)
        .await
        .map_err(sql_error("read study facts"))?;
        let Some(row) = row_opt else {
            return Ok(None);
        };
        let (study_pk, facts) = study_facts_row(&row)?;
        let mut by_pk = BTreeMap::from([(study_pk, facts)]);
        self.fill_study_sets(&mut by_pk).await?;
        Ok(by_pk.remove(&study_pk))
    }

    async fn begin_move(
        &self,
        object_key: &ObjectKey,
        from_tier: &str,
        to_tier: &str,
    ) -> CatalogResult<bool> {
        let _write_guard = self.write_guard().await;
        let action = "journal an object move";
        let mut transaction = self.begin_write().await.map_err(sql_error(action))?;
        let inserted = sqlx::query(
            "INSERT INTO tier_move (object_key, from_tier, to_tier, state, created_at_ms, \
             updated_at_ms) VALUES ($1, $2, $3, 'copying', $4, $5) \
             ON CONFLICT (object_key) DO NOTHING",
        )
        .bind(object_key.as_str())
        .bind(from_tier)
        .bind(to_tier)
        .bind(unix_time_ms())
        .bind(unix_time_ms())
        .execute(&mut *transaction)
        .await
        .map_err(sql_error(action))?
        .rows_affected();
        let current_tier: Option<String> =
            sqlx::query_scalar("SELECT tier FROM tier_object WHERE object_key = $1")
                .bind(object_key.as_str())
                .fetch_optional(&mut *transaction)
                .await
                .map_err(sql_error(action))?;
        let on_source = current_tier.as_deref().unwrap_or(DEFAULT_TIER) == from_tier;
        if inserted == 1 && on_source {
            transaction.commit().await.map_err(sql_error(action))?;
            Ok(true)
        } else {
            transaction.rollback().await.map_err(sql_error(action))?;
            Ok(false)
        }
    }

    async fn commit_move(&self, object_key: &ObjectKey) -> CatalogResult<bool> {
        let _write_guard = self.write_guard().await;
        let action = "commit an object move";
        let now_ms = unix_time_ms();
        let mut transaction = self.begin_write().await.map_err(sql_error(action))?;
        let to_tier: Option<String> = sqlx::query_scalar(
            "UPDATE tier_move SET state = 'committed', updated_at_ms = $1 \
             WHERE object_key = $2 AND state = 'copying' RETURNING to_tier",
        )
        .bind(now_ms)
        .bind(object_key.as_str())
        .fetch_optional(&mut *transaction)
        .await
        .map_err(sql_error(action))?;
        let Some(to_tier) = to_tier else {
            transaction.rollback().await.map_err(sql_error(action))?;
            return Ok(false);
        };
        if to_tier == DEFAULT_TIER {
            sqlx::query("DELETE FROM tier_object WHERE object_key = $1")
                .bind(object_key.as_str())
                .execute(&mut *transaction)
                .await
                .map_err(sql_error(action))?;
        } else {
            sqlx::query(
                "INSERT INTO tier_object (object_key, tier, updated_at_ms) VALUES ($1, $2, $3) \
                 ON CONFLICT (object_key) DO UPDATE SET tier = excluded.tier, \
                 updated_at_ms = excluded.updated_at_ms",
            )
            .bind(object_key.as_str())
            .bind(&to_tier)
            .bind(now_ms)
            .execute(&mut *transaction)
            .await
            .map_err(sql_error(action))?;
        }
        transaction.commit().await.map_err(sql_error(action))?;
        Ok(true)
    }

    async fn end_move(&self, object_key: &ObjectKey) -> CatalogResult<()> {
        let _write_guard = self.write_guard().await;
        sqlx::query("DELETE FROM tier_move WHERE object_key = $1")
            .bind(object_key.as_str())
            .execute(&self.pool)
            .await
            .map_err(sql_error("remove a finished object move"))?;
        Ok(())
    }

    async fn moves(&self) -> CatalogResult<Vec<TierMove>> {
        let found_rows = sqlx::query(
            "SELECT object_key, from_tier, to_tier, state, created_at_ms FROM tier_move \
             ORDER BY created_at_ms, object_key",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(sql_error("read the move journal"))?;
        found_rows.iter().map(tier_move).collect()
    }

    async fn forget_object(&self, object_key: &ObjectKey) -> CatalogResult<()> {
        let _write_guard = self.write_guard().await;
        let action = "forget the tier of a deleted object";
        let mut transaction = self.begin_write().await.map_err(sql_error(action))?;
        for statement in [
            "DELETE FROM tier_move WHERE object_key = $1",
            "DELETE FROM tier_object WHERE object_key = $1",
            "DELETE FROM fixity_result WHERE object_key = $1",
        ] {
            sqlx::query(statement)
                .bind(object_key.as_str())
                .execute(&mut *transaction)
                .await
                .map_err(sql_error(action))?;
        }
        transaction.commit().await.map_err(sql_error(action))?;
        Ok(())
    }

    async fn record_study_access(&self, accesses: &[(StudyUid, i64)]) -> CatalogResult<()> {
        if accesses.is_empty() {
            return Ok(());
        }
        let _write_guard = self.write_guard().await;
        let action = "record study reads";
        let mut transaction = self.begin_write().await.map_err(sql_error(action))?;
        for (study_instance_uid, accessed_at_ms) in accesses {
            sqlx::query(
                "INSERT INTO study_access (study_instance_uid, last_access_ms) VALUES ($1, $2) \
                 ON CONFLICT (study_instance_uid) DO UPDATE SET last_access_ms = \
                 CASE WHEN excluded.last_access_ms > study_access.last_access_ms \
                 THEN excluded.last_access_ms ELSE study_access.last_access_ms END",
            )
            .bind(study_instance_uid.as_str())
            .bind(*accessed_at_ms)
            .execute(&mut *transaction)
            .await
            .map_err(sql_error(action))?;
        }
        transaction.commit().await.map_err(sql_error(action))?;
        Ok(())
    }

    async fn study_retention(
        &self,
        study_instance_uid: &StudyUid,
    ) -> CatalogResult<StudyRetention> {
        let row_opt = sqlx::query(
            "SELECT legal_hold, retain_until_ms, pinned_tier, pinned_until_ms \
             FROM study_retention WHERE study_instance_uid = $1",
        )
        .bind(study_instance_uid.as_str())
        .fetch_optional(&self.pool)
        .await
        .map_err(sql_error("read a study's retention"))?;
        let Some(row) = row_opt else {
            return Ok(StudyRetention::default());
        };
        Ok(StudyRetention {
            legal_hold: rows::integer(&row, "legal_hold")? != 0,
            retain_until_ms: rows::optional_integer(&row, "retain_until_ms")?,
            pinned_tier: row.optional_text("pinned_tier")?,
            pinned_until_ms: rows::optional_integer(&row, "pinned_until_ms")?,
        })
    }

    async fn set_study_retention(
        &self,
        study_instance_uid: &StudyUid,
        retention: &StudyRetention,
    ) -> CatalogResult<()> {
        let _write_guard = self.write_guard().await;
        sqlx::query(
            "INSERT INTO study_retention (study_instance_uid, legal_hold, retain_until_ms, \
             pinned_tier, pinned_until_ms, updated_at_ms) VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (study_instance_uid) DO UPDATE SET legal_hold = excluded.legal_hold, \
             retain_until_ms = excluded.retain_until_ms, pinned_tier = excluded.pinned_tier, \
             pinned_until_ms = excluded.pinned_until_ms, updated_at_ms = excluded.updated_at_ms",
        )
        .bind(study_instance_uid.as_str())
        .bind(i64::from(retention.legal_hold))
        .bind(retention.retain_until_ms)
        .bind(retention.pinned_tier.as_deref())
        .bind(retention.pinned_until_ms)
        .bind(unix_time_ms())
        .execute(&self.pool)
        .await
        .map_err(sql_error("set a study's retention"))?;
        Ok(())
    }

    async fn record_fixity(&self, record: &FixityRecord) -> CatalogResult<()> {
        let _write_guard = self.write_guard().await;
        sqlx::query(
            "INSERT INTO fixity_result (object_key, tier, checked_at_ms, deep, status, detail) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (object_key) DO UPDATE SET \
             tier = excluded.tier, checked_at_ms = excluded.checked_at_ms, \
             deep = excluded.deep, status = excluded.status, detail = excluded.detail",
        )
        .bind(record.object_key.as_str())
        .bind(&record.tier)
        .bind(record.checked_at_ms)
        .bind(i64::from(record.deep))
        .bind(record.status.as_str())
        .bind(&record.detail)
        .execute(&self.pool)
        .await
        .map_err(sql_error("record a fixity result"))?;
        Ok(())
    }

    async fn fixity_failures(&self, limit: u32) -> CatalogResult<Vec<FixityRecord>> {
        let found_rows = sqlx::query(
            "SELECT object_key, tier, checked_at_ms, deep, status, detail FROM fixity_result \
             WHERE status NOT IN ('ok', 'repaired') ORDER BY checked_at_ms DESC, object_key \
             LIMIT $1",
        )
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(sql_error("read fixity failures"))?;
        found_rows.iter().map(fixity_record).collect()
    }

    async fn tier_usage(&self) -> CatalogResult<Vec<TierUsage>> {
        let found_rows = sqlx::query(
            "SELECT COALESCE(t.tier, 'hot') AS tier, COUNT(*) AS num_objects, \
             CAST(COALESCE(SUM(k.size_bytes), 0) AS BIGINT) AS num_bytes \
             FROM (SELECT object_key, MAX(size_bytes) AS size_bytes FROM instance \
                   GROUP BY object_key) k \
             LEFT JOIN tier_object t ON t.object_key = k.object_key \
             GROUP BY COALESCE(t.tier, 'hot') ORDER BY 1",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(sql_error("count objects per tier"))?;
        found_rows
            .iter()
            .map(|row| {
                Ok(TierUsage {
                    tier: rows::text(row, "tier")?,
                    num_objects: u64::try_from(rows::integer(row, "num_objects")?)
                        .map_err(|_| CatalogError::corrupted("num_objects"))?,
                    num_bytes: u64::try_from(rows::integer(row, "num_bytes")?)
                        .map_err(|_| CatalogError::corrupted("num_bytes"))?,
                })
            })
            .collect()
    }

    async fn tiering_cursor(&self, name: &str) -> CatalogResult<i64> {
        let position: Option<i64> =
            sqlx::query_scalar("SELECT position FROM tiering_cursor WHERE name = $1")
                .bind(name)
                .fetch_optional(&self.pool)
                .await
                .map_err(sql_error("read the tiering cursor"))?;
        Ok(position.unwrap_or(0))
    }

    async fn set_tiering_cursor(&self, name: &str, position: i64) -> CatalogResult<()> {
        let _write_guard = self.write_guard().await;
        sqlx::query(
            "INSERT INTO tiering_cursor (name, position) VALUES ($1, $2) \
             ON CONFLICT (name) DO UPDATE SET position = excluded.position",
        )
        .bind(name)
        .bind(position)
        .execute(&self.pool)
        .await
        .map_err(sql_error("store the tiering cursor"))?;
        Ok(())
    }
}
