//! Fills in columns that a migration added but only Rust can compute, for rows stored before
//! that migration. Runs after the migrations at every start; a no-op once everything is filled.

use sqlx::{Any, Pool, Row};

use super::filter::fuzzy_name_column;

/// Rows updated per transaction.
const BATCH_SIZE: i64 = 500;

/// Fills `patient.patient_name_fuzzy` and `study.referring_physician_name_fuzzy` (migration
/// 0005) where they are NULL.
pub(super) async fn fill_fuzzy_person_names(pool: &Pool<Any>) -> Result<(), sqlx::Error> {
    fill(
        pool,
        "patient",
        "patient_pk",
        "patient_name",
        "patient_name_fuzzy",
    )
    .await?;
    fill(
        pool,
        "study",
        "study_pk",
        "referring_physician_name",
        "referring_physician_name_fuzzy",
    )
    .await
}

async fn fill(
    pool: &Pool<Any>,
    table: &str,
    key_column: &str,
    name_column: &str,
    fuzzy_column: &str,
) -> Result<(), sqlx::Error> {
    let mut num_filled = 0u64;
    loop {
        let mut transaction = pool.begin().await?;
        let rows = sqlx::query(&format!(
            "SELECT {key_column}, {name_column} FROM {table} WHERE {fuzzy_column} IS NULL \
             ORDER BY {key_column} LIMIT {BATCH_SIZE}"
        ))
        .fetch_all(&mut *transaction)
        .await?;
        if rows.is_empty() {
            break;
        }
        for row in &rows {
            let key: i64 = row.try_get(0)?;
            let name: String = row.try_get(1)?;
            sqlx::query(&format!(
                "UPDATE {table} SET {fuzzy_column} = $1 WHERE {key_column} = $2"
            ))
            .bind(fuzzy_name_column(&name))
            .bind(key)
            .execute(&mut *transaction)
            .await?;
        }
        transaction.commit().await?;
        num_filled += rows.len() as u64;
    }
    if num_filled > 0 {
        tracing::info!(table, num_filled, "filled in fuzzy person-name columns");
    }
    Ok(())
}
