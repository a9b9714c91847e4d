//! `StorageError`, the one error type of this crate, and its mapping from `object_store`.

use std::error::Error as StdError;
use std::fmt;

use object_store::client::{HttpError, HttpErrorKind};
use strata_types::ObjectKey;

/// A boxed error kept as the `source` of a [`StorageError`].
type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// The result of a storage operation.
pub type StorageResult<T> = Result<T, StorageError>;

/// What went wrong, for callers to branch on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StorageErrorKind {
    /// The object does not exist.
    NotFound,
    /// The store could not be reached or answered with a server error (5xx, throttling);
    /// trying again later may succeed.
    Unavailable,
    /// The store refused the credentials or the operation.
    PermissionDenied,
    /// The storage configuration is invalid or names something unsupported.
    Config,
    /// The object key is not a valid object path.
    InvalidKey,
    /// The bytes do not match what was expected (checksum mismatch, a source file that shrank
    /// while it was being uploaded).
    Integrity,
    /// A local I/O error: the source file of an upload, or the local object directory.
    Io,
    /// The object is on an archive tier and must be restored before it can be read; a restore
    /// was started (or is running). Try again after `retry_after_seconds` (HTTP 503 +
    /// Retry-After, DIMSE retrieve failure). See docs/tiering.md.
    RestoreRequired { retry_after_seconds: u64 },
    /// Anything else.
    Other,
}

impl StorageErrorKind {
    fn as_str(self) -> &'static str {
        match self {
            Self::NotFound => "not found",
            Self::Unavailable => "store unavailable",
            Self::PermissionDenied => "permission denied",
            Self::Config => "invalid storage configuration",
            Self::InvalidKey => "invalid object key",
            Self::Integrity => "integrity check failed",
            Self::Io => "i/o error",
            Self::RestoreRequired { .. } => "object is archived and being restored",
            Self::Other => "storage error",
        }
    }
}

impl fmt::Display for StorageErrorKind {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.as_str())
    }
}

/// A failed storage operation: its kind, the object concerned (if any), what was being done and
/// the underlying cause as `source`. Displays as "failed to read object `KEY`: not found".
///
/// The message never contains credentials: it names the operation and the object key only.
#[derive(Debug, thiserror::Error)]
#[error("{context}{}: {kind}", KeySuffix(key.as_ref()))]
pub struct StorageError {
    /// What went wrong.
    pub kind: StorageErrorKind,
    /// The object concerned, when the operation was about one object.
    pub key: Option<ObjectKey>,
    context: String,
    #[source]
    source: Option<BoxError>,
}

struct KeySuffix<'a>(Option<&'a ObjectKey>);

impl fmt::Display for KeySuffix<'_> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(key) => write!(formatter, " `{key}`"),
            None => Ok(()),
        }
    }
}

impl StorageError {
    /// Returns an error of `kind`; `context` says what was being done, lowercase, and ends
    /// with "object" when a key follows ("failed to read object").
    pub fn new(kind: StorageErrorKind, context: impl Into<String>) -> Self {
        Self {
            kind,
            key: None,
            context: context.into(),
            source: None,
        }
    }

    /// Returns the error with the object it concerns.
    pub fn with_key(mut self, key: &ObjectKey) -> Self {
        self.key = Some(key.clone());
        self
    }

    /// Returns the error with its underlying cause.
    pub fn with_source(mut self, source: impl Into<BoxError>) -> Self {
        self.source = Some(source.into());
        self
    }

    /// Returns true when trying again later may succeed (`Unavailable`).
    pub fn is_retryable(&self) -> bool {
        self.kind == StorageErrorKind::Unavailable
    }

    /// Wraps an `object_store` error, classifying it.
    pub(crate) fn from_object_store(
        error: object_store::Error,
        context: impl Into<String>,
        key: Option<&ObjectKey>,
    ) -> Self {
        let kind = classify_object_store_error(&error);
        let storage_error = Self::new(kind, context).with_source(error);
        match key {
            Some(key) => storage_error.with_key(key),
            None => storage_error,
        }
    }

    /// Wraps a local I/O error (`NotFound` of a local file is still `Io`: it is not the object
    /// that is missing).
    pub(crate) fn from_io(error: std::io::Error, context: impl Into<String>) -> Self {
        Self::new(StorageErrorKind::Io, context).with_source(error)
    }
}

/// Classifies an `object_store` error.
///
/// Network failures surface as an [`HttpError`] somewhere in the source chain. HTTP status
/// failures are wrapped in a type that `object_store` keeps private, so the status is read
/// from its message ("... status code: 503 Service Unavailable ..."); an unrecognised message
/// falls back to `Other`, which only costs a retry decision.
fn classify_object_store_error(error: &object_store::Error) -> StorageErrorKind {
    use object_store::Error;
    match error {
        Error::NotFound { .. } => StorageErrorKind::NotFound,
        Error::InvalidPath { .. } => StorageErrorKind::InvalidKey,
        Error::PermissionDenied { .. } | Error::Unauthenticated { .. } => {
            StorageErrorKind::PermissionDenied
        }
        Error::UnknownConfigurationKey { .. }
        | Error::NotSupported { .. }
        | Error::NotImplemented { .. } => StorageErrorKind::Config,
        Error::JoinError { .. } => StorageErrorKind::Other,
        _ => classify_source_chain(error),
    }
}

