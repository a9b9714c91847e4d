//! Upserts of the patient, study and series rows of a stored instance, and the counters.
//!
//! Attributes of existing entities are merged: a non-empty value in the new record replaces the
//! stored one, an empty one (or a missing number) keeps it, so the latest non-empty value wins.
//! An existing study keeps its patient, and an existing series its study. Patients without a
//! Patient ID are never merged by ID: such a record joins the patient of its study, or gets a
//! new patient (the unique index on Patient ID + Issuer is partial, `WHERE patient_id <> ''`).
//!
//! Every "insert unless it exists" is `INSERT ... ON CONFLICT DO NOTHING RETURNING pk`
//! followed, when nothing was returned, by a `SELECT`: on PostgreSQL the insert waits for a
//! concurrent inserter of the same key to commit, after which the `SELECT` sees its row.

use crate::{InstanceRecord, PatientAttributes, SeriesAttributes, StudyAttributes};

use super::connection::{WriteConnection, WriteError};

use crate::sql_catalog::builder::{SqlBuilder, SqlValue};
use crate::sql_catalog::filter::{fold_person_name, fuzzy_name_column};

/// An existing study row.
#[derive(Debug, Clone, Copy)]
pub(super) struct StudyRow {
    pub(super) study_pk: i64,
    pub(super) patient_pk: i64,
}

/// The series an instance goes into.
#[derive(Debug, Clone, Copy)]
pub(super) struct SeriesRow {
    pub(super) series_pk: i64,
    /// The study the series belongs to (the one it was first stored with).
    pub(super) study_pk: i64,
}

/// What the catalog already holds of a record's entities, read in one statement before
/// anything is written.
#[derive(Debug, Clone)]
pub(super) struct KnownRows {
    /// The SHA-256 of the instance with the record's SOP Instance UID, if it is stored.
    pub(super) instance_sha256: Option<String>,
    pub(super) study: Option<StudyRow>,
    pub(super) series: Option<SeriesRow>,
    /// The patient with the record's (non-empty) Patient ID and issuer.
    pub(super) patient_pk: Option<i64>,
}

/// Looks up the record's instance, study, series and patient in one statement: one round
/// trip instead of four on the path every instance takes. The rows may change before they
/// are written (another PostgreSQL writer); the writes that depend on them detect that.
pub(super) async fn lookup(
    connection: &mut impl WriteConnection,
    record: &InstanceRecord,
) -> Result<KnownRows, WriteError> {
    let statement = SqlBuilder::with_values(
        "SELECT \
         (SELECT sha256 FROM instance WHERE sop_instance_uid = $1) AS instance_sha256, \
         (SELECT study_pk FROM study WHERE study_instance_uid = $2) AS study_pk, \
         (SELECT patient_pk FROM study WHERE study_instance_uid = $2) AS study_patient_pk, \
         (SELECT series_pk FROM series WHERE series_instance_uid = $3) AS series_pk, \
         (SELECT study_pk FROM series WHERE series_instance_uid = $3) AS series_study_pk, \
         (SELECT patient_pk FROM patient WHERE patient_id = $4 AND issuer_of_patient_id = $5 \
          AND patient_id <> '') AS patient_pk",
        [
            record.instance.sop_instance_uid.as_str().into(),
            record.study.study_instance_uid.as_str().into(),
            record.series.series_instance_uid.as_str().into(),
            record.patient.patient_id.as_str().into(),
            record.patient.issuer_of_patient_id.as_str().into(),
        ],
    );
    let row = connection.fetch_one(&statement).await?;
    // Both keys of a row, or `None` when the row does not exist.
    let keys = |first: &str, second: &str| -> Result<Option<(i64, i64)>, WriteError> {
        let first = row.optional_integer(first)?;
        Ok(first.zip(row.optional_integer(second)?))
    };
    let study = keys("study_pk", "study_patient_pk")?.map(|(study_pk, patient_pk)| StudyRow {
        study_pk,
        patient_pk,
    });
    let series = keys("series_pk", "series_study_pk")?.map(|(series_pk, study_pk)| SeriesRow {
        series_pk,
        study_pk,
    });
    Ok(KnownRows {
        instance_sha256: row.optional_text("instance_sha256")?,
        study,
        series,
        patient_pk: row.optional_integer("patient_pk")?,
    })
}

