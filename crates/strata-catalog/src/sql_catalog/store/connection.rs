//! The connection a store transaction writes through: sqlx (PostgreSQL) or a synchronous
//! `rusqlite` connection (SQLite), behind one small trait so that the statements of a store
//! are written once.
//!
//! Why two drivers: sqlx runs a SQLite connection on a worker thread of its own, and each of
//! the dozen statements of a store is a command sent to that thread and an answer sent back,
//! two thread wake-ups around a statement that takes a few microseconds. On SQLite the group
//! commit runs its statements on a connection in place instead (see `super::commit_group`).
//! Measured on one DIMSE association (`strata-bench`, 512 KiB CT instances): the catalog
//! commit of an instance fell from 1.0-1.4 ms to 0.5 ms (most of it the WAL fsync), and the
//! server's CPU per instance from 2.8-3.0 to 2.2-2.5 ms.

use std::future::Future;

use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use crate::error::is_unique_violation;
use crate::sql_catalog::builder::SqlBuilder;
use crate::sql_catalog::sqlite_reads::{sqlite_error, sqlite_error_class};
use crate::{CatalogError, CatalogErrorKind};

/// A failed statement of a store, from either driver.
#[derive(Debug)]
pub(crate) enum WriteError {
    Sqlx(sqlx::Error),
    Sqlite(rusqlite::Error),
    /// A row the transaction itself found a statement earlier has vanished, or a column did
    /// not decode.
    UnexpectedRow(&'static str),
    /// The store was not written because something it shared failed: its group's
    /// transaction, or the writer connection.
    Failed(String),
}

impl WriteError {
    /// Whether a unique constraint refused a row: another writer created it first.
    pub(crate) fn is_unique_violation(&self) -> bool {
        match self {
            WriteError::Sqlx(error) => is_unique_violation(error),
            WriteError::Sqlite(rusqlite::Error::SqliteFailure(failure, _)) => matches!(
                failure.extended_code,
                rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                    | rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
            ),
            _ => false,
        }
    }

    /// Whether a foreign key refused a row: a concurrent delete removed the patient, study or
    /// series it refers to (PostgreSQL; SQLite's writer lock rules this out). The store is
    /// retried from the lookup.
    pub(crate) fn is_foreign_key_violation(&self) -> bool {
        match self {
            WriteError::Sqlx(sqlx::Error::Database(error)) => {
                error.code().as_deref() == Some("23503")
            }
            WriteError::Sqlite(rusqlite::Error::SqliteFailure(failure, _)) => {
                failure.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_FOREIGNKEY
            }
            _ => false,
        }
    }

    /// The catalog error for this failure while doing `action`.
    pub(crate) fn into_catalog_error(self, action: &str) -> CatalogError {
        match self {
            WriteError::Sqlx(error) => CatalogError::from_sqlx(action, error),
            WriteError::Sqlite(error) => sqlite_error(action, error),
            WriteError::UnexpectedRow(what) => CatalogError::new(
                CatalogErrorKind::Corrupted,
                format!("failed to {action}: unexpected {what}"),
            ),
            WriteError::Failed(reason) => CatalogError::new(
                CatalogErrorKind::Unavailable,
                format!("failed to {action}: {reason}"),
            ),
        }
    }

