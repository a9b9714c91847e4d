//! `SqlCatalog`: the one `Catalog` implementation, on SQLite or PostgreSQL.
//!
//! Both engines go through sqlx's `Any` driver with the same SQL: `$N` placeholders,
//! `INSERT ... ON CONFLICT`, `RETURNING`, `NULLS LAST`. The few places where the dialects differ
//! branch on [`Engine`]: how write and read transactions begin, wildcard matching (`GLOB` vs
//! `LIKE`), an unlimited `LIMIT`, the event-log lock, and the migration folder.

mod backfill;
mod builder;
mod delete;
mod filter;
mod migrations;
mod purge;
mod rows;
mod search;
mod sqlite_reads;
mod store;
mod tiering;
mod uri;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{Any, AnyConnection, AnyPool, Connection, Executor, Transaction};
use strata_types::{ObjectKey, SeriesUid, SopInstanceUid, StudyUid};
use tokio::sync::{Mutex, MutexGuard};
use tracing::info;

use crate::{
    CachedSeriesMetadata, Catalog, CatalogError, CatalogErrorKind, CatalogEvent, CatalogQuery,
    CatalogResult, DeleteOutcome, DeleteScope, EventKind, InstanceLocation, InstanceRecord,
    ObjectPurgeState, QueryMatch, QueryOrder, StoreOutcome, StoredObject,
};
use builder::SqlBuilder;
use rows::CatalogRow;
use sqlite_reads::SqliteReaders;
use uri::{CatalogUri, parse_catalog_uri, prepare_sqlite_url};

/// The SQL dialect behind a catalog.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Engine {
    Sqlite,
    Postgres,
}

/// The columns `instance_location` reads, for `instance_selection`.
const LOCATION_COLUMNS: &str = "st.study_instance_uid, se.series_instance_uid, \
     i.sop_instance_uid, i.sop_class_uid, i.transfer_syntax_uid, i.object_key, i.size_bytes, \
     i.sha256";

/// The most UIDs one `IN (...)` list binds (SQLite allows 32,766 parameters, PostgreSQL 65,535;
/// far below both, and short enough for the statement cache).
const MAX_UIDS_PER_STATEMENT: usize = 256;

/// Pragmas every SQLite connection runs first. `busy_timeout` comes first so the others wait
/// for a lock instead of failing; WAL lets readers run beside the writer; `synchronous = FULL`
/// syncs the WAL on every commit, so a committed instance survives a power cut;
/// `temp_store = MEMORY` keeps the statement journal of a savepoint (one per instance in a
/// group commit) in memory instead of creating and deleting a temporary file each time.
const SQLITE_CONNECTION_PRAGMAS: &str = "PRAGMA busy_timeout = 30000; \
     PRAGMA journal_mode = WAL; \
     PRAGMA synchronous = FULL; \
     PRAGMA foreign_keys = ON; \
     PRAGMA temp_store = MEMORY;";

/// How long a caller waits for a pooled connection before the catalog reports `Unavailable`.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(60);

/// The SQL metadata catalog on SQLite (`sqlite://PATH`, the embedded default) or PostgreSQL
/// (`postgres://...`, production).
///
/// On SQLite every write transaction starts with `BEGIN IMMEDIATE` and is serialised by an
/// in-process mutex, so concurrent writers queue instead of failing with "database is locked";
/// other processes sharing the file wait up to the 30 s busy timeout.
pub struct SqlCatalog {
    pool: AnyPool,
    engine: Engine,
    /// Held for the whole of a write transaction on SQLite; unused on PostgreSQL, whose row
    /// locks already order concurrent writers.
    sqlite_write_lock: Mutex<()>,
    /// SQLite group commit: stores waiting for the write lock; whoever takes the lock next
    /// commits all of them in one transaction (one WAL fsync). See `store::store_instance`.
    pending_stores: store::PendingStores,
    /// Synchronous readers for the point reads on a viewer's latency path (SQLite only).
    sqlite_readers: Option<SqliteReaders>,
    /// The synchronous connection of the SQLite group commit (SQLite only).
    sqlite_writer: Option<store::SqliteWriterSlot>,
}