/// Returns the study row with the record's Study Instance UID, if any.
pub(super) async fn find_study(
    connection: &mut impl WriteConnection,
    study: &StudyAttributes,
) -> Result<Option<StudyRow>, WriteError> {
    let statement = SqlBuilder::with_values(
        "SELECT study_pk, patient_pk FROM study WHERE study_instance_uid = $1",
        [study.study_instance_uid.as_str().into()],
    );
    let row = connection.fetch_optional(&statement).await?;
    row.map(|row| {
        Ok(StudyRow {
            study_pk: row.integer("study_pk")?,
            patient_pk: row.integer("patient_pk")?,
        })
    })
    .transpose()
}

/// Inserts the patient or, when one with the same Patient ID and issuer exists (`known_pk`
/// from [`lookup`], or found on conflict), merges into it.
pub(super) async fn upsert_patient(
    connection: &mut impl WriteConnection,
    patient: &PatientAttributes,
    known_pk: Option<i64>,
) -> Result<i64, WriteError> {
    if let Some(patient_pk) = known_pk {
        merge_patient(connection, patient_pk, patient).await?;
        return Ok(patient_pk);
    }
    // Rows with an empty Patient ID are outside the partial unique index: they always insert.
    let insert = SqlBuilder::with_values(
        "INSERT INTO patient (patient_id, issuer_of_patient_id, patient_name, patient_name_upper, \
         patient_birth_date, patient_sex, patient_name_fuzzy) VALUES ($1, $2, $3, $4, $5, $6, $7) \
         ON CONFLICT (patient_id, issuer_of_patient_id) WHERE patient_id <> '' DO NOTHING \
         RETURNING patient_pk",
        [
            patient.patient_id.as_str().into(),
            patient.issuer_of_patient_id.as_str().into(),
            patient.patient_name.as_str().into(),
            fold_person_name(&patient.patient_name).into(),
            patient.patient_birth_date.as_str().into(),
            patient.patient_sex.as_str().into(),
            fuzzy_name_column(&patient.patient_name).into(),
        ],
    );
    if let Some(row) = connection.fetch_optional(&insert).await? {
        return row.integer("patient_pk");
    }
    let select = SqlBuilder::with_values(
        "SELECT patient_pk FROM patient WHERE patient_id = $1 AND issuer_of_patient_id = $2",
        [
            patient.patient_id.as_str().into(),
            patient.issuer_of_patient_id.as_str().into(),
        ],
    );
    let row = connection.fetch_one(&select).await?;
    let patient_pk = row.integer("patient_pk")?;
    merge_patient(connection, patient_pk, patient).await?;
    Ok(patient_pk)
}

/// Merges the record's patient attributes into an existing patient row.
pub(super) async fn merge_patient(
    connection: &mut impl WriteConnection,
    patient_pk: i64,
    patient: &PatientAttributes,
) -> Result<(), WriteError> {
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
            "patient_name_fuzzy",
            SqlValue::from(fuzzy_name_column(&patient.patient_name)),
        ),
        (
            "patient_birth_date",
            SqlValue::from(patient.patient_birth_date.as_str()),
        ),
        ("patient_sex", SqlValue::from(patient.patient_sex.as_str())),
    ];
    let statement = merge_update("patient", "patient_pk", patient_pk, fields, None);
    connection.execute(&statement).await?;
    Ok(())
}