    /// The same failure for each of several stores that shared it (a group commit), naming
    /// the step and the class of error only (driver messages can quote values).
    pub(crate) fn shared(&self, step: &str) -> WriteError {
        let class = match self {
            WriteError::Sqlx(_) => "database error".to_owned(),
            WriteError::Sqlite(error) => sqlite_error_class(error).1,
            WriteError::UnexpectedRow(what) => format!("unexpected {what}"),
            WriteError::Failed(reason) => reason.clone(),
        };
        WriteError::Failed(format!("{step} failed for a group of stores: {class}"))
    }
}

impl From<sqlx::Error> for WriteError {
    fn from(error: sqlx::Error) -> Self {
        WriteError::Sqlx(error)
    }
}

impl From<rusqlite::Error> for WriteError {
    fn from(error: rusqlite::Error) -> Self {
        WriteError::Sqlite(error)
    }
}

/// A row returned by a store statement: only integers and text are ever read.
pub(crate) enum FetchedRow {
    Any(AnyRow),
    Sqlite(Vec<(String, rusqlite::types::Value)>),
}

impl FetchedRow {
    fn sqlite_value(&self, column: &str) -> Option<&rusqlite::types::Value> {
        match self {
            FetchedRow::Sqlite(values) => values
                .iter()
                .find(|(name, _)| name == column)
                .map(|(_, value)| value),
            FetchedRow::Any(_) => None,
        }
    }

    /// Reads a nullable integer column.
    pub(crate) fn optional_integer(&self, column: &str) -> Result<Option<i64>, WriteError> {
        use rusqlite::types::Value;
        match self {
            FetchedRow::Any(row) => Ok(row.try_get(column)?),
            FetchedRow::Sqlite(_) => match self.sqlite_value(column) {
                Some(Value::Integer(number)) => Ok(Some(*number)),
                Some(Value::Null) => Ok(None),
                _ => Err(WriteError::UnexpectedRow("column type")),
            },
        }
    }

    /// Reads a NOT NULL integer column.
    pub(crate) fn integer(&self, column: &str) -> Result<i64, WriteError> {
        self.optional_integer(column)?
            .ok_or(WriteError::UnexpectedRow("null value"))
    }

    /// Reads a nullable text column.
    pub(crate) fn optional_text(&self, column: &str) -> Result<Option<String>, WriteError> {
        use rusqlite::types::Value;
        match self {
            FetchedRow::Any(row) => Ok(row.try_get(column)?),
            FetchedRow::Sqlite(_) => match self.sqlite_value(column) {
                Some(Value::Text(text)) => Ok(Some(text.clone())),
                Some(Value::Null) => Ok(None),
                _ => Err(WriteError::UnexpectedRow("column type")),
            },
        }
    }
}

/// Where the statements of one store go. Both methods run one statement of `statement`'s
/// text with its bound values.
pub(crate) trait WriteConnection: Send {
    /// Runs a statement and returns the number of rows it changed.
    fn execute(
        &mut self,
        statement: &SqlBuilder,
    ) -> impl Future<Output = Result<u64, WriteError>> + Send;

    /// Runs a statement and returns its first row, if any.
    fn fetch_optional(
        &mut self,
        statement: &SqlBuilder,
    ) -> impl Future<Output = Result<Option<FetchedRow>, WriteError>> + Send;

    /// Runs a statement that returns exactly one row.
    fn fetch_one(
        &mut self,
        statement: &SqlBuilder,
    ) -> impl Future<Output = Result<FetchedRow, WriteError>> + Send {
        async move {
            self.fetch_optional(statement)
                .await?
                .ok_or(WriteError::UnexpectedRow("missing row"))
        }
    }
}

impl WriteConnection for AnyConnection {
    async fn execute(&mut self, statement: &SqlBuilder) -> Result<u64, WriteError> {
        Ok(statement.build().execute(self).await?.rows_affected())
    }

    async fn fetch_optional(
        &mut self,
        statement: &SqlBuilder,
    ) -> Result<Option<FetchedRow>, WriteError> {
        Ok(statement
            .build()
            .fetch_optional(self)
            .await?
            .map(FetchedRow::Any))
    }
}

/// A synchronous SQLite connection inside a transaction its owner began; every "future"
/// completes at once.
pub(crate) struct SqliteWriter<'c>(pub(crate) &'c mut rusqlite::Connection);