impl std::fmt::Debug for SqlCatalog {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the pool: its options hold the connection URI and so the password.
        formatter
            .debug_struct("SqlCatalog")
            .field("engine", &self.engine)
            .finish_non_exhaustive()
    }
}

impl SqlCatalog {
    /// Opens the catalog at `uri` (`sqlite://PATH`, `postgres://...` or `postgresql://...`)
    /// with a pool of at most `max_connections` connections, and runs the pending migrations.
    ///
    /// A SQLite file and its parent directory are created when missing. An unknown scheme
    /// fails with [`CatalogErrorKind::Config`].
    pub async fn connect(uri: &str, max_connections: u32) -> CatalogResult<SqlCatalog> {
        let catalog = Self::connect_without_migrations(uri, max_connections).await?;
        catalog.migrate().await?;
        Ok(catalog)
    }

    /// Opens the catalog like [`SqlCatalog::connect`] but leaves the schema as it is; for tools
    /// that migrate separately (`strata migrate`).
    pub async fn connect_without_migrations(
        uri: &str,
        max_connections: u32,
    ) -> CatalogResult<SqlCatalog> {
        sqlx::any::install_default_drivers();
        let pool_options = AnyPoolOptions::new()
            .max_connections(max_connections.max(1))
            .acquire_timeout(ACQUIRE_TIMEOUT);
        let (pool, engine, sqlite_path) = match parse_catalog_uri(uri)? {
            CatalogUri::Sqlite { path } => {
                let sqlite_url = prepare_sqlite_url(&path).await?;
                let pool = pool_options
                    // A connection to a local file cannot be dropped by a server, and the
                    // ping sqlx sends before every acquire is a round trip to the driver's
                    // worker thread: one more thread hand-off on every catalog call.
                    .test_before_acquire(false)
                    .after_connect(|connection, _metadata| {
                        Box::pin(async move {
                            connection.execute(SQLITE_CONNECTION_PRAGMAS).await?;
                            Ok(())
                        })
                    })
                    .connect(&sqlite_url)
                    .await
                    .map_err(|error| {
                        let action = format!("open the sqlite catalog at `{}`", path.display());
                        CatalogError::from_sqlx(&action, error)
                    })?;
                (pool, Engine::Sqlite, Some(path))
            }
            CatalogUri::Postgres { uri } => {
                let connect_error =
                    |error| CatalogError::from_sqlx("connect to the postgres catalog", error);
                // One direct connection first: the pool retries refused connections until its
                // acquire timeout and then reports only "timed out", hiding the cause.
                AnyConnection::connect(&uri)
                    .await
                    .map_err(connect_error)?
                    .close()
                    .await
                    .map_err(connect_error)?;
                let pool = pool_options.connect(&uri).await.map_err(connect_error)?;
                (pool, Engine::Postgres, None)
            }
        };
        info!(engine = ?engine, "catalog connected");
        Ok(SqlCatalog {
            pool,
            engine,
            sqlite_write_lock: Mutex::new(()),
            pending_stores: store::PendingStores::default(),
            sqlite_readers: sqlite_path.clone().map(SqliteReaders::new),
            sqlite_writer: sqlite_path.map(store::SqliteWriterSlot::new),
        })
    }

    /// Applies the migrations that are not applied yet; a no-op when the schema is current.
    /// Fails with [`CatalogErrorKind::Migration`] when the database holds a migration this
    /// binary does not know or one that was changed after it was applied.
    pub async fn migrate(&self) -> CatalogResult<()> {
        let _write_guard = self.write_guard().await;
        let migration_error = |error: sqlx::migrate::MigrateError| {
            use sqlx::migrate::MigrateError;
            let detail = match &error {
                MigrateError::VersionMissing(version) => {
                    format!("migration {version} was applied but is unknown to this binary")
                }
                MigrateError::VersionMismatch(version) => {
                    format!("migration {version} was changed after it was applied")
                }
                MigrateError::Dirty(version) => {
                    format!("migration {version} was left partially applied")
                }
                _ => "migration error".to_owned(),
            };
            CatalogError {
                kind: CatalogErrorKind::Migration,
                message: format!("failed to migrate the catalog: {detail}"),
                source: Some(Box::new(error)),
            }
        };
        let migrator = migrations::migrator(self.engine)
            .await
            .map_err(migration_error)?;
        migrator.run(&self.pool).await.map_err(migration_error)?;
        backfill::fill_fuzzy_person_names(&self.pool)
            .await
            .map_err(|error| CatalogError::from_sqlx("fill in the fuzzy person names", error))?;
        Ok(())
    }

