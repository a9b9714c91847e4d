//! `store_instance`: one transaction that upserts patient, study and series, inserts the
//! instance, bumps the counters and appends the event.
//!
//! Races: two writers may both find no instance row and go on. On SQLite the writer mutex and
//! `BEGIN IMMEDIATE` make that impossible; on PostgreSQL the loser's
//! `INSERT ... ON CONFLICT DO NOTHING` waits for the winner's commit and inserts nothing (or a
//! statement fails with SQLSTATE 23505). Either way the transaction rolls back and the instance
//! row the winner committed decides the outcome: `AlreadyStored` or `Conflict`.
//!
//! Lock order, so that concurrent PostgreSQL writers cannot deadlock: patient, study, series,
//! request attribute items, instance, event log. See `entities` for the merge rules.
//!
//! Group commit on SQLite: a store queues its record, then waits for the writer mutex; whoever
//! gets the mutex takes every queued record and stores them all in ONE transaction, each
//! inside its own savepoint (a failing record is rolled back alone), so N concurrent stores
//! (eight DIMSE associations, a parallel STOW) cost one WAL fsync instead of N. A lone store
//! is a batch of one: nothing waits for company. The answer of each store is only sent after
//! the shared COMMIT returned, so "acknowledged" still means "durable". The group's
//! statements run on a synchronous `rusqlite` connection on the committing thread, not
//! through sqlx's worker thread (see `connection`); PostgreSQL stores go through sqlx, one
//! transaction each (row locks let them run side by side).

pub(crate) mod connection;
mod entities;

use std::path::PathBuf;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::{Any, Executor, Row};
use tracing::debug;

use crate::{
    CatalogError, CatalogErrorKind, CatalogResult, EventKind, InstanceRecord, StoreOutcome,
};

use super::builder::{SqlBuilder, SqlValue};
use super::{Engine, SqlCatalog};
use connection::{SqliteWriter, WriteConnection, WriteError};

/// How many times a store is retried after losing a uniqueness race.
const MAX_ATTEMPTS: u32 = 3;

/// The most records one SQLite group commit takes (bounds one transaction's size).
const MAX_GROUP_SIZE: usize = 64;

/// A store waiting for the next SQLite group commit, and where its result goes.
struct PendingStore {
    record: InstanceRecord,
    reply: tokio::sync::oneshot::Sender<Result<Option<StoreOutcome>, WriteError>>,
}

/// The queue of the SQLite group commit.
#[derive(Default)]
pub(crate) struct PendingStores(Mutex<Vec<PendingStore>>);

impl PendingStores {
    fn push(&self, pending: PendingStore) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(pending);
    }

    /// How many stores wait for the next group commit.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).len()
    }

    fn take(&self, max: usize) -> Vec<PendingStore> {
        let mut queue = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let num_taken = queue.len().min(max);
        queue.drain(..num_taken).collect()
    }
}

/// The synchronous connection SQLite group commits write through (see `connection`). Only
/// used while the catalog's writer mutex is held; kept open between commits, dropped after
/// a failure so that the next commit starts on a fresh one.
pub(crate) struct SqliteWriterSlot {
    path: PathBuf,
    connection: Mutex<Option<rusqlite::Connection>>,
    closed: std::sync::atomic::AtomicBool,
}

