//! The tiering side of the catalog (issue 4): where each object lives, the move journal,
//! per-study last access, retention and legal hold, fixity results and the service's cursor.
//!
//! An object without a `tier_object` row lives on the tier `hot` (the `[storage]` store), so
//! ingest never writes tiering rows. Every state change is one transaction.

use async_trait::async_trait;
use strata_types::{ObjectKey, StudyUid};

use crate::CatalogResult;

/// The name of the tier an object is on when the catalog records no other.
pub const DEFAULT_TIER: &str = "hot";

/// Where one object lives and what it must contain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectPlacement {
    pub object_key: ObjectKey,
    /// The tier holding the committed copy.
    pub tier: String,
    /// A study whose instances refer to the object.
    pub study_instance_uid: StudyUid,
    /// The SHA-256 recorded at ingest, lowercase hex.
    pub sha256: String,
    pub size_bytes: u64,
}

/// What the catalog says about one object key, whether or not an instance still refers to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectTier {
    /// The tier holding the committed copy (`hot` without a row).
    pub tier: String,
    /// A study whose instances refer to the object; `None` once none does.
    pub study_instance_uid: Option<StudyUid>,
    /// The move in progress, if any.
    pub move_opt: Option<TierMove>,
}

/// The state of a journaled move.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MoveState {
    /// The location is still `from_tier`; the destination may hold a partial or whole copy.
    Copying,
    /// The location is `to_tier`; the source copy may still exist.
    Committed,
}

impl MoveState {
    /// Returns the name stored in the journal.
    pub fn as_str(self) -> &'static str {
        match self {
            MoveState::Copying => "copying",
            MoveState::Committed => "committed",
        }
    }
}

/// One row of the move journal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TierMove {
    pub object_key: ObjectKey,
    pub from_tier: String,
    pub to_tier: String,
    pub state: MoveState,
    /// Unix time in milliseconds.
    pub created_at_ms: i64,
}

/// What placement rules look at, for one study.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StudyFacts {
    pub study_instance_uid: String,
    /// Study Date, `YYYYMMDD` or empty.
    pub study_date: String,
    /// Issuer of Patient ID of the study's patient (may be empty).
    pub issuer_of_patient_id: String,
    /// When the first instance of the study was stored, Unix ms.
    pub first_ingest_ms: i64,
    /// The latest recorded read, Unix ms.
    pub last_access_ms: Option<i64>,
    pub modalities: Vec<String>,
    pub calling_ae_titles: Vec<String>,
    pub sop_class_uids: Vec<String>,
    pub retention: StudyRetention,
}

/// Retention, legal hold and tier pin of one study.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StudyRetention {
    /// While set, the study cannot be deleted.
    pub legal_hold: bool,
    /// The study cannot be deleted before this time (Unix ms).
    pub retain_until_ms: Option<i64>,
    /// The study stays on this tier until `pinned_until_ms` whatever the rules say (a
    /// restored study promoted back to hot).
    pub pinned_tier: Option<String>,
    pub pinned_until_ms: Option<i64>,
}

/// The outcome of a fixity check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FixityStatus {
    /// The object matches its recorded checksum and size.
    Ok,
    /// The object differs from its recorded checksum or size.
    Mismatch,
    /// The object is missing from its tier.
    Missing,
    /// The object was wrong or missing and was rewritten from the replica.
    Repaired,
    /// The object could not be checked (store unavailable, archived and not restored).
    Unchecked,
}

impl FixityStatus {
    /// Returns the name stored in the catalog and shown by the API.
    pub fn as_str(self) -> &'static str {
        match self {
            FixityStatus::Ok => "ok",
            FixityStatus::Mismatch => "mismatch",
            FixityStatus::Missing => "missing",
            FixityStatus::Repaired => "repaired",
            FixityStatus::Unchecked => "unchecked",
        }
    }

    /// Parses a stored name.
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "ok" => FixityStatus::Ok,
            "mismatch" => FixityStatus::Mismatch,
            "missing" => FixityStatus::Missing,
            "repaired" => FixityStatus::Repaired,
            "unchecked" => FixityStatus::Unchecked,
            _ => return None,
        })
    }
}

/// The latest fixity check of one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FixityRecord {
    pub object_key: ObjectKey,
    pub tier: String,
    /// Unix ms.
    pub checked_at_ms: i64,
    /// Read and hashed (true) or size and checksum metadata only (false).
    pub deep: bool,
    pub status: FixityStatus,
    /// What was found, without patient data.
    pub detail: String,
}