    /// The versions of this binary's migrations that the database has not applied yet (all of
    /// them on an empty database). Serving processes that must not migrate (`catalog.auto_migrate
    /// = false`, several replicas on Kubernetes) refuse to start while this is not empty.
    pub async fn pending_migrations(&self) -> CatalogResult<Vec<i64>> {
        let migrator = migrations::migrator(self.engine)
            .await
            .map_err(|error| CatalogError {
                kind: CatalogErrorKind::Migration,
                message: "failed to load this binary's migrations".to_owned(),
                source: Some(Box::new(error)),
            })?;
        let applied: Vec<i64> = match sqlx::query_scalar::<_, i64>(
            "SELECT version FROM _sqlx_migrations WHERE success",
        )
        .fetch_all(&self.pool)
        .await
        {
            Ok(versions) => versions,
            // No migration table yet: nothing is applied.
            Err(sqlx::Error::Database(_)) => Vec::new(),
            Err(error) => {
                return Err(CatalogError::from_sqlx(
                    "read the applied migrations",
                    error,
                ));
            }
        };
        Ok(migrator
            .iter()
            .map(|migration| migration.version)
            .filter(|version| !applied.contains(version))
            .collect())
    }

    /// Closes every connection of the pool and the SQLite writer; later calls fail with
    /// `Unavailable` (point reads on SQLite excepted: their synchronous readers stay open).
    pub async fn close(&self) {
        if let Some(writer) = &self.sqlite_writer {
            writer.close();
        }
        self.pool.close().await;
    }

    /// Takes the SQLite writer mutex (nothing on PostgreSQL).
    async fn write_guard(&self) -> Option<MutexGuard<'_, ()>> {
        match self.engine {
            Engine::Sqlite => Some(self.sqlite_write_lock.lock().await),
            Engine::Postgres => None,
        }
    }

    /// Begins a write transaction. On SQLite, `BEGIN IMMEDIATE` takes the write lock up front
    /// so the transaction never has to upgrade a read snapshot (which fails with `SQLITE_BUSY`
    /// instead of waiting).
    async fn begin_write(&self) -> Result<Transaction<'static, Any>, sqlx::Error> {
        match self.engine {
            Engine::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await,
            Engine::Postgres => self.pool.begin().await,
        }
    }

    /// Begins a read-only transaction whose statements all see one snapshot, so a query's
    /// rows and computed attributes agree.
    async fn begin_read(&self) -> Result<Transaction<'static, Any>, sqlx::Error> {
        match self.engine {
            Engine::Sqlite => self.pool.begin().await,
            Engine::Postgres => {
                self.pool
                    .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                    .await
            }
        }
    }

    /// Returns the instances of a study / series / instance, in WADO-RS order, selecting
    /// `columns` (of `instance i`, `series se`, `study st`).
    fn instance_selection(
        columns: &str,
        study_instance_uid: &StudyUid,
        series_instance_uid: Option<&SeriesUid>,
        sop_instance_uid: Option<&SopInstanceUid>,
    ) -> SqlBuilder {
        let mut builder = SqlBuilder::new(&format!(
            "SELECT {columns} FROM instance i \
             JOIN series se ON se.series_pk = i.series_pk \
             JOIN study st ON st.study_pk = i.study_pk \
             WHERE st.study_instance_uid = "
        ));
        builder.push_bind(study_instance_uid.as_str());
        if let Some(series_instance_uid) = series_instance_uid {
            builder
                .push(" AND se.series_instance_uid = ")
                .push_bind(series_instance_uid.as_str());
        }
        if let Some(sop_instance_uid) = sop_instance_uid {
            builder
                .push(" AND i.sop_instance_uid = ")
                .push_bind(sop_instance_uid.as_str());
        }
        builder.push(
            " ORDER BY se.series_number NULLS LAST, se.series_pk, \
             i.instance_number NULLS LAST, i.instance_pk",
        );
        builder
    }
}

