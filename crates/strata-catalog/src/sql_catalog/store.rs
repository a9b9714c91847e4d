//! `store_instance`: one transaction that upserts patient, study and series, inserts the
//! instance, bumps the counters and appends the event.
//!
//! Races: two writers may both find no instance row and go on. On SQLite the writer mutex and
//! `BEGIN IMMEDIATE` make that impossible; on PostgreSQL the loser's
//! `INSERT ... ON CONFLICT DO NOTHING` waits for the winner's commit and inserts nothing (or a
//! statement fails with SQLSTATE 23505). Either way the transaction rolls back and the instance
//! row the winner committed decides the outcome: `AlreadyStored` or `Conflict`.
//!
//! Attributes of existing entities are merged: a non-empty value in the new record replaces the
//! stored one, an empty one keeps it ("latest non-empty wins"). An existing study keeps its
//! patient, and an existing series its study. Patients without a Patient ID are never merged
//! by ID: such a record joins the patient of its study, or gets a new patient.

use std::time::{SystemTime, UNIX_EPOCH};

use sqlx::AnyConnection;
use sqlx::{Any, Executor};
use tracing::debug;

use crate::error::is_unique_violation;
use crate::{
    CatalogError, CatalogErrorKind, CatalogResult, EventKind, InstanceRecord, PatientAttributes,
    SeriesAttributes, StoreOutcome, StudyAttributes,
};

use super::builder::{SqlBuilder, SqlValue};
use super::filter::fold_person_name;
use super::{Engine, SqlCatalog};

/// How many times a store is retried after losing a uniqueness race.
const MAX_ATTEMPTS: u32 = 3;

/// Stores one instance; see [`crate::Catalog::store_instance`].
pub(crate) async fn store_instance(
    catalog: &SqlCatalog,
    record: &InstanceRecord,
) -> CatalogResult<StoreOutcome> {
    let sop_instance_uid = record.instance.sop_instance_uid.as_str();
    for attempt in 1..=MAX_ATTEMPTS {
        let attempt_result = {
            let _write_guard = catalog.write_guard().await;
            store_once(catalog, record).await
        };
        match attempt_result {
            Ok(Some(outcome)) => return Ok(outcome),
            Ok(None) => {}
            Err(error) if is_unique_violation(&error) => {}
            Err(error) => return Err(CatalogError::from_sqlx("store an instance", error)),
        }
        // Another writer committed a row this transaction was about to create.
        let existing = existing_sha256(&catalog.pool, sop_instance_uid)
            .await
            .map_err(|error| CatalogError::from_sqlx("store an instance", error))?;
        if let Some(existing_sha256) = existing {
            return Ok(outcome_for_existing(existing_sha256, record));
        }
        debug!(
            sop_instance_uid,
            attempt, "store lost a uniqueness race, retrying"
        );
    }
    Err(CatalogError::new(
        CatalogErrorKind::AlreadyExists,
        format!("failed to store an instance: uniqueness conflicts after {MAX_ATTEMPTS} attempts"),
    ))
}

/// Returns the SHA-256 of the instance with this SOP Instance UID, if it is stored.
pub(crate) async fn existing_sha256<'e, E>(
    executor: E,
    sop_instance_uid: &str,
) -> Result<Option<String>, sqlx::Error>
where
    E: Executor<'e, Database = Any>,
{
    let row = sqlx::query("SELECT sha256 FROM instance WHERE sop_instance_uid = $1")
        .bind(sop_instance_uid)
        .fetch_optional(executor)
        .await?;
    row.map(|row| sqlx::Row::try_get(&row, "sha256"))
        .transpose()
}

fn outcome_for_existing(existing_sha256: String, record: &InstanceRecord) -> StoreOutcome {
    if existing_sha256 == record.object.sha256 {
        StoreOutcome::AlreadyStored
    } else {
        StoreOutcome::Conflict { existing_sha256 }
    }
}

