//! Records the catalog stores and returns.
//!
//! Text attributes are kept as the DICOM string value with padding trimmed; an absent attribute
//! is an empty string (DICOM makes no difference between absent and empty for matching).
//! Dates are `YYYYMMDD`, times `HHMMSS.FFFFFF` as sent, so ranges compare as text.

use strata_types::{ObjectKey, SeriesUid, SopInstanceUid, StudyUid};

/// Patient-level attributes. A patient is identified by Patient ID **and** Issuer of Patient ID,
/// so two sources using the same Patient ID never merge silently.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PatientAttributes {
    pub patient_id: String,
    pub issuer_of_patient_id: String,
    /// PatientName (PN) as decoded to UTF-8, components separated by `^`, groups by `=`.
    pub patient_name: String,
    pub patient_birth_date: String,
    pub patient_sex: String,
}

/// Study-level attributes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StudyAttributes {
    pub study_instance_uid: StudyUid,
    pub study_date: String,
    pub study_time: String,
    pub accession_number: String,
    pub referring_physician_name: String,
    pub study_id: String,
    pub study_description: String,
    pub timezone_offset_from_utc: String,
}

/// One item of the Request Attributes Sequence (0040,0275), matched at series level.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestAttributes {
    pub scheduled_procedure_step_id: String,
    pub requested_procedure_id: String,
}

/// Series-level attributes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeriesAttributes {
    pub series_instance_uid: SeriesUid,
    pub modality: String,
    pub series_number: Option<i64>,
    pub series_description: String,
    pub body_part_examined: String,
    pub performed_procedure_step_start_date: String,
    pub performed_procedure_step_start_time: String,
    pub request_attributes: Vec<RequestAttributes>,
}

/// Instance-level attributes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceAttributes {
    pub sop_instance_uid: SopInstanceUid,
    pub sop_class_uid: String,
    pub instance_number: Option<i64>,
    pub rows: Option<i64>,
    pub columns: Option<i64>,
    pub bits_allocated: Option<i64>,
    pub number_of_frames: Option<i64>,
    /// A human-readable title (FHIR `ImagingStudy.series.instance.title`): Content Label,
    /// Concept Name meaning, Document Title or Image Type, whichever comes first; may be empty.
    pub title: String,
    /// The transfer syntax the object is stored in.
    pub transfer_syntax_uid: String,
    pub specific_character_set: String,
}

/// Where and how the object of an instance is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredObject {
    pub key: ObjectKey,
    pub size_bytes: u64,
    /// Lowercase hex SHA-256 of the stored object bytes.
    pub sha256: String,
}

/// Where an instance came from. Recorded with the instance; never contains patient data.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IngestSource {
    /// `stow-rs`, `c-store`, `import`.
    pub protocol: String,
    pub calling_ae_title: Option<String>,
    pub remote_addr: Option<String>,
}

/// Everything the catalog records for one received instance, committed in one transaction
/// together with an `InstanceStored` event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceRecord {
    pub patient: PatientAttributes,
    pub study: StudyAttributes,
    pub series: SeriesAttributes,
    pub instance: InstanceAttributes,
    pub object: StoredObject,
    pub source: IngestSource,
    /// The instance's metadata as a DICOM JSON object (PS3.18 Annex F), with bulk data
    /// replaced by `BulkDataURI` placeholders. Returned verbatim by WADO-RS metadata and used
    /// for `includefield`.
    pub metadata_json: String,
    /// Where the top-level Pixel Data lies in the stored object (JSON written by the ingest
    /// pipeline, read by WADO-RS frames); `None` without pixel data.
    pub pixel_data_layout: Option<String>,
    /// The [`ObjectPurgeState::generation`] of the object's key that the writer read before
    /// it wrote the object, with no purge in progress (0: never purged). The store refuses
    /// with [`StoreOutcome::ObjectPurged`] when the key's purges moved on since.
    pub purge_generation: i64,
}

/// What `store_instance` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreOutcome {
    /// A new instance was recorded (and an event appended).
    Created,
    /// The same SOP Instance UID is already stored with the same SHA-256: nothing changed,
    /// no event is appended.
    AlreadyStored,
    /// The SOP Instance UID is already stored with different content: nothing changed.
    Conflict { existing_sha256: String },
    /// A purge of the object's key began (or is still running) since the writer read
    /// [`InstanceRecord::purge_generation`], so the object it wrote may have been deleted:
    /// nothing changed. The writer reads the purge state again, rewrites the object and
    /// stores again.
    ObjectPurged,
}

/// How long a purge may take before its `purging` mark is considered abandoned (the purger
/// crashed between beginning the purge and finishing it). Purgers give up on an object
/// deletion well before this (see `strata_ingest::purge`).
pub const PURGE_LEASE_MS: i64 = 10 * 60 * 1000;