/// Opens the catalog at `uri` (see [`SqlCatalog::connect`]) behind the [`Catalog`] trait.
pub async fn open_catalog(uri: &str, max_connections: u32) -> CatalogResult<Arc<dyn Catalog>> {
    Ok(Arc::new(SqlCatalog::connect(uri, max_connections).await?))
}

fn instance_location(row: &impl CatalogRow) -> CatalogResult<InstanceLocation> {
    Ok(InstanceLocation {
        study_instance_uid: row.uid("study_instance_uid")?,
        series_instance_uid: row.uid("series_instance_uid")?,
        sop_instance_uid: row.uid("sop_instance_uid")?,
        sop_class_uid: row.text("sop_class_uid")?,
        transfer_syntax_uid: row.text("transfer_syntax_uid")?,
        object: StoredObject {
            key: ObjectKey::from_stored(row.text("object_key")?),
            size_bytes: u64::try_from(row.integer("size_bytes")?)
                .map_err(|_| CatalogError::corrupted("object size"))?,
            sha256: row.text("sha256")?,
        },
    })
}

/// Decodes the location, DICOM JSON and recorded pixel data layout of an instance row.
fn location_metadata_layout(
    row: &impl CatalogRow,
) -> CatalogResult<(InstanceLocation, String, Option<String>)> {
    Ok((
        instance_location(row)?,
        row.text("metadata_json")?,
        row.optional_text("pixel_data_layout")?,
    ))
}

fn catalog_event(row: &AnyRow) -> CatalogResult<CatalogEvent> {
    let kind = match rows::text(row, "kind")?.as_str() {
        "instance_stored" => EventKind::InstanceStored,
        "instance_deleted" => EventKind::InstanceDeleted,
        _ => return Err(CatalogError::corrupted("event kind")),
    };
    Ok(CatalogEvent {
        sequence: rows::integer(row, "event_sequence")?,
        kind,
        study_instance_uid: rows::uid(row, "study_instance_uid")?,
        series_instance_uid: rows::uid(row, "series_instance_uid")?,
        sop_instance_uid: rows::uid(row, "sop_instance_uid")?,
        object_key: ObjectKey::from_stored(rows::text(row, "object_key")?),
        created_at_ms: rows::integer(row, "created_at_ms")?,
    })
}

#[async_trait]
impl Catalog for SqlCatalog {
    #[tracing::instrument(name = "catalog.store_instance", skip_all)]
    async fn store_instance(&self, record: &InstanceRecord) -> CatalogResult<StoreOutcome> {
        store::store_instance(self, record).await
    }

    #[tracing::instrument(name = "catalog.instance_sha256", skip_all)]
    async fn instance_sha256(
        &self,
        sop_instance_uid: &SopInstanceUid,
    ) -> CatalogResult<Option<String>> {
        // The duplicate check of every ingest: a point read by a unique key.
        let read = self.sqlite_readers.as_ref().and_then(|readers| {
            readers.read_or_fall_back("read an instance checksum", |connection| {
                let mut statement = connection.prepare_cached(store::EXISTING_SHA256_SQL)?;
                let mut found = statement.query([sop_instance_uid.as_str()])?;
                found.next()?.map(|row| row.get::<_, String>(0)).transpose()
            })
        });
        if let Some(found) = read {
            return Ok(found);
        }
        store::existing_sha256(&self.pool, sop_instance_uid.as_str())
            .await
            .map_err(|error| CatalogError::from_sqlx("read an instance checksum", error))
    }

    #[tracing::instrument(name = "catalog.instance_locations", skip_all)]
    async fn instance_locations(
        &self,
        study_instance_uid: &StudyUid,
        series_instance_uid: Option<&SeriesUid>,
        sop_instance_uid: Option<&SopInstanceUid>,
    ) -> CatalogResult<Vec<InstanceLocation>> {
        let builder = Self::instance_selection(
            LOCATION_COLUMNS,
            study_instance_uid,
            series_instance_uid,
            sop_instance_uid,
        );
        let found_rows = builder
            .build()
            .fetch_all(&self.pool)
            .await
            .map_err(|error| CatalogError::from_sqlx("read instance locations", error))?;
        found_rows.iter().map(instance_location).collect()
    }

