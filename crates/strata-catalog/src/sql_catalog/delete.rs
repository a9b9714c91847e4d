//! `delete`: one transaction that removes the instances of a study, series or instance scope,
//! the series / study / patient rows they leave empty, recounts what remains and appends one
//! `InstanceDeleted` event per removed instance.
//!
//! Lock order is the one of `store_instance` (patient, study, series, instance, event log), so
//! a delete and a concurrent store of the same study cannot deadlock on PostgreSQL: the
//! patient and study rows are locked first (`FOR UPDATE`), which also serialises the delete
//! with every store into the study (a store updates the study row before it touches a series).
//! On SQLite the writer mutex and `BEGIN IMMEDIATE` serialise everything.
//!
//! Counters are recounted from the remaining rows rather than decremented, so they end up
//! right even if they had drifted.
//!
//! Objects are not touched here: the caller deletes them after the commit (see
//! [`crate::Catalog::delete`]).

use std::collections::BTreeMap;

use sqlx::{AnyConnection, Executor, Row};
use strata_types::SeriesUid;

use crate::{
    CatalogError, CatalogErrorKind, CatalogResult, DeleteOutcome, DeleteScope, EventKind,
    InstanceLocation,
};

use super::builder::SqlBuilder;
use super::store::unix_time_ms;
use super::{Engine, SqlCatalog, instance_location, rows};

/// Deletes `scope`; see [`crate::Catalog::delete`].
pub(crate) async fn delete(
    catalog: &SqlCatalog,
    scope: &DeleteScope,
) -> CatalogResult<DeleteOutcome> {
    let outcome = {
        let _write_guard = catalog.write_guard().await;
        delete_once(catalog, scope).await
    };
    match outcome {
        Ok(Some(outcome)) => Ok(outcome),
        Ok(None) => Err(CatalogError::new(
            CatalogErrorKind::NotFound,
            format!("no {} to delete", describe(scope)),
        )),
        Err(error) => Err(CatalogError::from_sqlx("delete instances", error)),
    }
}

/// Names the scope by its UIDs (UIDs are not patient data).
fn describe(scope: &DeleteScope) -> String {
    match scope {
        DeleteScope::Study { study_instance_uid } => format!("study {study_instance_uid}"),
        DeleteScope::Series {
            study_instance_uid,
            series_instance_uid,
        } => format!("series {series_instance_uid} in study {study_instance_uid}"),
        DeleteScope::Instance {
            study_instance_uid,
            series_instance_uid,
            sop_instance_uid,
        } => format!(
            "instance {sop_instance_uid} in series {series_instance_uid} of study \
             {study_instance_uid}"
        ),
    }
}

/// A removed instance with the keys of its rows.
struct SelectedInstance {
    instance_pk: i64,
    series_pk: i64,
    location: InstanceLocation,
}

