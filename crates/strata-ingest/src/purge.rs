//! Deleting the object of deleted (or refused) instances without racing an ingest of the same
//! content: the purger's half of the catalog's purge protocol (`Catalog::begin_object_purge`).
//!
//! Keys are content-addressed, so an instance stored again while its earlier copy is being
//! deleted writes the very key the deletion removes. The purge begins in the catalog only when
//! no row refers to the key, in a transaction serialised with every store; a store whose
//! writer read the key's purge state before that is refused with `ObjectPurged`, and the
//! pipeline writes the object again after the deletion (`IngestPipeline::ingest`). So a row is
//! never left without its object, whatever the interleaving.

use std::time::Duration;

use strata_catalog::{Catalog, CatalogError};
use strata_storage::{BlobStore, StorageError};
use strata_types::ObjectKey;

/// How long a purge waits for the object store to delete the object. Far below
/// `strata_catalog::PURGE_LEASE_MS`: a purge mark that outlives its lease is taken for
/// abandoned, so the deletion must be over by then.
pub const PURGE_DELETE_TIMEOUT: Duration = Duration::from_secs(120);

/// What [`purge_object`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purge {
    /// No row referred to the object: it is deleted (or was already gone).
    Deleted,
    /// A row refers to the object (stored again meanwhile, or shared): it is kept.
    StillReferenced,
}

/// Why a purge did not complete. The object may still exist, unreferenced: harmless, and
/// listed by `strata_dicomweb::find_unreferenced_objects`.
#[derive(Debug, thiserror::Error)]
pub enum PurgeError {
    #[error("catalog: {0}")]
    Catalog(#[from] CatalogError),
    /// The deletion failed. The purge is left marked in progress until its lease expires
    /// (an ambiguous failure may still delete the object), so ingests of the same content
    /// wait or are refused as retryable meanwhile.
    #[error("object store: {0}")]
    Store(#[from] StorageError),
    #[error("the object store did not delete the object within {0:?}")]
    TimedOut(Duration),
}

/// Deletes the object `key` from `store` unless an instance row refers to it, without racing
/// ingests that write the same key (see the module documentation).
pub async fn purge_object(
    catalog: &dyn Catalog,
    store: &dyn BlobStore,
    key: &ObjectKey,
) -> Result<Purge, PurgeError> {
    let Some(generation) = catalog.begin_object_purge(key).await? else {
        return Ok(Purge::StillReferenced);
    };
    tokio::time::timeout(PURGE_DELETE_TIMEOUT, store.delete(key))
        .await
        .map_err(|_| PurgeError::TimedOut(PURGE_DELETE_TIMEOUT))??;
    catalog.finish_object_purge(key, generation).await?;
    Ok(Purge::Deleted)
}