    #[tracing::instrument(name = "catalog.instance_metadata", skip_all)]
    async fn instance_metadata(
        &self,
        study_instance_uid: &StudyUid,
        series_instance_uid: Option<&SeriesUid>,
        sop_instance_uid: Option<&SopInstanceUid>,
    ) -> CatalogResult<Vec<String>> {
        let builder = Self::instance_selection(
            "i.metadata_json",
            study_instance_uid,
            series_instance_uid,
            sop_instance_uid,
        );
        let found_rows = builder
            .build()
            .fetch_all(&self.pool)
            .await
            .map_err(|error| CatalogError::from_sqlx("read instance metadata", error))?;
        found_rows
            .iter()
            .map(|row| rows::text(row, "metadata_json"))
            .collect()
    }

    #[tracing::instrument(name = "catalog.instance_metadata_by_uid", skip_all)]
    async fn instance_metadata_by_uid(
        &self,
        study_instance_uid: &StudyUid,
        sop_instance_uids: &[SopInstanceUid],
    ) -> CatalogResult<Vec<(SopInstanceUid, String)>> {
        let mut found = Vec::with_capacity(sop_instance_uids.len());
        for chunk in sop_instance_uids.chunks(MAX_UIDS_PER_STATEMENT) {
            let mut builder = SqlBuilder::new(
                "SELECT i.sop_instance_uid, i.metadata_json FROM instance i \
                 JOIN study st ON st.study_pk = i.study_pk \
                 WHERE st.study_instance_uid = ",
            );
            builder
                .push_bind(study_instance_uid.as_str())
                .push(" AND i.sop_instance_uid IN ")
                .push_bind_list(chunk.iter().map(SopInstanceUid::as_str));
            let found_rows = builder
                .build()
                .fetch_all(&self.pool)
                .await
                .map_err(|error| CatalogError::from_sqlx("read instance metadata", error))?;
            for row in &found_rows {
                found.push((
                    rows::uid(row, "sop_instance_uid")?,
                    rows::text(row, "metadata_json")?,
                ));
            }
        }
        Ok(found)
    }

    #[tracing::instrument(name = "catalog.query", skip_all)]
    async fn query(&self, query: &CatalogQuery) -> CatalogResult<Vec<QueryMatch>> {
        search::run_query(self, query, QueryOrder::Storage).await
    }

    #[tracing::instrument(name = "catalog.query_in_order", skip_all)]
    async fn query_in_order(
        &self,
        query: &CatalogQuery,
        order: QueryOrder,
    ) -> CatalogResult<Vec<QueryMatch>> {
        search::run_query(self, query, order).await
    }

    #[tracing::instrument(name = "catalog.count_matches", skip_all)]
    async fn count_matches(&self, query: &CatalogQuery) -> CatalogResult<u64> {
        search::count_matches(self, query).await
    }

    #[tracing::instrument(name = "catalog.delete", skip_all)]
    async fn delete(&self, scope: &DeleteScope) -> CatalogResult<DeleteOutcome> {
        delete::delete(self, scope).await
    }

    #[tracing::instrument(name = "catalog.object_key_referenced", skip_all)]
    async fn object_key_referenced(&self, key: &ObjectKey) -> CatalogResult<bool> {
        delete::object_key_referenced(self, key.as_str()).await
    }

    #[tracing::instrument(name = "catalog.object_purge_state", skip_all)]
    async fn object_purge_state(&self, key: &ObjectKey) -> CatalogResult<ObjectPurgeState> {
        purge::object_purge_state(self, key.as_str()).await
    }

    #[tracing::instrument(name = "catalog.begin_object_purge", skip_all)]
    async fn begin_object_purge(&self, key: &ObjectKey) -> CatalogResult<Option<i64>> {
        purge::begin(self, key.as_str()).await
    }

    #[tracing::instrument(name = "catalog.finish_object_purge", skip_all)]
    async fn finish_object_purge(&self, key: &ObjectKey, generation: i64) -> CatalogResult<()> {
        purge::finish(self, key.as_str(), generation).await
    }