fn study_fields(study: &StudyAttributes) -> [(&'static str, SqlValue); 9] {
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
        (
            "referring_physician_name_fuzzy",
            SqlValue::from(fuzzy_name_column(&study.referring_physician_name)),
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

/// Merges the record's study attributes into an existing study row.
pub(super) async fn merge_study(
    connection: &mut impl WriteConnection,
    study_pk: i64,
    study: &StudyAttributes,
) -> Result<(), WriteError> {
    let statement = merge_update("study", "study_pk", study_pk, study_fields(study), None);
    connection.execute(&statement).await?;
    Ok(())
}

/// The path of most instances: the series is stored already. Merges the record's study and
/// series attributes and counts the instance, the study's merge and count in one statement
/// (or two when the series belongs to another study than the record's), the series' in one.
/// Returns `None` when a row vanished since [`lookup`] (a concurrent PostgreSQL delete):
/// the caller retries.
pub(super) async fn count_in_existing_series(
    connection: &mut impl WriteConnection,
    study_pk: i64,
    study: &StudyAttributes,
    series_row: SeriesRow,
    series: &SeriesAttributes,
) -> Result<Option<SeriesRow>, WriteError> {
    const COUNT_INSTANCE: &str = "num_instances = num_instances + 1";
    let counted_here = series_row.study_pk == study_pk;
    let study_update = merge_update(
        "study",
        "study_pk",
        study_pk,
        study_fields(study),
        counted_here.then_some(COUNT_INSTANCE),
    );
    let updated = connection.execute(&study_update).await?;
    if counted_here && updated == 0 {
        return Ok(None);
    }
    if !counted_here {
        // The series went to another study first: the instance counts there.
        add_to_study_counters(connection, series_row.study_pk, 1, 0).await?;
    }
    let series_update = merge_update(
        "series",
        "series_pk",
        series_row.series_pk,
        series_fields(series),
        Some(COUNT_INSTANCE),
    );
    let updated = connection.execute(&series_update).await?;
    Ok((updated == 1).then_some(series_row))
}

/// Inserts a study of `patient_pk` (counters at zero) and returns its key; when a concurrent
/// writer created it first, merges into that one instead.
pub(super) async fn insert_study(
    connection: &mut impl WriteConnection,
    patient_pk: i64,
    study: &StudyAttributes,
) -> Result<i64, WriteError> {
    let fields = study_fields(study);
    let columns: Vec<&str> = fields.iter().map(|(column, _)| *column).collect();
    let mut builder = SqlBuilder::new(&format!(
        "INSERT INTO study (patient_pk, study_instance_uid, {}) VALUES ",
        columns.join(", ")
    ));
    let values = [
        SqlValue::from(patient_pk),
        SqlValue::from(study.study_instance_uid.as_str()),
    ];
    builder.push_bind_list(
        values
            .into_iter()
            .chain(fields.into_iter().map(|(_, value)| value)),
    );
    builder.push(" ON CONFLICT (study_instance_uid) DO NOTHING RETURNING study_pk");
    if let Some(row) = connection.fetch_optional(&builder).await? {
        return row.integer("study_pk");
    }
    let existing = find_study(connection, study)
        .await?
        .ok_or(WriteError::UnexpectedRow("missing study"))?;
    merge_study(connection, existing.study_pk, study).await?;
    Ok(existing.study_pk)
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

async fn find_series(
    connection: &mut impl WriteConnection,
    series: &SeriesAttributes,
) -> Result<Option<SeriesRow>, WriteError> {
    let statement = SqlBuilder::with_values(
        "SELECT series_pk, study_pk FROM series WHERE series_instance_uid = $1",
        [series.series_instance_uid.as_str().into()],
    );
    let row = connection.fetch_optional(&statement).await?;
    row.map(|row| {
        Ok(SeriesRow {
            series_pk: row.integer("series_pk")?,
            study_pk: row.integer("study_pk")?,
        })
    })
    .transpose()
}

/// Adds to the counters of a study.
async fn add_to_study_counters(
    connection: &mut impl WriteConnection,
    study_pk: i64,
    num_instances: i64,
    num_series: i64,
) -> Result<(), WriteError> {
    let statement = SqlBuilder::with_values(
        "UPDATE study SET num_instances = num_instances + $2, num_series = num_series + $3 \
         WHERE study_pk = $1",
        [study_pk.into(), num_instances.into(), num_series.into()],
    );
    connection.execute(&statement).await?;
    Ok(())
}

/// Inserts or merges the series of a new instance of study `study_pk` and counts the instance
/// (and the series, when new) in the study and series counters.
///
/// The study row is updated before any series row is touched, keeping the lock order.
pub(super) async fn store_series(
    connection: &mut impl WriteConnection,
    study_pk: i64,
    series: &SeriesAttributes,
) -> Result<SeriesRow, WriteError> {
    let existing = find_series(connection, series).await?;
    let counted_study_pk = existing.map_or(study_pk, |existing| existing.study_pk);
    add_to_study_counters(connection, counted_study_pk, 1, 0).await?;
    let series_row = match existing {
        Some(existing) => existing,
        None => {
            let fields = series_fields(series);
            let columns: Vec<&str> = fields.iter().map(|(column, _)| *column).collect();
            let mut builder = SqlBuilder::new(&format!(
                "INSERT INTO series (study_pk, series_instance_uid, {}) VALUES ",
                columns.join(", ")
            ));
            let values = [
                SqlValue::from(study_pk),
                SqlValue::from(series.series_instance_uid.as_str()),
            ];
            builder.push_bind_list(
                values
                    .into_iter()
                    .chain(fields.into_iter().map(|(_, value)| value)),
            );
            builder.push(" ON CONFLICT (series_instance_uid) DO NOTHING RETURNING series_pk");
            if let Some(row) = connection.fetch_optional(&builder).await? {
                add_to_study_counters(connection, study_pk, 0, 1).await?;
                let series_pk = row.integer("series_pk")?;
                return finish_series(
                    connection,
                    SeriesRow {
                        series_pk,
                        study_pk,
                    },
                    None,
                )
                .await;
            }
            // A concurrent writer created the series after this transaction looked for it.
            let created = find_series(connection, series)
                .await?
                .ok_or(WriteError::UnexpectedRow("missing series"))?;
            if created.study_pk != counted_study_pk {
                // It went to another study than the one just counted: move the count there.
                add_to_study_counters(connection, counted_study_pk, -1, 0).await?;
                add_to_study_counters(connection, created.study_pk, 1, 0).await?;
            }
            created
        }
    };
    finish_series(connection, series_row, Some(series)).await
}

/// Merges attributes into an existing series (when `merge_from` is given) and counts the new
/// instance in it.
async fn finish_series(
    connection: &mut impl WriteConnection,
    series_row: SeriesRow,
    merge_from: Option<&SeriesAttributes>,
) -> Result<SeriesRow, WriteError> {
    if let Some(series) = merge_from {
        let builder = merge_update(
            "series",
            "series_pk",
            series_row.series_pk,
            series_fields(series),
            None,
        );
        connection.execute(&builder).await?;
    }
    let statement = SqlBuilder::with_values(
        "UPDATE series SET num_instances = num_instances + 1 WHERE series_pk = $1",
        [series_row.series_pk.into()],
    );
    connection.execute(&statement).await?;
    Ok(series_row)
}

/// Adds the record's Request Attributes Sequence items the series does not have yet.
pub(super) async fn insert_request_attributes(
    connection: &mut impl WriteConnection,
    series_pk: i64,
    series: &SeriesAttributes,
) -> Result<(), WriteError> {
    for item in &series.request_attributes {
        let statement = SqlBuilder::with_values(
            "INSERT INTO series_request_attribute \
             (series_pk, scheduled_procedure_step_id, requested_procedure_id) VALUES ($1, $2, $3) \
             ON CONFLICT (series_pk, scheduled_procedure_step_id, requested_procedure_id) DO NOTHING",
            [
                series_pk.into(),
                item.scheduled_procedure_step_id.as_str().into(),
                item.requested_procedure_id.as_str().into(),
            ],
        );
        connection.execute(&statement).await?;
    }
    Ok(())
}

/// Builds `UPDATE table SET column = <new value unless empty> ... WHERE pk = ...`. Without
/// `also_set` it is restricted to rows where some non-empty new value differs, so an unchanged
/// row is not rewritten; with it (a counter: the row changes anyway) that assignment is added
/// and the row always updated. Text values count as empty when `''`, integers when NULL.
fn merge_update<const N: usize>(
    table: &str,
    pk_column: &str,
    pk: i64,
    fields: [(&'static str, SqlValue); N],
    also_set: Option<&str>,
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
    if let Some(assignment) = also_set {
        builder.push(", ").push(assignment);
    }
    builder
        .push(&format!(" WHERE {pk_column} = "))
        .push_bind(pk);
    if also_set.is_none() {
        builder.push(&format!(" AND ({})", changed_conditions.join(" OR ")));
    }
    builder
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
            None,
        );
        assert_eq!(
            builder.sql(),
            "UPDATE series SET modality = CASE WHEN $1 = '' THEN modality ELSE $1 END, \
             series_number = COALESCE($2, series_number) WHERE series_pk = $3 \
             AND (($1 <> '' AND modality <> $1) OR ($2 IS NOT NULL AND (series_number IS NULL \
             OR series_number <> $2)))"
        );
    }

    #[test]
    fn test_merge_update_with_a_counter_always_updates() {
        let builder = merge_update(
            "series",
            "series_pk",
            7,
            [("modality", SqlValue::from("CT"))],
            Some("num_instances = num_instances + 1"),
        );
        assert_eq!(
            builder.sql(),
            "UPDATE series SET modality = CASE WHEN $1 = '' THEN modality ELSE $1 END, \
             num_instances = num_instances + 1 WHERE series_pk = $2"
        );
    }
}
