//! Typed reads of columns from `AnyRow`s; failures become `Corrupted` errors.

use sqlx::Row;
use sqlx::any::AnyRow;

use crate::{CatalogError, CatalogResult};

/// Reads a NOT NULL text column.
pub(crate) fn text(row: &AnyRow, column: &str) -> CatalogResult<String> {
    row.try_get(column)
        .map_err(|error| CatalogError::from_sqlx("decode a catalog row", error))
}

/// Reads a NOT NULL integer column.
pub(crate) fn integer(row: &AnyRow, column: &str) -> CatalogResult<i64> {
    row.try_get(column)
        .map_err(|error| CatalogError::from_sqlx("decode a catalog row", error))
}

/// Reads a nullable integer column.
pub(crate) fn optional_integer(row: &AnyRow, column: &str) -> CatalogResult<Option<i64>> {
    row.try_get(column)
        .map_err(|error| CatalogError::from_sqlx("decode a catalog row", error))
}

/// Reads a UID column into one of the `strata-types` UID types.
pub(crate) fn uid<U>(row: &AnyRow, column: &str) -> CatalogResult<U>
where
    U: std::str::FromStr,
{
    CatalogRow::uid(row, column)
}

/// A row of either driver (sqlx's `AnyRow`, or a `rusqlite` row of the synchronous SQLite
/// readers), read by column name; for the decoders both paths share.
pub(crate) trait CatalogRow {
    /// Reads a NOT NULL text column.
    fn text(&self, column: &str) -> CatalogResult<String>;
    /// Reads a NOT NULL integer column.
    fn integer(&self, column: &str) -> CatalogResult<i64>;
    /// Reads a nullable text column.
    fn optional_text(&self, column: &str) -> CatalogResult<Option<String>>;

    /// Reads a UID column into one of the `strata-types` UID types.
    fn uid<U: std::str::FromStr>(&self, column: &str) -> CatalogResult<U> {
        self.text(column)?
            .parse()
            .map_err(|_| CatalogError::corrupted(column))
    }
}

impl CatalogRow for AnyRow {
    fn text(&self, column: &str) -> CatalogResult<String> {
        text(self, column)
    }

    fn integer(&self, column: &str) -> CatalogResult<i64> {
        integer(self, column)
    }

    fn optional_text(&self, column: &str) -> CatalogResult<Option<String>> {
        self.try_get(column)
            .map_err(|error| CatalogError::from_sqlx("decode a catalog row", error))
    }
}

impl CatalogRow for rusqlite::Row<'_> {
    fn text(&self, column: &str) -> CatalogResult<String> {
        self.get(column)
            .map_err(|_| CatalogError::corrupted(column))
    }

    fn integer(&self, column: &str) -> CatalogResult<i64> {
        self.get(column)
            .map_err(|_| CatalogError::corrupted(column))
    }

    fn optional_text(&self, column: &str) -> CatalogResult<Option<String>> {
        self.get(column)
            .map_err(|_| CatalogError::corrupted(column))
    }
}