/// What the catalog records of the purges of one object key (see
/// [`crate::Catalog::begin_object_purge`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ObjectPurgeState {
    /// How many purges of the key have begun; 0 when none did (or their record expired).
    pub generation: i64,
    /// When the running purge began (Unix ms); `None` when none is running.
    pub purging_since_ms: Option<i64>,
}

impl ObjectPurgeState {
    /// Whether a purge may be deleting the object at `now_ms`: one began less than
    /// [`PURGE_LEASE_MS`] ago and has not finished.
    pub fn in_progress(&self, now_ms: i64) -> bool {
        self.purging_since_ms
            .is_some_and(|since| now_ms.saturating_sub(since) < PURGE_LEASE_MS)
    }

    /// Whether a store that read `purge_generation` (with no purge in progress) before writing
    /// its object may commit, seeing this state at `now_ms` in its transaction.
    pub fn admits(&self, purge_generation: i64, now_ms: i64) -> bool {
        self.generation == purge_generation && !self.in_progress(now_ms)
    }
}

/// The stored location of one instance, as WADO-RS needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceLocation {
    pub study_instance_uid: StudyUid,
    pub series_instance_uid: SeriesUid,
    pub sop_instance_uid: SopInstanceUid,
    pub sop_class_uid: String,
    pub transfer_syntax_uid: String,
    pub object: StoredObject,
}

/// One entry of the append-only event log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogEvent {
    /// Strictly increasing position in the log; consumers persist the last one they applied.
    pub sequence: i64,
    pub kind: EventKind,
    pub study_instance_uid: StudyUid,
    pub series_instance_uid: SeriesUid,
    pub sop_instance_uid: SopInstanceUid,
    pub object_key: ObjectKey,
    /// Unix time in milliseconds.
    pub created_at_ms: i64,
}

/// The kinds of events in the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    InstanceStored,
    InstanceDeleted,
}

impl EventKind {
    /// Returns the stable name stored in the log.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::InstanceStored => "instance_stored",
            EventKind::InstanceDeleted => "instance_deleted",
        }
    }
}

/// What [`crate::Catalog::delete`] removes: a whole study, one series of it, or one instance.
/// Lower levels name their parents, and a UID under the wrong parent is not found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeleteScope {
    Study {
        study_instance_uid: StudyUid,
    },
    Series {
        study_instance_uid: StudyUid,
        series_instance_uid: SeriesUid,
    },
    Instance {
        study_instance_uid: StudyUid,
        series_instance_uid: SeriesUid,
        sop_instance_uid: SopInstanceUid,
    },
}

impl DeleteScope {
    /// The study the scope lies in.
    pub fn study_instance_uid(&self) -> &StudyUid {
        match self {
            DeleteScope::Study { study_instance_uid }
            | DeleteScope::Series {
                study_instance_uid, ..
            }
            | DeleteScope::Instance {
                study_instance_uid, ..
            } => study_instance_uid,
        }
    }

    /// The series of a series or instance scope.
    pub fn series_instance_uid(&self) -> Option<&SeriesUid> {
        match self {
            DeleteScope::Study { .. } => None,
            DeleteScope::Series {
                series_instance_uid,
                ..
            }
            | DeleteScope::Instance {
                series_instance_uid,
                ..
            } => Some(series_instance_uid),
        }
    }

    /// The instance of an instance scope.
    pub fn sop_instance_uid(&self) -> Option<&SopInstanceUid> {
        match self {
            DeleteScope::Instance {
                sop_instance_uid, ..
            } => Some(sop_instance_uid),
            _ => None,
        }
    }
}

/// What [`crate::Catalog::delete`] removed, committed in one transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeleteOutcome {
    /// The removed instances with their objects, in WADO-RS order. Their objects are still in
    /// the object store: the caller deletes them after the commit (see
    /// [`crate::Catalog::delete`]).
    pub instances: Vec<InstanceLocation>,
    /// Series left without instances and removed with them.
    pub removed_series: Vec<SeriesUid>,
    /// Whether the study was left empty and removed.
    pub study_removed: bool,
    /// Whether the study's patient was left without studies and removed.
    pub patient_removed: bool,
}

/// A precomputed WADO-RS series metadata document (see [`crate::Catalog::cached_series_metadata`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedSeriesMetadata {
    pub series_instance_uid: SeriesUid,
    pub study_instance_uid: StudyUid,
    /// The sequence of the series' latest event when the document was built.
    pub change_sequence: i64,
    pub num_instances: u64,
    /// A DICOM JSON array of the series' instances in retrieval order. Each instance's bulk
    /// data URIs start with the placeholder followed by `studies/{study}/series/{series}/instances/{sop}/`,
    /// so only the service's base URL is left to substitute.
    pub document: String,
}