impl WriteConnection for SqliteWriter<'_> {
    async fn execute(&mut self, statement: &SqlBuilder) -> Result<u64, WriteError> {
        let mut prepared = self.0.prepare_cached(statement.sql())?;
        statement.bind_sqlite(&mut prepared)?;
        let changed = prepared.raw_execute()?;
        Ok(changed as u64)
    }

    async fn fetch_optional(
        &mut self,
        statement: &SqlBuilder,
    ) -> Result<Option<FetchedRow>, WriteError> {
        let mut prepared = self.0.prepare_cached(statement.sql())?;
        let names: Vec<String> = prepared
            .column_names()
            .into_iter()
            .map(str::to_owned)
            .collect();
        statement.bind_sqlite(&mut prepared)?;
        let mut rows = prepared.raw_query();
        let Some(row) = rows.next()? else {
            return Ok(None);
        };
        let mut values = Vec::with_capacity(names.len());
        for (index, name) in names.into_iter().enumerate() {
            values.push((name, row.get::<_, rusqlite::types::Value>(index)?));
        }
        Ok(Some(FetchedRow::Sqlite(values)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::executor::block_on;

    fn insert(key: &str, unique: &str) -> SqlBuilder {
        SqlBuilder::with_values(
            "INSERT INTO t (k, u) VALUES ($1, $2) RETURNING k",
            [key.into(), unique.into()],
        )
    }

    #[test]
    fn test_sqlite_constraint_failures_are_told_apart() {
        let mut connection = rusqlite::Connection::open_in_memory().unwrap();
        connection
            .execute_batch("CREATE TABLE t (k TEXT PRIMARY KEY, u TEXT UNIQUE CHECK (u <> ''))")
            .unwrap();
        let mut writer = SqliteWriter(&mut connection);
        let row = block_on(writer.fetch_one(&insert("a", "x"))).unwrap();
        assert_eq!(row.optional_text("k").unwrap().as_deref(), Some("a"));

        let same_unique = block_on(writer.execute(&insert("b", "x"))).unwrap_err();
        assert!(same_unique.is_unique_violation());
        let same_key = block_on(writer.execute(&insert("a", "y"))).unwrap_err();
        assert!(same_key.is_unique_violation());
        let failed_check = block_on(writer.execute(&insert("c", ""))).unwrap_err();
        assert!(!failed_check.is_unique_violation());
        let message = failed_check
            .into_catalog_error("store an instance")
            .to_string();
        assert!(
            !message.contains("INSERT"),
            "no SQL in the message: {message}"
        );
    }

    #[test]
    fn test_a_shared_failure_names_the_step_and_the_class_only() {
        let error = WriteError::Sqlite(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY),
            Some("a driver message quoting Doe^Jane".to_owned()),
        ));
        let shared = error.shared("COMMIT");
        assert!(!shared.is_unique_violation());
        let catalog_error = shared.into_catalog_error("store an instance");
        assert_eq!(catalog_error.kind, CatalogErrorKind::Unavailable);
        let message = catalog_error.to_string();
        assert!(
            message.contains("COMMIT failed for a group of stores"),
            "{message}"
        );
        assert!(!message.contains("Doe"), "{message}");
    }

    #[test]
    fn test_rows_decode_by_column_name_and_refuse_other_types() {
        let mut connection = rusqlite::Connection::open_in_memory().unwrap();
        let mut writer = SqliteWriter(&mut connection);
        let statement = SqlBuilder::with_values(
            "SELECT $1 AS number, NULL AS absent, 'text' AS word",
            [7_i64.into()],
        );
        let row = block_on(writer.fetch_one(&statement)).unwrap();
        assert_eq!(row.integer("number").unwrap(), 7);
        assert_eq!(row.optional_integer("absent").unwrap(), None);
        assert!(row.integer("absent").is_err());
        assert_eq!(row.optional_text("word").unwrap().as_deref(), Some("text"));
        assert!(row.integer("word").is_err());
        assert!(row.optional_text("missing").is_err());
        let none = SqlBuilder::new("SELECT 1 WHERE 0");
        assert!(block_on(writer.fetch_optional(&none)).unwrap().is_none());
        assert!(block_on(writer.fetch_one(&none)).is_err());
    }
}
