//! The SQL metadata catalog: patients, studies, series, instances and the event log.
//!
//! Owns the schema and its migrations (one folder per engine under `migrations/`), the
//! `Catalog` trait and its one implementation, [`SqlCatalog`], which runs on SQLite
//! (`sqlite://PATH`) and PostgreSQL (`postgres://...`); [`open_catalog`] picks the engine from
//! the URI. The `testsuite` feature exports `conformance`, the scenarios every engine passes.
//! Depends only on `strata-types`; it knows nothing of HTTP, DIMSE or the object store.

mod error;
mod model;
mod query;
mod sql_catalog;
mod tiering;

#[cfg(any(test, feature = "testsuite"))]
pub mod conformance;

pub use error::{CatalogError, CatalogErrorKind, CatalogResult};
pub use model::*;
pub use query::*;
pub use sql_catalog::{SqlCatalog, open_catalog};
pub use tiering::{
    DEFAULT_TIER, FixityRecord, FixityStatus, MoveState, ObjectPlacement, ObjectTier, StudyFacts,
    StudyRetention, TierCatalog, TierMove, TierUsage,
};

use async_trait::async_trait;
use strata_types::{SeriesUid, SopInstanceUid, StudyUid};

/// The catalog every protocol adapter and service reads and writes through.
#[async_trait]
pub trait Catalog: Send + Sync + 'static {
    /// Records one instance: upserts its patient, study and series, inserts the instance and
    /// appends an `InstanceStored` event, all in one transaction. Idempotent for identical
    /// content; refuses different content under an existing SOP Instance UID.
    async fn store_instance(&self, record: &InstanceRecord) -> CatalogResult<StoreOutcome>;

    /// Returns the SHA-256 of the stored instance with this SOP Instance UID, if any.
    async fn instance_sha256(
        &self,
        sop_instance_uid: &SopInstanceUid,
    ) -> CatalogResult<Option<String>>;

    /// Returns the locations of the instances of a study, a series of it, or one instance,
    /// ordered by series number, instance number (missing numbers last), then storage order.
    /// Empty when nothing matches.
    async fn instance_locations(
        &self,
        study_instance_uid: &StudyUid,
        series_instance_uid: Option<&SeriesUid>,
        sop_instance_uid: Option<&SopInstanceUid>,
    ) -> CatalogResult<Vec<InstanceLocation>>;

    /// Returns the DICOM JSON metadata of the same selection as `instance_locations`, in the
    /// same order.
    async fn instance_metadata(
        &self,
        study_instance_uid: &StudyUid,
        series_instance_uid: Option<&SeriesUid>,
        sop_instance_uid: Option<&SopInstanceUid>,
    ) -> CatalogResult<Vec<String>>;

    /// Returns the SOP Instance UID and DICOM JSON metadata of those of `sop_instance_uids` that
    /// are stored in study `study_instance_uid`, in no particular order; UIDs not (or no
    /// longer) stored there are left out. What an incremental reader of the event log needs:
    /// the instances its new events name, not the whole study again.
    async fn instance_metadata_by_uid(
        &self,
        study_instance_uid: &StudyUid,
        sop_instance_uids: &[SopInstanceUid],
    ) -> CatalogResult<Vec<(SopInstanceUid, String)>>;

    /// Runs a QIDO-RS / C-FIND query. Results are ordered stably (by the primary key of the
    /// level) so that paging never skips or repeats.
    async fn query(&self, query: &CatalogQuery) -> CatalogResult<Vec<QueryMatch>>;

    /// Runs the same query as [`Catalog::query`] with the matches in `order` (FHIR `_sort`).
    async fn query_in_order(
        &self,
        query: &CatalogQuery,
        order: QueryOrder,
    ) -> CatalogResult<Vec<QueryMatch>>;

    /// Returns how many entities `query` matches, ignoring its limit and offset (FHIR
    /// `Bundle.total`).
    async fn count_matches(&self, query: &CatalogQuery) -> CatalogResult<u64>;

    /// Deletes a study, a series or an instance in one transaction: removes the instance rows,
    /// the series, study and patient rows left empty, keeps the counters of the rest
    /// consistent, and appends one `InstanceDeleted` event per removed instance (carrying its
    /// study, series and SOP Instance UIDs and object key). Returns what was removed.
    ///
    /// The objects are NOT deleted: the caller deletes them after this commit, once
    /// [`Catalog::object_key_referenced`] says no row refers to them any more. A crash in
    /// between leaves unreferenced objects only, never a row without its object. A scope that
    /// matches nothing fails with [`CatalogErrorKind::NotFound`]. A store racing the removal
    /// of the last instance of its study or patient is retried inside `store_instance`.
    async fn delete(&self, scope: &DeleteScope) -> CatalogResult<DeleteOutcome>;

    /// Returns whether any instance row refers to the object `key` (objects are
    /// content-addressed, so a deleted instance stored again refers to the same key).
    async fn object_key_referenced(&self, key: &strata_types::ObjectKey) -> CatalogResult<bool>;

    /// Returns the purge state of the object `key`: what a writer reads before it writes the
    /// object and records in [`InstanceRecord::purge_generation`].
    async fn object_purge_state(
        &self,
        key: &strata_types::ObjectKey,
    ) -> CatalogResult<ObjectPurgeState>;

    /// Begins purging the object `key`, in one transaction serialised with every store: when
    /// no instance row refers to the key, marks a purge in progress and returns its generation;
    /// returns `None` (and changes nothing) when a row refers to it. The caller then deletes
    /// the object and calls [`Catalog::finish_object_purge`]. A store whose writer read the
    /// state before this began is refused with [`StoreOutcome::ObjectPurged`], so an object
    /// written for a new row is never deleted under it.
    async fn begin_object_purge(&self, key: &strata_types::ObjectKey)
    -> CatalogResult<Option<i64>>;

    /// Ends purge `generation` of the object `key` once the object is deleted (a later purge
    /// of the key leaves it alone), and forgets purges that ended more than a day ago.
    async fn finish_object_purge(
        &self,
        key: &strata_types::ObjectKey,
        generation: i64,
    ) -> CatalogResult<()>;

    /// Returns up to `limit` events with a sequence greater than `after`, oldest first.
    async fn events_after(&self, after: i64, limit: u32) -> CatalogResult<Vec<CatalogEvent>>;

    /// Returns the number of instances in the catalog.
    async fn count_instances(&self) -> CatalogResult<u64>;

    /// Checks that the database answers.
    async fn ping(&self) -> CatalogResult<()>;

    /// Returns the locations and DICOM JSON metadata of the same selection as
    /// `instance_locations`, in the same order, read by one statement (so the two always agree).
    async fn instance_metadata_with_locations(
        &self,
        study_instance_uid: &StudyUid,
        series_instance_uid: Option<&SeriesUid>,
        sop_instance_uid: Option<&SopInstanceUid>,
    ) -> CatalogResult<Vec<(InstanceLocation, String)>>;

    /// Returns the location, DICOM JSON metadata and recorded pixel data layout of one
    /// instance, read by one statement (what a frame or rendered request needs); `None` when
    /// the instance is not in the archive.
    async fn instance_with_layout(
        &self,
        study_instance_uid: &StudyUid,
        series_instance_uid: &SeriesUid,
        sop_instance_uid: &SopInstanceUid,
    ) -> CatalogResult<Option<(InstanceLocation, String, Option<String>)>>;

    /// Returns the pixel data layout recorded for the instance (see
    /// [`InstanceRecord::pixel_data_layout`]); `None` when it has none or was stored before the
    /// layout was recorded.
    async fn instance_pixel_data_layout(
        &self,
        sop_instance_uid: &SopInstanceUid,
    ) -> CatalogResult<Option<String>>;

    /// Records the pixel data layout of an already stored instance (filled in on first use for
    /// instances stored before layouts were recorded).
    async fn set_instance_pixel_data_layout(
        &self,
        sop_instance_uid: &SopInstanceUid,
        layout: &str,
    ) -> CatalogResult<()>;

    /// Returns the sequence of the latest event of a study, or of one series of it; `None` when
    /// no event names it. Every store and delete appends an event, so this changes whenever
    /// the selection's content does (metadata cache validation and ETags).
    async fn change_sequence(
        &self,
        study_instance_uid: &StudyUid,
        series_instance_uid: Option<&SeriesUid>,
    ) -> CatalogResult<Option<i64>>;

    /// Returns the precomputed metadata document of a series, whatever its age; callers compare
    /// its `change_sequence` with [`Catalog::change_sequence`].
    async fn cached_series_metadata(
        &self,
        series_instance_uid: &SeriesUid,
    ) -> CatalogResult<Option<CachedSeriesMetadata>>;

    /// Stores a precomputed series metadata document, unless a newer one is already stored.
    async fn put_series_metadata(&self, cached: &CachedSeriesMetadata) -> CatalogResult<()>;
}
