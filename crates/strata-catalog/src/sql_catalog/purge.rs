//! Object purges: the catalog's half of deleting the object of a deleted instance without
//! racing an ingest that stores the same content again.
//!
//! Keys are content-addressed, so an instance stored again after its deletion writes the very
//! key its purge is about to delete. Checking "no row refers to the key" and then deleting is
//! not enough: an ingest may write the object and commit its row in between, and lose its
//! object to the deletion. So:
//!
//! - a purge begins in a write transaction that takes the same lock as the end of every store
//!   (the event log lock on PostgreSQL; the writer lock on SQLite), finds no row referring to
//!   the key, and bumps the key's `generation` with `purging_since_ms` set;
//! - an ingest reads the key's state before writing the object ([`object_purge_state`]) and
//!   its store transaction, under that lock, checks the state is unchanged and no purge runs
//!   ([`store_admitted`]); otherwise it is refused with `ObjectPurged` and the ingest writes
//!   the object again;
//! - the purger deletes the object, then [`finish`] clears `purging_since_ms`.
//!
//! Whichever commits first wins: a store that commits first makes the purge find its row and
//! delete nothing; a purge that begins first makes the store retry, after the deletion.

use sqlx::Row;

use crate::{CatalogError, CatalogResult, ObjectPurgeState};

use super::builder::SqlBuilder;
use super::store::connection::{WriteConnection, WriteError};
use super::store::unix_time_ms;
use super::{Engine, SqlCatalog};

/// The purge state of the key `$1`.
pub(crate) const PURGE_STATE_SQL: &str =
    "SELECT generation, purging_since_ms FROM object_purge WHERE object_key = $1";

/// How long the record of a finished purge is kept. A writer that read the state before a
/// purge and commits after the purge's record expired would miss it, so this is far longer
/// than any writer takes between reading the state and committing (the ingest pipeline
/// starts over after an hour).
const FINISHED_PURGE_RETENTION_MS: i64 = 24 * 60 * 60 * 1000;

/// Returns the purge state of `object_key`; see [`crate::Catalog::object_purge_state`].
pub(crate) async fn object_purge_state(
    catalog: &SqlCatalog,
    object_key: &str,
) -> CatalogResult<ObjectPurgeState> {
    let read = catalog.sqlite_readers.as_ref().and_then(|readers| {
        readers.read_or_fall_back("read an object's purge state", |connection| {
            let mut statement = connection.prepare_cached(PURGE_STATE_SQL)?;
            let mut found = statement.query([object_key])?;
            found
                .next()?
                .map(|row| {
                    Ok(ObjectPurgeState {
                        generation: row.get(0)?,
                        purging_since_ms: row.get(1)?,
                    })
                })
                .transpose()
        })
    });
    if let Some(found) = read {
        return Ok(found.unwrap_or_default());
    }
    let row = sqlx::query(PURGE_STATE_SQL)
        .bind(object_key)
        .fetch_optional(&catalog.pool)
        .await
        .map_err(|error| CatalogError::from_sqlx("read an object's purge state", error))?;
    let Some(row) = row else {
        return Ok(ObjectPurgeState::default());
    };
    let decode = |error| CatalogError::from_sqlx("read an object's purge state", error);
    Ok(ObjectPurgeState {
        generation: row.try_get("generation").map_err(decode)?,
        purging_since_ms: row.try_get("purging_since_ms").map_err(decode)?,
    })
}

/// Inside a store transaction, after the lock that serialises stores with purges: whether the
/// store of an object whose writer read `purge_generation` may commit.
pub(crate) async fn store_admitted(
    connection: &mut impl WriteConnection,
    object_key: &str,
    purge_generation: i64,
) -> Result<bool, WriteError> {
    let found = connection
        .fetch_optional(&SqlBuilder::with_values(
            PURGE_STATE_SQL,
            [object_key.into()],
        ))
        .await?;
    let state = match found {
        Some(row) => ObjectPurgeState {
            generation: row.integer("generation")?,
            purging_since_ms: row.optional_integer("purging_since_ms")?,
        },
        None => ObjectPurgeState::default(),
    };
    Ok(state.admits(purge_generation, unix_time_ms()))
}

/// Begins a purge of `object_key`; see [`crate::Catalog::begin_object_purge`].
pub(crate) async fn begin(catalog: &SqlCatalog, object_key: &str) -> CatalogResult<Option<i64>> {
    let began = {
        let _write_guard = catalog.write_guard().await;
        begin_once(catalog, object_key).await
    };
    began.map_err(|error| CatalogError::from_sqlx("begin an object purge", error))
}

async fn begin_once(catalog: &SqlCatalog, object_key: &str) -> Result<Option<i64>, sqlx::Error> {
    let mut transaction = catalog.begin_write().await?;
    if catalog.engine == Engine::Postgres {
        // The lock every store takes before its purge check (`store_rows`): a store either
        // committed before this, and its row is seen below, or checks after this commits.
        sqlx::query("LOCK TABLE event IN SHARE ROW EXCLUSIVE MODE")
            .execute(&mut *transaction)
            .await?;
    }
    let referenced = sqlx::query("SELECT 1 AS found FROM instance WHERE object_key = $1 LIMIT 1")
        .bind(object_key)
        .fetch_optional(&mut *transaction)
        .await?;
    if referenced.is_some() {
        transaction.rollback().await?;
        return Ok(None);
    }
    let row = sqlx::query(
        "INSERT INTO object_purge (object_key, generation, purging_since_ms, done_at_ms) \
         VALUES ($1, 1, $2, NULL) \
         ON CONFLICT (object_key) DO UPDATE SET generation = object_purge.generation + 1, \
         purging_since_ms = excluded.purging_since_ms, done_at_ms = NULL \
         RETURNING generation",
    )
    .bind(object_key)
    .bind(unix_time_ms())
    .fetch_one(&mut *transaction)
    .await?;
    let generation: i64 = row.try_get("generation")?;
    transaction.commit().await?;
    Ok(Some(generation))
}

/// Ends purge `generation` of `object_key`; see [`crate::Catalog::finish_object_purge`].
pub(crate) async fn finish(
    catalog: &SqlCatalog,
    object_key: &str,
    generation: i64,
) -> CatalogResult<()> {
    let finished = {
        let _write_guard = catalog.write_guard().await;
        finish_once(catalog, object_key, generation).await
    };
    finished.map_err(|error| CatalogError::from_sqlx("finish an object purge", error))
}

async fn finish_once(
    catalog: &SqlCatalog,
    object_key: &str,
    generation: i64,
) -> Result<(), sqlx::Error> {
    let now_ms = unix_time_ms();
    let mut transaction = catalog.begin_write().await?;
    sqlx::query(
        "UPDATE object_purge SET purging_since_ms = NULL, done_at_ms = $3 \
         WHERE object_key = $1 AND generation = $2",
    )
    .bind(object_key)
    .bind(generation)
    .bind(now_ms)
    .execute(&mut *transaction)
    .await?;
    sqlx::query("DELETE FROM object_purge WHERE purging_since_ms IS NULL AND done_at_ms < $1")
        .bind(now_ms - FINISHED_PURGE_RETENTION_MS)
        .execute(&mut *transaction)
        .await?;
    transaction.commit().await
}
