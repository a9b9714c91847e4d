//! Point reads on SQLite through synchronous connections, without the async driver.
//!
//! sqlx runs every SQLite connection on a worker thread of its own: a statement is a command
//! sent to that thread, and its rows come back the same way. Each hand-off wakes a thread,
//! tens of microseconds on a virtual machine, around a lookup that itself takes a few. The
//! reads on a viewer's latency path (the frame of an instance: one row by primary key) go
//! through a few `rusqlite` connections instead, on the calling thread. This is written by
//! hand because no crate offers it: the async SQLite crates all hop to a thread too.
//!
//! Consistency is the pool's: in WAL mode a reader never waits for the writer, and each
//! statement sees the last committed transaction. The connections are `query_only`. A read
//! that fails here (a lock held past 100 ms, a file that cannot be opened) is answered by the
//! async pool instead.
//!
//! Measured (first request for a frame of each of 1,000 instances, `strata-bench`): the
//! server's CPU per request fell from 600-750 to about 500 microseconds.

use std::path::PathBuf;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use crate::{CatalogError, CatalogErrorKind, CatalogResult};

/// Idle connections kept for the next reads (more are opened when reads overlap).
const MAX_IDLE_READERS: usize = 4;

/// How long a read waits for a lock. A WAL reader only meets one during the recovery of the
/// log after a crash; it runs on an async worker thread, so it gives up soon and the caller
/// falls back to the pool, which waits off the runtime.
const BUSY_TIMEOUT: Duration = Duration::from_millis(100);

/// Synchronous read-only connections to the catalog's SQLite file.
pub(crate) struct SqliteReaders {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

impl std::fmt::Debug for SqliteReaders {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("SqliteReaders")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl SqliteReaders {
    /// Readers of the database file at `path` (opened by the pool first, so it exists and is
    /// in WAL mode).
    pub(crate) fn new(path: PathBuf) -> Self {
        Self {
            path,
            idle: Mutex::new(Vec::new()),
        }
    }

    /// Runs `read` on an idle connection (opening one if none is idle), in place on the
    /// calling thread. Only for point reads by an indexed key (microseconds once the pages
    /// are cached, the cost of one hand-off to a blocking thread at worst); scans and
    /// anything that returns many rows stay on the async pool.
    pub(crate) fn read<T>(
        &self,
        action: &str,
        read: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> CatalogResult<T> {
        let idle = self
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        let connection = match idle {
            Some(connection) => connection,
            None => self.open().map_err(|error| {
                sqlite_error(&format!("open a catalog reader to {action}"), error)
            })?,
        };
        let result = read(&connection).map_err(|error| sqlite_error(action, error));
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() < MAX_IDLE_READERS {
            idle.push(connection);
        }
        result
    }

    /// [`SqliteReaders::read`] for a caller that falls back to the async pool: `None` when
    /// the read failed (logged at debug level).
    pub(crate) fn read_or_fall_back<T>(
        &self,
        action: &str,
        read: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Option<T> {
        match self.read(action, read) {
            Ok(value) => Some(value),
            Err(error) => {
                tracing::debug!(%error, "synchronous catalog read failed; using the pool");
                None
            }
        }
    }

    fn open(&self) -> rusqlite::Result<Connection> {
        let connection = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        connection.busy_timeout(BUSY_TIMEOUT)?;
        connection.execute_batch("PRAGMA query_only = ON;")?;
        Ok(connection)
    }
}

/// Wraps a rusqlite error raised while doing `action`. As with sqlx errors, the message names
/// the class only: SQLite messages can quote values, and values may be patient data.
pub(crate) fn sqlite_error(action: &str, error: rusqlite::Error) -> CatalogError {
    let (kind, class) = sqlite_error_class(&error);
    CatalogError {
        kind,
        message: format!("failed to {action}: {class}"),
        source: Some(Box::new(error)),
    }
}

/// The kind of a rusqlite error and a short description free of values.
pub(crate) fn sqlite_error_class(error: &rusqlite::Error) -> (CatalogErrorKind, String) {
    match error {
        rusqlite::Error::SqliteFailure(failure, _) => (
            CatalogErrorKind::Unavailable,
            format!("database error (code {})", failure.extended_code),
        ),
        rusqlite::Error::FromSqlConversionFailure(..)
        | rusqlite::Error::InvalidColumnType(..)
        | rusqlite::Error::InvalidColumnName(..)
        | rusqlite::Error::IntegralValueOutOfRange(..) => (
            CatalogErrorKind::Corrupted,
            "unexpected data in the catalog".to_owned(),
        ),
        _ => (
            CatalogErrorKind::Unavailable,
            "database driver error".to_owned(),
        ),
    }
}