impl SqliteWriterSlot {
    /// The writer of the database file at `path` (created and in WAL mode already).
    pub(crate) fn new(path: PathBuf) -> Self {
        Self {
            path,
            connection: Mutex::new(None),
            closed: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Closes the connection; later commits fail (`SqlCatalog::close`).
    pub(crate) fn close(&self) {
        self.closed.store(true, std::sync::atomic::Ordering::SeqCst);
        self.connection
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
    }

    fn take_or_open(&self) -> Result<rusqlite::Connection, WriteError> {
        if self.closed.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(WriteError::Failed("the catalog is closed".to_owned()));
        }
        let idle = self
            .connection
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        match idle {
            Some(connection) => Ok(connection),
            None => Ok(self.open()?),
        }
    }

    fn open(&self) -> rusqlite::Result<rusqlite::Connection> {
        let connection = rusqlite::Connection::open(&self.path)?;
        // As the pool's connections (`SQLITE_CONNECTION_PRAGMAS`); WAL mode is a property of
        // the file, set by the pool.
        connection.busy_timeout(Duration::from_secs(30))?;
        connection.execute_batch(
            "PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON; PRAGMA temp_store = MEMORY;",
        )?;
        connection.set_prepared_statement_cache_capacity(64);
        Ok(connection)
    }

    fn put_back(&self, connection: rusqlite::Connection) {
        *self
            .connection
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(connection);
    }
}

/// Stores one instance; see [`crate::Catalog::store_instance`].
pub(crate) async fn store_instance(
    catalog: &SqlCatalog,
    record: &InstanceRecord,
) -> CatalogResult<StoreOutcome> {
    let sop_instance_uid = record.instance.sop_instance_uid.as_str();
    for attempt in 1..=MAX_ATTEMPTS {
        let attempt_result = match catalog.engine {
            Engine::Sqlite => store_in_group(catalog, record).await,
            Engine::Postgres => store_once(catalog, record).await,
        };
        match attempt_result {
            Ok(Some(outcome)) => return Ok(outcome),
            Ok(None) => {}
            Err(error) if error.is_unique_violation() || error.is_foreign_key_violation() => {}
            Err(error) => return Err(error.into_catalog_error("store an instance")),
        }
        // Another writer committed a row this transaction was about to create, or a delete
        // removed one it was about to refer to (the last instance of its study or patient).
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
        format!(
            "failed to store an instance: concurrent writers or deletes got in the way \
             {MAX_ATTEMPTS} times"
        ),
    ))
}

/// The SHA-256 of the instance with the SOP Instance UID `$1`.
pub(crate) const EXISTING_SHA256_SQL: &str =
    "SELECT sha256 FROM instance WHERE sop_instance_uid = $1";

/// Returns the SHA-256 of the instance with this SOP Instance UID, if it is stored.
pub(crate) async fn existing_sha256<'e, E>(
    executor: E,
    sop_instance_uid: &str,
) -> Result<Option<String>, sqlx::Error>
where
    E: Executor<'e, Database = Any>,
{
    let row = sqlx::query(EXISTING_SHA256_SQL)
        .bind(sop_instance_uid)
        .fetch_optional(executor)
        .await?;
    row.map(|row| row.try_get("sha256")).transpose()
}

fn outcome_for_existing(existing_sha256: String, record: &InstanceRecord) -> StoreOutcome {
    if existing_sha256 == record.object.sha256 {
        StoreOutcome::AlreadyStored
    } else {
        StoreOutcome::Conflict { existing_sha256 }
    }
}

/// SQLite: queues `record` for the next group commit and waits for its result (see the module
/// documentation). Returns `None` when another writer inserted the instance first.
async fn store_in_group(
    catalog: &SqlCatalog,
    record: &InstanceRecord,
) -> Result<Option<StoreOutcome>, WriteError> {
    let (reply, result) = tokio::sync::oneshot::channel();
    catalog.pending_stores.push(PendingStore {
        record: record.clone(),
        reply,
    });
    {
        let _write_guard = catalog.write_guard().await;
        // Commit what queued up meanwhile (usually including this record, unless the previous
        // holder of the mutex already committed it). Loop until the queue is drained, so no
        // record is left behind when the batch limit split it.
        loop {
            let batch = catalog.pending_stores.take(MAX_GROUP_SIZE);
            if batch.is_empty() {
                break;
            }
            commit_group(catalog, batch).await;
        }
    }
    result.await.unwrap_or_else(|_| {
        Err(WriteError::Failed(
            "the group commit ended without an answer".to_owned(),
        ))
    })
}