/// Runs the delete transaction; `None` when the scope matches nothing (rolled back).
async fn delete_once(
    catalog: &SqlCatalog,
    scope: &DeleteScope,
) -> Result<Option<DeleteOutcome>, sqlx::Error> {
    let row_lock = match catalog.engine {
        Engine::Postgres => " FOR UPDATE",
        Engine::Sqlite => "",
    };
    let mut transaction = catalog.begin_write().await?;
    let connection: &mut AnyConnection = &mut transaction;

    // A study keeps its patient for life, so the unlocked read of patient_pk stays valid.
    let study_row =
        sqlx::query("SELECT study_pk, patient_pk FROM study WHERE study_instance_uid = $1")
            .bind(scope.study_instance_uid().as_str())
            .fetch_optional(&mut *connection)
            .await?;
    let Some(study_row) = study_row else {
        transaction.rollback().await?;
        return Ok(None);
    };
    let study_pk: i64 = study_row.try_get("study_pk")?;
    let patient_pk: i64 = study_row.try_get("patient_pk")?;
    sqlx::query(&format!(
        "SELECT patient_pk FROM patient WHERE patient_pk = $1{row_lock}"
    ))
    .bind(patient_pk)
    .fetch_optional(&mut *connection)
    .await?;
    sqlx::query(&format!(
        "SELECT study_pk FROM study WHERE study_pk = $1{row_lock}"
    ))
    .bind(study_pk)
    .fetch_optional(&mut *connection)
    .await?;

    let selected = select_instances(connection, study_pk, scope).await?;
    if selected.is_empty() {
        transaction.rollback().await?;
        return Ok(None);
    }

    if catalog.engine == Engine::Postgres {
        // As in `store_instance`: events must become visible in sequence order.
        connection
            .execute("LOCK TABLE event IN SHARE ROW EXCLUSIVE MODE")
            .await?;
    }
    append_deleted_events(connection, &selected).await?;

    let mut removed_by_series: BTreeMap<i64, SeriesUid> = BTreeMap::new();
    for instance in &selected {
        removed_by_series
            .entry(instance.series_pk)
            .or_insert_with(|| instance.location.series_instance_uid.clone());
    }
    match scope {
        DeleteScope::Study { .. } => {
            sqlx::query("DELETE FROM instance WHERE study_pk = $1")
                .bind(study_pk)
                .execute(&mut *connection)
                .await?;
        }
        DeleteScope::Series { .. } => {
            for series_pk in removed_by_series.keys() {
                sqlx::query("DELETE FROM instance WHERE series_pk = $1")
                    .bind(*series_pk)
                    .execute(&mut *connection)
                    .await?;
            }
        }
        DeleteScope::Instance { .. } => {
            for instance in &selected {
                sqlx::query("DELETE FROM instance WHERE instance_pk = $1")
                    .bind(instance.instance_pk)
                    .execute(&mut *connection)
                    .await?;
            }
        }
    }

    let mut removed_series = Vec::new();
    for (series_pk, series_instance_uid) in &removed_by_series {
        let remaining = count(
            connection,
            "SELECT COUNT(*) AS num_rows FROM instance WHERE series_pk = $1",
            *series_pk,
        )
        .await?;
        if remaining == 0 {
            sqlx::query("DELETE FROM series_request_attribute WHERE series_pk = $1")
                .bind(*series_pk)
                .execute(&mut *connection)
                .await?;
            sqlx::query("DELETE FROM series WHERE series_pk = $1")
                .bind(*series_pk)
                .execute(&mut *connection)
                .await?;
            removed_series.push(series_instance_uid.clone());
        } else {
            sqlx::query("UPDATE series SET num_instances = $2 WHERE series_pk = $1")
                .bind(*series_pk)
                .bind(remaining)
                .execute(&mut *connection)
                .await?;
        }
    }

    let remaining_instances = count(
        connection,
        "SELECT COUNT(*) AS num_rows FROM instance WHERE study_pk = $1",
        study_pk,
    )
    .await?;
    let remaining_series = count(
        connection,
        "SELECT COUNT(*) AS num_rows FROM series WHERE study_pk = $1",
        study_pk,
    )
    .await?;
    let study_removed = remaining_instances == 0 && remaining_series == 0;
    let mut patient_removed = false;
    if study_removed {
        sqlx::query("DELETE FROM study WHERE study_pk = $1")
            .bind(study_pk)
            .execute(&mut *connection)
            .await?;
        let remaining_studies = count(
            connection,
            "SELECT COUNT(*) AS num_rows FROM study WHERE patient_pk = $1",
            patient_pk,
        )
        .await?;
        if remaining_studies == 0 {
            sqlx::query("DELETE FROM patient WHERE patient_pk = $1")
                .bind(patient_pk)
                .execute(&mut *connection)
                .await?;
            patient_removed = true;
        }
    } else {
        sqlx::query("UPDATE study SET num_instances = $2, num_series = $3 WHERE study_pk = $1")
            .bind(study_pk)
            .bind(remaining_instances)
            .bind(remaining_series)
            .execute(&mut *connection)
            .await?;
    }

    transaction.commit().await?;
    Ok(Some(DeleteOutcome {
        instances: selected
            .into_iter()
            .map(|instance| instance.location)
            .collect(),
        removed_series,
        study_removed,
        patient_removed,
    }))
}

