//! Catalog errors.

/// What kind of catalog failure happened; callers branch on this.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CatalogErrorKind {
    /// The URI or configuration is wrong (unknown scheme, bad path).
    Config,
    /// The database cannot be reached or refused the operation; retrying may succeed.
    Unavailable,
    /// A uniqueness rule was violated.
    AlreadyExists,
    /// The entity named by the caller (a study, series or instance to delete) does not exist.
    NotFound,
    /// Stored data could not be decoded (a bug or a corrupted database).
    Corrupted,
    /// Migrations failed.
    Migration,
}

/// A catalog failure. The message never carries patient data.
#[derive(Debug, thiserror::Error)]
#[error("{kind:?}: {message}")]
pub struct CatalogError {
    pub kind: CatalogErrorKind,
    pub message: String,
    #[source]
    pub source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl CatalogError {
    /// Creates an error of `kind` with a message and no source.
    pub fn new(kind: CatalogErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            source: None,
        }
    }
}

/// The result type of catalog operations.
pub type CatalogResult<T> = Result<T, CatalogError>;

impl CatalogError {
    /// Wraps a sqlx error raised while doing `action` ("store instance", "run query", ...).
    ///
    /// The message names the action and the error class only: database messages can quote
    /// values, and values may be patient data, so they stay in `source`.
    pub(crate) fn from_sqlx(action: &str, error: sqlx::Error) -> Self {
        let (kind, class) = classify_sqlx_error(&error);
        Self {
            kind,
            message: format!("failed to {action}: {class}"),
            source: Some(Box::new(error)),
        }
    }

    /// Wraps a value read from the database that does not decode into the model.
    pub(crate) fn corrupted(what: &str) -> Self {
        Self::new(
            CatalogErrorKind::Corrupted,
            format!("catalog holds an invalid {what}"),
        )
    }
}

/// Returns the kind of a sqlx error and a short lowercase description free of values.
fn classify_sqlx_error(error: &sqlx::Error) -> (CatalogErrorKind, String) {
    use sqlx::Error;
    match error {
        Error::Database(database_error) => {
            let code = database_error
                .code()
                .map(|code| code.into_owned())
                .unwrap_or_default();
            let kind = if database_error.is_unique_violation() {
                CatalogErrorKind::AlreadyExists
            } else {
                CatalogErrorKind::Unavailable
            };
            (kind, format!("database error (code {code})"))
        }
        Error::Configuration(_) => (CatalogErrorKind::Config, "invalid configuration".to_owned()),
        Error::Migrate(_) => (CatalogErrorKind::Migration, "migration error".to_owned()),
        Error::ColumnDecode { .. }
        | Error::Decode(_)
        | Error::ColumnNotFound(_)
        | Error::ColumnIndexOutOfBounds { .. }
        | Error::TypeNotFound { .. }
        | Error::RowNotFound => (
            CatalogErrorKind::Corrupted,
            "unexpected data in the catalog".to_owned(),
        ),
        Error::PoolTimedOut => (
            CatalogErrorKind::Unavailable,
            "timed out waiting for a connection".to_owned(),
        ),
        Error::PoolClosed => (
            CatalogErrorKind::Unavailable,
            "the connection pool is closed".to_owned(),
        ),
        Error::Io(_) => (CatalogErrorKind::Unavailable, "i/o error".to_owned()),
        Error::Tls(_) => (CatalogErrorKind::Unavailable, "tls error".to_owned()),
        Error::Protocol(_) => (CatalogErrorKind::Unavailable, "protocol error".to_owned()),
        _ => (
            CatalogErrorKind::Unavailable,
            "database driver error".to_owned(),
        ),
    }
}

/// Returns whether `error` is a uniqueness violation (PostgreSQL SQLSTATE 23505, SQLite
/// `SQLITE_CONSTRAINT_UNIQUE` / `SQLITE_CONSTRAINT_PRIMARYKEY`).
pub(crate) fn is_unique_violation(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Database(database_error) => {
            database_error.is_unique_violation()
                || matches!(
                    database_error.code().as_deref(),
                    Some("23505" | "2067" | "1555")
                )
        }
        _ => false,
    }
}
