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
    text(row, column)?
        .parse()
        .map_err(|_| CatalogError::corrupted(column))
}
