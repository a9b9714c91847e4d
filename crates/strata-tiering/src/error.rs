//! `TieringError`, the error type of this crate.

use strata_catalog::CatalogError;
use strata_storage::StorageError;
use strata_types::ObjectKey;

use crate::mover::MoveStep;

/// The result of a tiering operation.
pub type TieringResult<T> = Result<T, TieringError>;

/// A failed tiering operation. Messages name object keys and tiers, never patient data.
#[derive(Debug, thiserror::Error)]
pub enum TieringError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    /// The source copy does not match the catalog's checksum: the move is refused.
    #[error("source copy of object `{key}` is corrupt: {detail}")]
    SourceCorrupt { key: ObjectKey, detail: String },
    /// The destination copy does not match the catalog's checksum: the move was rolled back.
    #[error("copy of object `{key}` failed verification: {detail}")]
    VerifyFailed { key: ObjectKey, detail: String },
    /// The source is archived and must be restored first.
    #[error("object `{key}` must be restored before it can move")]
    RestorePending { key: ObjectKey },
    /// A crash injected by a test after this step.
    #[error("injected crash after {0:?}")]
    InjectedCrash(MoveStep),
    /// The request names something that does not exist.
    #[error("{0}")]
    NotFound(String),
    /// Deletion refused by retention or legal hold.
    #[error("{0}")]
    DeletionRefused(String),
}