    #[tracing::instrument(name = "catalog.events_after", skip_all)]
    async fn events_after(&self, after: i64, limit: u32) -> CatalogResult<Vec<CatalogEvent>> {
        let mut builder = SqlBuilder::new(
            "SELECT event_sequence, kind, study_instance_uid, series_instance_uid, \
             sop_instance_uid, object_key, created_at_ms FROM event WHERE event_sequence > ",
        );
        builder
            .push_bind(after)
            .push(" ORDER BY event_sequence LIMIT ")
            .push_bind(i64::from(limit));
        let found_rows = builder
            .build()
            .fetch_all(&self.pool)
            .await
            .map_err(|error| CatalogError::from_sqlx("read events", error))?;
        found_rows.iter().map(catalog_event).collect()
    }

    async fn count_instances(&self) -> CatalogResult<u64> {
        let row = sqlx::query("SELECT COUNT(*) AS num_instances FROM instance")
            .fetch_one(&self.pool)
            .await
            .map_err(|error| CatalogError::from_sqlx("count instances", error))?;
        u64::try_from(rows::integer(&row, "num_instances")?)
            .map_err(|_| CatalogError::corrupted("instance count"))
    }

    async fn ping(&self) -> CatalogResult<()> {
        self.pool
            .execute("SELECT 1")
            .await
            .map_err(|error| CatalogError::from_sqlx("ping the catalog", error))?;
        Ok(())
    }

    #[tracing::instrument(name = "catalog.instance_metadata_with_locations", skip_all)]
    async fn instance_metadata_with_locations(
        &self,
        study_instance_uid: &StudyUid,
        series_instance_uid: Option<&SeriesUid>,
        sop_instance_uid: Option<&SopInstanceUid>,
    ) -> CatalogResult<Vec<(InstanceLocation, String)>> {
        let builder = Self::instance_selection(
            &format!("{LOCATION_COLUMNS}, i.metadata_json"),
            study_instance_uid,
            series_instance_uid,
            sop_instance_uid,
        );
        let found_rows = builder
            .build()
            .fetch_all(&self.pool)
            .await
            .map_err(|error| CatalogError::from_sqlx("read instance metadata", error))?;
        found_rows
            .iter()
            .map(|row| Ok((instance_location(row)?, rows::text(row, "metadata_json")?)))
            .collect()
    }

    #[tracing::instrument(name = "catalog.instance_with_layout", skip_all)]
    async fn instance_with_layout(
        &self,
        study_instance_uid: &StudyUid,
        series_instance_uid: &SeriesUid,
        sop_instance_uid: &SopInstanceUid,
    ) -> CatalogResult<Option<(InstanceLocation, String, Option<String>)>> {
        let builder = Self::instance_selection(
            &format!("{LOCATION_COLUMNS}, i.metadata_json, i.pixel_data_layout"),
            study_instance_uid,
            Some(series_instance_uid),
            Some(sop_instance_uid),
        );
        let read = self.sqlite_readers.as_ref().and_then(|readers| {
            readers.read_or_fall_back("read instance metadata", |connection| {
                let mut statement = connection.prepare_cached(builder.sql())?;
                builder.bind_sqlite(&mut statement)?;
                let mut found = statement.raw_query();
                Ok(found.next()?.map(location_metadata_layout))
            })
        });
        if let Some(found) = read {
            return found.transpose();
        }
        let row = builder
            .build()
            .fetch_optional(&self.pool)
            .await
            .map_err(|error| CatalogError::from_sqlx("read instance metadata", error))?;
        row.as_ref().map(location_metadata_layout).transpose()
    }