fn classify_source_chain(error: &(dyn StdError + 'static)) -> StorageErrorKind {
    let mut saw_io_error = false;
    let mut current_opt: Option<&(dyn StdError + 'static)> = Some(error);
    while let Some(current) = current_opt {
        if let Some(http_error) = current.downcast_ref::<HttpError>() {
            return match http_error.kind() {
                HttpErrorKind::Connect
                | HttpErrorKind::Request
                | HttpErrorKind::Timeout
                | HttpErrorKind::Interrupted => StorageErrorKind::Unavailable,
                _ => StorageErrorKind::Other,
            };
        }
        if let Some(status) = http_status_in_message(&current.to_string()) {
            return if status >= 500 || status == 429 {
                StorageErrorKind::Unavailable
            } else if status == 401 || status == 403 {
                StorageErrorKind::PermissionDenied
            } else if status == 404 {
                StorageErrorKind::NotFound
            } else {
                StorageErrorKind::Other
            };
        }
        saw_io_error |= current.is::<std::io::Error>();
        current_opt = current.source();
    }
    if saw_io_error {
        StorageErrorKind::Io
    } else {
        StorageErrorKind::Other
    }
}

/// Finds the status in `object_store`'s "non-2xx status code: 503 Service Unavailable".
fn http_status_in_message(message: &str) -> Option<u16> {
    const MARKER: &str = "status code: ";
    let start = message.find(MARKER)? + MARKER.len();
    let digits = message.get(start..start + 3)?;
    digits
        .parse()
        .ok()
        .filter(|status| (100..600).contains(status))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn generic(source: impl Into<BoxError>) -> object_store::Error {
        object_store::Error::Generic {
            store: "S3",
            source: source.into(),
        }
    }

    #[test]
    fn test_connect_failure_is_unavailable() {
        let error = generic(HttpError::new(
            HttpErrorKind::Connect,
            std::io::Error::other("connection refused"),
        ));
        assert_eq!(
            classify_object_store_error(&error),
            StorageErrorKind::Unavailable
        );
    }

    #[test]
    fn test_server_errors_and_throttling_are_unavailable() {
        for status_text in [
            "503 Service Unavailable",
            "500 Internal Server Error",
            "429 Too Many",
        ] {
            let message = format!(
                "Error performing PUT http://127.0.0.1:3900/b/k in 1s - Server returned non-2xx \
                 status code: {status_text}: <Error/>"
            );
            let error = generic(std::io::Error::other(message));
            assert_eq!(
                classify_object_store_error(&error),
                StorageErrorKind::Unavailable,
                "{status_text}"
            );
        }
    }

    #[test]
    fn test_client_errors_are_not_retryable() {
        let error = generic(std::io::Error::other(
            "Server returned non-2xx status code: 400 Bad Request: <Error/>",
        ));
        let storage_error = StorageError::from_object_store(error, "failed to write object", None);
        assert_eq!(storage_error.kind, StorageErrorKind::Other);
        assert!(!storage_error.is_retryable());
    }

    #[test]
    fn test_not_found_and_local_io() {
        let not_found = object_store::Error::NotFound {
            path: "a/b".to_owned(),
            source: "missing".into(),
        };
        assert_eq!(
            classify_object_store_error(&not_found),
            StorageErrorKind::NotFound
        );
        let disk_full = generic(std::io::Error::other("no space left on device"));
        assert_eq!(
            classify_object_store_error(&disk_full),
            StorageErrorKind::Io
        );
    }

    #[test]
    fn test_message_names_operation_key_and_kind() {
        let key = ObjectKey::from_stored("instances/1/2/3/abc.dcm");
        let error =
            StorageError::new(StorageErrorKind::NotFound, "failed to read object").with_key(&key);
        assert_eq!(
            error.to_string(),
            "failed to read object `instances/1/2/3/abc.dcm`: not found"
        );
        let error = StorageError::new(StorageErrorKind::Config, "unsupported storage uri scheme");
        assert_eq!(
            error.to_string(),
            "unsupported storage uri scheme: invalid storage configuration"
        );
    }

    #[test]
    fn test_status_parsing_ignores_garbage() {
        assert_eq!(http_status_in_message("status code: 5x"), None);
        assert_eq!(http_status_in_message("status code: 999"), None);
        assert_eq!(
            http_status_in_message("status code: 502 Bad Gateway"),
            Some(502)
        );
        assert_eq!(http_status_in_message("no status here"), None);
    }
}