/// Stores `batch` in one SQLite transaction on the synchronous writer connection, in place
/// (see `strata_types::blocking::run_blocking`), and answers each store.
async fn commit_group(catalog: &SqlCatalog, batch: Vec<PendingStore>) {
    let Some(slot) = &catalog.sqlite_writer else {
        for pending in batch {
            let _ = pending
                .reply
                .send(Err(WriteError::Failed("no SQLite writer".to_owned())));
        }
        return;
    };
    let mut connection = match slot.take_or_open() {
        Ok(connection) => connection,
        Err(error) => {
            for pending in batch {
                let _ = pending.reply.send(Err(error.shared("opening the writer")));
            }
            return;
        }
    };
    // A panic drops the connection and the replies: every waiting store gets an error.
    let committed = strata_types::blocking::run_blocking(move || {
        let healthy = commit_group_on(&mut connection, batch);
        healthy.then_some(connection)
    })
    .await;
    if let Ok(Some(connection)) = committed {
        slot.put_back(connection);
    }
}

/// The group commit itself: one transaction, one savepoint per record (a failing record is
/// rolled back alone), one COMMIT (one WAL fsync) for all. Returns whether the connection is
/// fit for the next group (no transaction left open).
fn commit_group_on(connection: &mut rusqlite::Connection, batch: Vec<PendingStore>) -> bool {
    if let Err(error) = connection.execute_batch("BEGIN IMMEDIATE") {
        let error = WriteError::Sqlite(error);
        for pending in batch {
            let _ = pending.reply.send(Err(error.shared("BEGIN")));
        }
        return connection.is_autocommit();
    }
    let mut results = Vec::with_capacity(batch.len());
    let mut aborted: Option<WriteError> = None;
    for pending in &batch {
        if let Some(error) = &aborted {
            results.push(Err(error.shared("an earlier statement")));
            continue;
        }
        if let Err(error) = connection.execute_batch("SAVEPOINT store_one") {
            let error = WriteError::Sqlite(error);
            results.push(Err(error.shared("SAVEPOINT")));
            aborted = Some(error);
            continue;
        }
        // Every statement completes in place: the future is ready the first time it is polled.
        let stored = futures::executor::block_on(store_rows(
            &mut SqliteWriter(connection),
            Engine::Sqlite,
            &pending.record,
        ));
        let keep = matches!(stored, Ok(Some(StoreOutcome::Created)));
        let end = if keep {
            connection.execute_batch("RELEASE store_one")
        } else {
            connection.execute_batch("ROLLBACK TO store_one; RELEASE store_one")
        };
        if let Err(error) = end {
            aborted = Some(WriteError::Sqlite(error));
        }
        results.push(stored);
    }
    if let Some(error) = aborted {
        let _ = connection.execute_batch("ROLLBACK");
        for pending in batch {
            let _ = pending
                .reply
                .send(Err(error.shared("the group transaction")));
        }
        return connection.is_autocommit();
    }
    let committed = connection
        .execute_batch("COMMIT")
        .map_err(WriteError::Sqlite);
    if committed.is_err() && !connection.is_autocommit() {
        let _ = connection.execute_batch("ROLLBACK");
    }
    for (pending, result) in batch.into_iter().zip(results) {
        let answer = match (&committed, result) {
            (Ok(()), result) => result,
            // Nothing of the group is stored; outcomes that wrote nothing stay true.
            (Err(error), Ok(Some(StoreOutcome::Created)) | Ok(None)) => Err(error.shared("COMMIT")),
            (Err(_), other) => other,
        };
        let _ = pending.reply.send(answer);
    }
    connection.is_autocommit()
}

/// Runs one store transaction (PostgreSQL). Returns `None` when another writer inserted the
/// instance first.
async fn store_once(
    catalog: &SqlCatalog,
    record: &InstanceRecord,
) -> Result<Option<StoreOutcome>, WriteError> {
    let _write_guard = catalog.write_guard().await;
    let mut transaction = catalog.begin_write().await?;
    let outcome = store_rows(&mut *transaction, catalog.engine, record).await?;
    if matches!(outcome, Some(StoreOutcome::Created)) {
        transaction.commit().await?;
    } else {
        transaction.rollback().await?;
    }
    Ok(outcome)
}