/// Returns the instances of `scope` in study `study_pk`, in WADO-RS order.
async fn select_instances(
    connection: &mut AnyConnection,
    study_pk: i64,
    scope: &DeleteScope,
) -> Result<Vec<SelectedInstance>, sqlx::Error> {
    let mut builder = SqlBuilder::new(
        "SELECT i.instance_pk, i.series_pk, st.study_instance_uid, se.series_instance_uid, \
         i.sop_instance_uid, i.sop_class_uid, i.transfer_syntax_uid, i.object_key, \
         i.size_bytes, i.sha256 FROM instance i \
         JOIN series se ON se.series_pk = i.series_pk \
         JOIN study st ON st.study_pk = i.study_pk \
         WHERE i.study_pk = ",
    );
    builder.push_bind(study_pk);
    if let Some(series_instance_uid) = scope.series_instance_uid() {
        builder
            .push(" AND se.series_instance_uid = ")
            .push_bind(series_instance_uid.as_str());
    }
    if let Some(sop_instance_uid) = scope.sop_instance_uid() {
        builder
            .push(" AND i.sop_instance_uid = ")
            .push_bind(sop_instance_uid.as_str());
    }
    builder.push(
        " ORDER BY se.series_number NULLS LAST, se.series_pk, \
         i.instance_number NULLS LAST, i.instance_pk",
    );
    let found_rows = builder.build().fetch_all(&mut *connection).await?;
    found_rows
        .iter()
        .map(|row| {
            let location = instance_location(row).map_err(|error| {
                sqlx::Error::Decode(Box::new(std::io::Error::other(error.to_string())))
            })?;
            Ok(SelectedInstance {
                instance_pk: rows::integer(row, "instance_pk")
                    .map_err(|error| sqlx::Error::Decode(Box::new(error)))?,
                series_pk: rows::integer(row, "series_pk")
                    .map_err(|error| sqlx::Error::Decode(Box::new(error)))?,
                location,
            })
        })
        .collect()
}

/// Appends one `InstanceDeleted` event per removed instance, in the order given.
async fn append_deleted_events(
    connection: &mut AnyConnection,
    selected: &[SelectedInstance],
) -> Result<(), sqlx::Error> {
    let created_at_ms = unix_time_ms();
    for instance in selected {
        let location = &instance.location;
        sqlx::query(
            "INSERT INTO event (kind, study_instance_uid, series_instance_uid, sop_instance_uid, \
             object_key, created_at_ms) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(EventKind::InstanceDeleted.as_str())
        .bind(location.study_instance_uid.as_str())
        .bind(location.series_instance_uid.as_str())
        .bind(location.sop_instance_uid.as_str())
        .bind(location.object.key.as_str())
        .bind(created_at_ms)
        .execute(&mut *connection)
        .await?;
    }
    Ok(())
}

/// Runs a `SELECT COUNT(*) AS num_rows ... = $1` statement.
async fn count(connection: &mut AnyConnection, sql: &str, key: i64) -> Result<i64, sqlx::Error> {
    let row = sqlx::query(sql).bind(key).fetch_one(connection).await?;
    row.try_get("num_rows")
}

/// Returns whether an instance row refers to `object_key`.
pub(crate) async fn object_key_referenced(
    catalog: &SqlCatalog,
    object_key: &str,
) -> CatalogResult<bool> {
    let row = sqlx::query("SELECT 1 AS found FROM instance WHERE object_key = $1 LIMIT 1")
        .bind(object_key)
        .fetch_optional(&catalog.pool)
        .await
        .map_err(|error| CatalogError::from_sqlx("look up an object key", error))?;
    Ok(row.is_some())
}