    async fn instance_pixel_data_layout(
        &self,
        sop_instance_uid: &SopInstanceUid,
    ) -> CatalogResult<Option<String>> {
        let row = sqlx::query("SELECT pixel_data_layout FROM instance WHERE sop_instance_uid = $1")
            .bind(sop_instance_uid.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(|error| CatalogError::from_sqlx("read a pixel data layout", error))?;
        let Some(row) = row else {
            return Ok(None);
        };
        sqlx::Row::try_get::<Option<String>, _>(&row, "pixel_data_layout")
            .map_err(|error| CatalogError::from_sqlx("decode a catalog row", error))
    }

    async fn set_instance_pixel_data_layout(
        &self,
        sop_instance_uid: &SopInstanceUid,
        layout: &str,
    ) -> CatalogResult<()> {
        let _write_guard = self.write_guard().await;
        sqlx::query("UPDATE instance SET pixel_data_layout = $1 WHERE sop_instance_uid = $2")
            .bind(layout)
            .bind(sop_instance_uid.as_str())
            .execute(&self.pool)
            .await
            .map_err(|error| CatalogError::from_sqlx("record a pixel data layout", error))?;
        Ok(())
    }

    async fn change_sequence(
        &self,
        study_instance_uid: &StudyUid,
        series_instance_uid: Option<&SeriesUid>,
    ) -> CatalogResult<Option<i64>> {
        let query = match series_instance_uid {
            Some(series_instance_uid) => sqlx::query(
                "SELECT MAX(event_sequence) AS latest FROM event \
                 WHERE series_instance_uid = $1 AND study_instance_uid = $2",
            )
            .bind(series_instance_uid.as_str())
            .bind(study_instance_uid.as_str()),
            None => sqlx::query(
                "SELECT MAX(event_sequence) AS latest FROM event WHERE study_instance_uid = $1",
            )
            .bind(study_instance_uid.as_str()),
        };
        let row = query
            .fetch_one(&self.pool)
            .await
            .map_err(|error| CatalogError::from_sqlx("read the latest change", error))?;
        rows::optional_integer(&row, "latest")
    }

    async fn cached_series_metadata(
        &self,
        series_instance_uid: &SeriesUid,
    ) -> CatalogResult<Option<CachedSeriesMetadata>> {
        let row = sqlx::query(
            "SELECT series_instance_uid, study_instance_uid, change_sequence, num_instances, \
             document FROM series_metadata_cache WHERE series_instance_uid = $1",
        )
        .bind(series_instance_uid.as_str())
        .fetch_optional(&self.pool)
        .await
        .map_err(|error| CatalogError::from_sqlx("read a series metadata document", error))?;
        row.map(|row| {
            Ok(CachedSeriesMetadata {
                series_instance_uid: rows::uid(&row, "series_instance_uid")?,
                study_instance_uid: rows::uid(&row, "study_instance_uid")?,
                change_sequence: rows::integer(&row, "change_sequence")?,
                num_instances: u64::try_from(rows::integer(&row, "num_instances")?)
                    .map_err(|_| CatalogError::corrupted("instance count"))?,
                document: rows::text(&row, "document")?,
            })
        })
        .transpose()
    }

    async fn put_series_metadata(&self, cached: &CachedSeriesMetadata) -> CatalogResult<()> {
        let _write_guard = self.write_guard().await;
        sqlx::query(
            "INSERT INTO series_metadata_cache (series_instance_uid, study_instance_uid, \
             change_sequence, num_instances, document) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (series_instance_uid) DO UPDATE SET \
             study_instance_uid = excluded.study_instance_uid, \
             change_sequence = excluded.change_sequence, \
             num_instances = excluded.num_instances, document = excluded.document \
             WHERE series_metadata_cache.change_sequence <= excluded.change_sequence",
        )
        .bind(cached.series_instance_uid.as_str())
        .bind(cached.study_instance_uid.as_str())
        .bind(cached.change_sequence)
        .bind(i64::try_from(cached.num_instances).unwrap_or(i64::MAX))
        .bind(cached.document.as_str())
        .execute(&self.pool)
        .await
        .map_err(|error| CatalogError::from_sqlx("store a series metadata document", error))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conformance::synthetic_record;

    async fn read_both(
        catalog: &SqlCatalog,
        record: &InstanceRecord,
    ) -> (
        (InstanceLocation, String, Option<String>),
        crate::tiering::ObjectTier,
    ) {
        let found = catalog
            .instance_with_layout(
                &record.study.study_instance_uid,
                &record.series.series_instance_uid,
                &record.instance.sop_instance_uid,
            )
            .await
            .expect("read")
            .expect("found");
        let tier = crate::TierCatalog::object_tier(catalog, &record.object.key)
            .await
            .expect("tier");
        (found, tier)
    }

    /// Each path answers alone, and both give the same answers: with the pool closed the
    /// synchronous readers answer; with readers that cannot open their file, a second catalog
    /// on the same database answers through its pool.
    #[tokio::test]
    async fn test_point_reads_fall_back_to_the_pool_when_the_readers_fail() {
        let directory = tempfile::tempdir().expect("temp dir");
        let uri = format!("sqlite://{}/catalog.db", directory.path().display());
        let catalog = SqlCatalog::connect(&uri, 2).await.expect("catalog");
        let record = synthetic_record(1, 1, 1);
        catalog.store_instance(&record).await.expect("store");
        catalog.pool.close().await;
        let through_readers = read_both(&catalog, &record).await;
        assert_eq!(
            through_readers.0.0.sop_instance_uid,
            record.instance.sop_instance_uid
        );
        assert_eq!(through_readers.0.1, record.metadata_json);

        let mut catalog = SqlCatalog::connect(&uri, 2).await.expect("catalog");
        catalog.sqlite_readers = Some(SqliteReaders::new(directory.path().join("missing/x.db")));
        let through_pool = read_both(&catalog, &record).await;
        assert_eq!(through_pool, through_readers);
    }

    /// Stores queued while another holds the writer mutex are committed together: each gets
    /// its own answer, a conflicting record (same SOP Instance UID, other bytes) is rolled back
    /// alone, and the counters and the event log count only what was stored.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn test_a_group_commit_answers_each_store_and_rolls_back_a_conflict_alone() {
        let directory = tempfile::tempdir().expect("temp dir");
        let uri = format!("sqlite://{}/catalog.db", directory.path().display());
        let catalog = std::sync::Arc::new(SqlCatalog::connect(&uri, 2).await.expect("catalog"));
        let mut records: Vec<InstanceRecord> = (1..=5).map(|n| synthetic_record(1, 1, n)).collect();
        let mut twin = synthetic_record(1, 1, 1);
        twin.object.sha256 = "f".repeat(64);
        twin.object.key = strata_types::ObjectKey::for_content(&twin.object.sha256);
        records.push(twin);

        let held = catalog.sqlite_write_lock.lock().await;
        let stores: Vec<_> = records
            .iter()
            .cloned()
            .map(|record| {
                let catalog = catalog.clone();
                tokio::spawn(async move { catalog.store_instance(&record).await })
            })
            .collect();
        while catalog.pending_stores.len() < records.len() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        drop(held);
        let mut outcomes = Vec::new();
        for store in stores {
            outcomes.push(store.await.expect("task").expect("store"));
        }

        let created = outcomes
            .iter()
            .filter(|outcome| **outcome == StoreOutcome::Created)
            .count();
        assert_eq!(created, 5);
        let conflicts: Vec<_> = outcomes
            .iter()
            .zip(&records)
            .filter_map(|(outcome, record)| match outcome {
                StoreOutcome::Conflict { existing_sha256 } => Some((existing_sha256, record)),
                _ => None,
            })
            .collect();
        assert_eq!(conflicts.len(), 1);
        let (winner_sha256, loser) = conflicts[0];
        assert_eq!(
            loser.instance.sop_instance_uid,
            records[0].instance.sop_instance_uid
        );
        assert_ne!(winner_sha256, &loser.object.sha256);
        let stored = catalog
            .instance_sha256(&records[0].instance.sop_instance_uid)
            .await
            .expect("read");
        assert_eq!(stored.as_ref(), Some(winner_sha256));

        let studies = catalog
            .query(&crate::conformance::query_at(
                crate::QueryLevel::Study,
                vec![],
            ))
            .await
            .expect("query");
        assert_eq!(
            (studies[0].num_study_series, studies[0].num_study_instances),
            (1, 5)
        );
        let events = catalog.events_after(0, 100).await.expect("events");
        assert_eq!(events.len(), 5);
    }

    /// A closed catalog stores nothing more: the group commit's own connection closes too.
    #[tokio::test]
    async fn test_a_closed_catalog_refuses_stores() {
        let directory = tempfile::tempdir().expect("temp dir");
        let uri = format!("sqlite://{}/catalog.db", directory.path().display());
        let catalog = SqlCatalog::connect(&uri, 2).await.expect("catalog");
        catalog
            .store_instance(&synthetic_record(1, 1, 1))
            .await
            .expect("store");
        catalog.close().await;
        let error = catalog
            .store_instance(&synthetic_record(1, 1, 2))
            .await
            .expect_err("closed");
        assert_eq!(error.kind, CatalogErrorKind::Unavailable);
    }
}