/// Runs one store transaction. Returns `None` when another writer inserted the instance first.
async fn store_once(
    catalog: &SqlCatalog,
    record: &InstanceRecord,
) -> Result<Option<StoreOutcome>, sqlx::Error> {
    let mut transaction = catalog.begin_write().await?;
    let connection: &mut AnyConnection = &mut transaction;

    if let Some(existing) =
        existing_sha256(&mut *connection, record.instance.sop_instance_uid.as_str()).await?
    {
        transaction.rollback().await?;
        return Ok(Some(outcome_for_existing(existing, record)));
    }

    let existing_study =
        sqlx::query("SELECT study_pk, patient_pk FROM study WHERE study_instance_uid = $1")
            .bind(record.study.study_instance_uid.as_str())
            .fetch_optional(&mut *connection)
            .await?
            .map(|row| {
                Ok::<_, sqlx::Error>((
                    sqlx::Row::try_get(&row, "study_pk")?,
                    sqlx::Row::try_get(&row, "patient_pk")?,
                ))
            })
            .transpose()?;

    let patient_pk = match existing_study {
        Some((_, study_patient_pk)) if record.patient.patient_id.is_empty() => {
            merge_patient(connection, study_patient_pk, &record.patient).await?;
            study_patient_pk
        }
        _ => upsert_patient(connection, &record.patient).await?,
    };
    let study_pk = match existing_study {
        Some((study_pk, _)) => {
            merge_study(connection, study_pk, &record.study).await?;
            study_pk
        }
        None => insert_study(connection, patient_pk, &record.study).await?,
    };
    let series = upsert_series(connection, study_pk, &record.series).await?;
    for item in &record.series.request_attributes {
        sqlx::query(
            "INSERT INTO series_request_attribute \
             (series_pk, scheduled_procedure_step_id, requested_procedure_id) VALUES ($1, $2, $3) \
             ON CONFLICT (series_pk, scheduled_procedure_step_id, requested_procedure_id) DO NOTHING",
        )
        .bind(series.series_pk)
        .bind(item.scheduled_procedure_step_id.as_str())
        .bind(item.requested_procedure_id.as_str())
        .execute(&mut *connection)
        .await?;
    }

    let created_at_ms = unix_time_ms();
    if !insert_instance(
        connection,
        series.series_pk,
        series.study_pk,
        record,
        created_at_ms,
    )
    .await?
    {
        transaction.rollback().await?;
        return Ok(None);
    }
    sqlx::query("UPDATE series SET num_instances = num_instances + 1 WHERE series_pk = $1")
        .bind(series.series_pk)
        .execute(&mut *connection)
        .await?;
    sqlx::query(
        "UPDATE study SET num_instances = num_instances + 1, num_series = num_series + $2 \
         WHERE study_pk = $1",
    )
    .bind(series.study_pk)
    .bind(i64::from(series.created))
    .execute(&mut *connection)
    .await?;

    if catalog.engine == Engine::Postgres {
        // Sequence numbers must become visible in order, or a follower that saw event N+1
        // would skip N for good. This lock conflicts with itself (not with readers), so event
        // inserts are serialised until commit; it is taken last to keep that window short.
        connection
            .execute("LOCK TABLE event IN SHARE ROW EXCLUSIVE MODE")
            .await?;
    }
    sqlx::query(
        "INSERT INTO event (kind, study_instance_uid, series_instance_uid, sop_instance_uid, \
         object_key, created_at_ms) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(EventKind::InstanceStored.as_str())
    .bind(record.study.study_instance_uid.as_str())
    .bind(record.series.series_instance_uid.as_str())
    .bind(record.instance.sop_instance_uid.as_str())
    .bind(record.object.key.as_str())
    .bind(created_at_ms)
    .execute(&mut *connection)
    .await?;

    transaction.commit().await?;
    Ok(Some(StoreOutcome::Created))
}

/// Inserts the patient or, when one with the same Patient ID and issuer exists, merges into it.
async fn upsert_patient(
    connection: &mut AnyConnection,
    patient: &PatientAttributes,
) -> Result<i64, sqlx::Error> {
    // Rows with an empty Patient ID are outside the partial unique index: they always insert.
    let inserted = sqlx::query(
        "INSERT INTO patient (patient_id, issuer_of_patient_id, patient_name, patient_name_upper, \
         patient_birth_date, patient_sex) VALUES ($1, $2, $3, $4, $5, $6) \
         ON CONFLICT (patient_id, issuer_of_patient_id) WHERE patient_id <> '' DO NOTHING \
         RETURNING patient_pk",
    )
    .bind(patient.patient_id.as_str())
    .bind(patient.issuer_of_patient_id.as_str())
    .bind(patient.patient_name.as_str())
    .bind(fold_person_name(&patient.patient_name))
    .bind(patient.patient_birth_date.as_str())
    .bind(patient.patient_sex.as_str())
    .fetch_optional(&mut *connection)
    .await?;
    if let Some(row) = inserted {
        return sqlx::Row::try_get(&row, "patient_pk");
    }
    let row = sqlx::query(
        "SELECT patient_pk FROM patient WHERE patient_id = $1 AND issuer_of_patient_id = $2",
    )
    .bind(patient.patient_id.as_str())
    .bind(patient.issuer_of_patient_id.as_str())
    .fetch_one(&mut *connection)
    .await?;
    let patient_pk = sqlx::Row::try_get(&row, "patient_pk")?;
    merge_patient(connection, patient_pk, patient).await?;
    Ok(patient_pk)
}

async fn merge_patient(
    connection: &mut AnyConnection,
    patient_pk: i64,
    patient: &PatientAttributes,
) -> Result<(), sqlx::Error> {
    let fields = [
        (
            "patient_name",
            SqlValue::from(patient.patient_name.as_str()),
        ),
        (
            "patient_name_upper",
            SqlValue::from(fold_person_name(&patient.patient_name)),
        ),
        (
            "patient_birth_date",
            SqlValue::from(patient.patient_birth_date.as_str()),
        ),
        ("patient_sex", SqlValue::from(patient.patient_sex.as_str())),
    ];
    merge_update("patient", "patient_pk", patient_pk, fields)
        .build()
        .execute(connection)
        .await?;
    Ok(())
}

fn study_fields(study: &StudyAttributes) -> [(&'static str, SqlValue); 8] {
    [
        ("study_date", SqlValue::from(study.study_date.as_str())),
        ("study_time", SqlValue::from(study.study_time.as_str())),
        (
            "accession_number",
            SqlValue::from(study.accession_number.as_str()),
        ),
        (
            "referring_physician_name",
            SqlValue::from(study.referring_physician_name.as_str()),
        ),
        (
            "referring_physician_name_upper",
            SqlValue::from(fold_person_name(&study.referring_physician_name)),
        ),
        ("study_id", SqlValue::from(study.study_id.as_str())),
        (
            "study_description",
            SqlValue::from(study.study_description.as_str()),
        ),
        (
            "timezone_offset_from_utc",
            SqlValue::from(study.timezone_offset_from_utc.as_str()),
        ),
    ]
}

async fn merge_study(
    connection: &mut AnyConnection,
    study_pk: i64,
    study: &StudyAttributes,
) -> Result<(), sqlx::Error> {
    merge_update("study", "study_pk", study_pk, study_fields(study))
        .build()
        .execute(connection)
        .await?;
    Ok(())
}

async fn insert_study(
    connection: &mut AnyConnection,
    patient_pk: i64,
    study: &StudyAttributes,
) -> Result<i64, sqlx::Error> {
    let fields = study_fields(study);
    let mut builder = SqlBuilder::new("INSERT INTO study (patient_pk, study_instance_uid");
    for (column, _) in &fields {
        builder.push(", ").push(column);
    }
    builder
        .push(") VALUES (")
        .push_bind(patient_pk)
        .push(", ")
        .push_bind(study.study_instance_uid.as_str());
    for (_, value) in fields {
        builder.push(", ").push_bind(value);
    }
    builder.push(") ON CONFLICT (study_instance_uid) DO NOTHING RETURNING study_pk");
    if let Some(row) = builder.build().fetch_optional(&mut *connection).await? {
        return sqlx::Row::try_get(&row, "study_pk");
    }
    // A concurrent writer created the study after this transaction looked for it.
    let row = sqlx::query("SELECT study_pk FROM study WHERE study_instance_uid = $1")
        .bind(study.study_instance_uid.as_str())
        .fetch_one(&mut *connection)
        .await?;
    let study_pk = sqlx::Row::try_get(&row, "study_pk")?;
    merge_study(connection, study_pk, study).await?;
    Ok(study_pk)
}

/// The series an instance goes into.
struct SeriesRow {
    series_pk: i64,
    /// The study the series belongs to (the one it was first stored with).
    study_pk: i64,
    created: bool,
}

fn series_fields(series: &SeriesAttributes) -> [(&'static str, SqlValue); 6] {
    [
        ("modality", SqlValue::from(series.modality.as_str())),
        ("series_number", SqlValue::from(series.series_number)),
        (
            "series_description",
            SqlValue::from(series.series_description.as_str()),
        ),
        (
            "body_part_examined",
            SqlValue::from(series.body_part_examined.as_str()),
        ),
        (
            "performed_procedure_step_start_date",
            SqlValue::from(series.performed_procedure_step_start_date.as_str()),
        ),
        (
            "performed_procedure_step_start_time",
            SqlValue::from(series.performed_procedure_step_start_time.as_str()),
        ),
    ]
}

async fn upsert_series(
    connection: &mut AnyConnection,
    study_pk: i64,
    series: &SeriesAttributes,
) -> Result<SeriesRow, sqlx::Error> {
    let select_existing = "SELECT series_pk, study_pk FROM series WHERE series_instance_uid = $1";
    let existing = sqlx::query(select_existing)
        .bind(series.series_instance_uid.as_str())
        .fetch_optional(&mut *connection)
        .await?;
    let row = match existing {
        Some(row) => row,
        None => {
            let fields = series_fields(series);
            let mut builder = SqlBuilder::new("INSERT INTO series (study_pk, series_instance_uid");
            for (column, _) in &fields {
                builder.push(", ").push(column);
            }
            builder
                .push(") VALUES (")
                .push_bind(study_pk)
                .push(", ")
                .push_bind(series.series_instance_uid.as_str());
            for (_, value) in fields {
                builder.push(", ").push_bind(value);
            }
            builder.push(") ON CONFLICT (series_instance_uid) DO NOTHING RETURNING series_pk");
            if let Some(row) = builder.build().fetch_optional(&mut *connection).await? {
                let series_pk = sqlx::Row::try_get(&row, "series_pk")?;
                return Ok(SeriesRow {
                    series_pk,
                    study_pk,
                    created: true,
                });
            }
            // A concurrent writer created the series after this transaction looked for it.
            sqlx::query(select_existing)
                .bind(series.series_instance_uid.as_str())
                .fetch_one(&mut *connection)
                .await?
        }
    };
    let series_pk = sqlx::Row::try_get(&row, "series_pk")?;
    let series_study_pk = sqlx::Row::try_get(&row, "study_pk")?;
    merge_update("series", "series_pk", series_pk, series_fields(series))
        .build()
        .execute(connection)
        .await?;
    Ok(SeriesRow {
        series_pk,
        study_pk: series_study_pk,
        created: false,
    })
}

/// Inserts the instance row; returns false when a row with its SOP Instance UID already exists.
async fn insert_instance(
    connection: &mut AnyConnection,
    series_pk: i64,
    study_pk: i64,
    record: &InstanceRecord,
    created_at_ms: i64,
) -> Result<bool, sqlx::Error> {
    let instance = &record.instance;
    // No object reaches 8 EiB; saturate rather than wrap if one ever claims to.
    let size_bytes = i64::try_from(record.object.size_bytes).unwrap_or(i64::MAX);
    let columns_and_values: [(&str, SqlValue); 19] = [
        ("series_pk", series_pk.into()),
        ("study_pk", study_pk.into()),
        (
            "sop_instance_uid",
            instance.sop_instance_uid.as_str().into(),
        ),
        ("sop_class_uid", instance.sop_class_uid.as_str().into()),
        ("instance_number", instance.instance_number.into()),
        ("image_rows", instance.rows.into()),
        ("image_columns", instance.columns.into()),
        ("bits_allocated", instance.bits_allocated.into()),
        ("number_of_frames", instance.number_of_frames.into()),
        (
            "transfer_syntax_uid",
            instance.transfer_syntax_uid.as_str().into(),
        ),
        (
            "specific_character_set",
            instance.specific_character_set.as_str().into(),
        ),
        ("object_key", record.object.key.as_str().into()),
        ("size_bytes", size_bytes.into()),
        ("sha256", record.object.sha256.as_str().into()),
        ("metadata_json", record.metadata_json.as_str().into()),
        ("source_protocol", record.source.protocol.as_str().into()),
        (
            "calling_ae_title",
            SqlValue::OptionalText(record.source.calling_ae_title.clone()),
        ),
        (
            "remote_addr",
            SqlValue::OptionalText(record.source.remote_addr.clone()),
        ),
        ("created_at_ms", created_at_ms.into()),
    ];
    let mut builder = SqlBuilder::new("INSERT INTO instance (");
    let column_list: Vec<&str> = columns_and_values
        .iter()
        .map(|(column, _)| *column)
        .collect();
    builder.push(&column_list.join(", ")).push(") VALUES ");
    builder.push_bind_list(columns_and_values.into_iter().map(|(_, value)| value));
    builder.push(" ON CONFLICT (sop_instance_uid) DO NOTHING RETURNING instance_pk");
    let inserted = builder.build().fetch_optional(connection).await?;
    Ok(inserted.is_some())
}

/// Builds `UPDATE table SET column = <new value unless empty> ... WHERE pk = ...`, restricted
/// to rows where some non-empty new value differs, so an unchanged row is not rewritten.
/// Text values count as empty when `''`, integers when NULL.
fn merge_update<const N: usize>(
    table: &str,
    pk_column: &str,
    pk: i64,
    fields: [(&'static str, SqlValue); N],
) -> SqlBuilder {
    let mut builder = SqlBuilder::new(&format!("UPDATE {table} SET "));
    let mut changed_conditions = Vec::with_capacity(N);
    for (position, (column, value)) in fields.into_iter().enumerate() {
        let is_text = matches!(value, SqlValue::Text(_));
        let placeholder = builder.bind(value);
        if position > 0 {
            builder.push(", ");
        }
        if is_text {
            builder.push(&format!(
                "{column} = CASE WHEN {placeholder} = '' THEN {column} ELSE {placeholder} END"
            ));
            changed_conditions.push(format!(
                "({placeholder} <> '' AND {column} <> {placeholder})"
            ));
        } else {
            builder.push(&format!("{column} = COALESCE({placeholder}, {column})"));
            changed_conditions.push(format!(
                "({placeholder} IS NOT NULL AND ({column} IS NULL OR {column} <> {placeholder}))"
            ));
        }
    }
    builder
        .push(&format!(" WHERE {pk_column} = "))
        .push_bind(pk);
    builder.push(&format!(" AND ({})", changed_conditions.join(" OR ")));
    builder
}

fn unix_time_ms() -> i64 {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(since_epoch.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_merge_update_keeps_stored_values_for_empty_ones() {
        let builder = merge_update(
            "series",
            "series_pk",
            7,
            [
                ("modality", SqlValue::from("CT")),
                ("series_number", SqlValue::from(None::<i64>)),
            ],
        );
        assert_eq!(
            builder.sql(),
            "UPDATE series SET modality = CASE WHEN $1 = '' THEN modality ELSE $1 END, \
             series_number = COALESCE($2, series_number) WHERE series_pk = $3 \
             AND (($1 <> '' AND modality <> $1) OR ($2 IS NOT NULL AND (series_number IS NULL \
             OR series_number <> $2)))"
        );
    }
}