/// The statements of one store, inside a transaction the caller ends: commit on `Created`,
/// roll back otherwise (nothing else wrote anything worth keeping). `None`: another writer
/// inserted the instance first.
async fn store_rows(
    connection: &mut impl WriteConnection,
    engine: Engine,
    record: &InstanceRecord,
) -> Result<Option<StoreOutcome>, WriteError> {
    let sop_instance_uid = record.instance.sop_instance_uid.as_str();
    let known = entities::lookup(connection, record).await?;
    if let Some(existing) = known.instance_sha256 {
        return Ok(Some(outcome_for_existing(existing, record)));
    }

    let patient_pk = match known.study {
        Some(study) if record.patient.patient_id.is_empty() => {
            entities::merge_patient(connection, study.patient_pk, &record.patient).await?;
            study.patient_pk
        }
        _ => entities::upsert_patient(connection, &record.patient, known.patient_pk).await?,
    };
    let series = match (known.study, known.series) {
        (Some(study), Some(series)) => {
            let counted = entities::count_in_existing_series(
                connection,
                study.study_pk,
                &record.study,
                series,
                &record.series,
            )
            .await?;
            match counted {
                Some(series) => series,
                // A row vanished since the lookup (concurrent delete): retry from the start.
                None => return Ok(None),
            }
        }
        (existing_study, _) => {
            let study_pk = match existing_study {
                Some(study) => {
                    entities::merge_study(connection, study.study_pk, &record.study).await?;
                    study.study_pk
                }
                None => entities::insert_study(connection, patient_pk, &record.study).await?,
            };
            entities::store_series(connection, study_pk, &record.series).await?
        }
    };
    entities::insert_request_attributes(connection, series.series_pk, &record.series).await?;

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
        return Ok(None);
    }

    if engine == Engine::Postgres {
        // Sequence numbers must become visible in order, or a follower that saw event N+1
        // would skip N for good. This lock conflicts with itself (not with readers), so event
        // inserts are serialised until commit; it is taken last to keep that window short.
        connection
            .execute(&SqlBuilder::new(
                "LOCK TABLE event IN SHARE ROW EXCLUSIVE MODE",
            ))
            .await?;
    }
    // After that lock (on SQLite, under the writer lock): a purge of the object's key either
    // committed its beginning before this check, or will find this row (`purge`).
    if !super::purge::store_admitted(
        connection,
        record.object.key.as_str(),
        record.purge_generation,
    )
    .await?
    {
        return Ok(Some(StoreOutcome::ObjectPurged));
    }
    let event = SqlBuilder::with_values(
        "INSERT INTO event (kind, study_instance_uid, series_instance_uid, sop_instance_uid, \
         object_key, created_at_ms) VALUES ($1, $2, $3, $4, $5, $6)",
        [
            EventKind::InstanceStored.as_str().into(),
            record.study.study_instance_uid.as_str().into(),
            record.series.series_instance_uid.as_str().into(),
            sop_instance_uid.into(),
            record.object.key.as_str().into(),
            created_at_ms.into(),
        ],
    );
    connection.execute(&event).await?;
    Ok(Some(StoreOutcome::Created))
}

/// Inserts the instance row; returns false when a row with its SOP Instance UID already exists.
async fn insert_instance(
    connection: &mut impl WriteConnection,
    series_pk: i64,
    study_pk: i64,
    record: &InstanceRecord,
    created_at_ms: i64,
) -> Result<bool, WriteError> {
    let instance = &record.instance;
    // No object reaches 8 EiB; saturate rather than wrap if one ever claims to.
    let size_bytes = i64::try_from(record.object.size_bytes).unwrap_or(i64::MAX);
    let columns_and_values: [(&str, SqlValue); 21] = [
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
        ("title", instance.title.as_str().into()),
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
        (
            "pixel_data_layout",
            SqlValue::OptionalText(record.pixel_data_layout.clone()),
        ),
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
    let column_list: Vec<&str> = columns_and_values
        .iter()
        .map(|(column, _)| *column)
        .collect();
    let mut builder = SqlBuilder::new(&format!(
        "INSERT INTO instance ({}) VALUES ",
        column_list.join(", ")
    ));
    builder.push_bind_list(columns_and_values.into_iter().map(|(_, value)| value));
    builder.push(" ON CONFLICT (sop_instance_uid) DO NOTHING RETURNING instance_pk");
    let inserted = connection.fetch_optional(&builder).await?;
    Ok(inserted.is_some())
}

pub(crate) fn unix_time_ms() -> i64 {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(since_epoch.as_millis()).unwrap_or(i64::MAX)
}