/// Objects and bytes on one tier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TierUsage {
    pub tier: String,
    pub num_objects: u64,
    pub num_bytes: u64,
}

/// The tiering side of the catalog; see the module documentation.
#[async_trait]
pub trait TierCatalog: Send + Sync + 'static {
    /// Returns the tier of `object_key`, a study referring to it and the move in progress.
    async fn object_tier(&self, object_key: &ObjectKey) -> CatalogResult<ObjectTier>;

    /// Returns the placement of every object of a study (one per object key), by key.
    async fn study_placements(
        &self,
        study_instance_uid: &StudyUid,
    ) -> CatalogResult<Vec<ObjectPlacement>>;

    /// Returns the placements of those of `object_keys` that instances refer to, in one read
    /// per few hundred keys (a retrieval resolves all its objects up front).
    async fn placements_of(&self, object_keys: &[ObjectKey])
    -> CatalogResult<Vec<ObjectPlacement>>;

    /// Returns up to `limit` placements with an object key greater than `after`, by key.
    async fn placements_after(
        &self,
        after: Option<&ObjectKey>,
        limit: u32,
    ) -> CatalogResult<Vec<ObjectPlacement>>;

    /// Returns the facts of up to `limit` studies with a Study Instance UID greater than
    /// `after`, by UID.
    async fn study_facts_after(
        &self,
        after: Option<&str>,
        limit: u32,
    ) -> CatalogResult<Vec<StudyFacts>>;

    /// Returns the facts of one study, `None` when it does not exist.
    async fn study_facts(&self, study_instance_uid: &StudyUid)
    -> CatalogResult<Option<StudyFacts>>;

    /// Journals a move of `object_key` from `from_tier` to `to_tier` (state `copying`).
    /// Returns false, changing nothing, when the object is not on `from_tier` or already has
    /// a move in progress.
    async fn begin_move(
        &self,
        object_key: &ObjectKey,
        from_tier: &str,
        to_tier: &str,
    ) -> CatalogResult<bool>;

    /// Commits a `copying` move in one transaction: the object's location becomes the move's
    /// destination and the journal row becomes `committed`. Returns false, changing nothing,
    /// when there is no `copying` move of the object (it was cancelled by a delete).
    async fn commit_move(&self, object_key: &ObjectKey) -> CatalogResult<bool>;

    /// Removes the journal row of a move that is finished (committed and source deleted) or
    /// rolled back (destination deleted). A missing row is not an error.
    async fn end_move(&self, object_key: &ObjectKey) -> CatalogResult<()>;

    /// Returns every move in the journal, oldest first.
    async fn moves(&self) -> CatalogResult<Vec<TierMove>>;

    /// Forgets everything tiering knows of an object being deleted: its location, its move
    /// and its fixity result, in one transaction.
    async fn forget_object(&self, object_key: &ObjectKey) -> CatalogResult<()>;

    /// Records study reads: for each study, the later of the stored and the given time (Unix
    /// ms), in one transaction.
    async fn record_study_access(&self, accesses: &[(StudyUid, i64)]) -> CatalogResult<()>;

    /// Returns a study's retention settings (the defaults when none were set).
    async fn study_retention(&self, study_instance_uid: &StudyUid)
    -> CatalogResult<StudyRetention>;

    /// Replaces a study's retention settings.
    async fn set_study_retention(
        &self,
        study_instance_uid: &StudyUid,
        retention: &StudyRetention,
    ) -> CatalogResult<()>;

    /// Records the latest fixity check of an object.
    async fn record_fixity(&self, record: &FixityRecord) -> CatalogResult<()>;

    /// Returns up to `limit` latest fixity results that are not `ok` or `repaired`.
    async fn fixity_failures(&self, limit: u32) -> CatalogResult<Vec<FixityRecord>>;

    /// Returns the number of objects and bytes on each tier that holds any.
    async fn tier_usage(&self) -> CatalogResult<Vec<TierUsage>>;

    /// Returns the named cursor of the tiering service (0 when never set).
    async fn tiering_cursor(&self, name: &str) -> CatalogResult<i64>;

    /// Stores the named cursor.
    async fn set_tiering_cursor(&self, name: &str, position: i64) -> CatalogResult<()>;
}
