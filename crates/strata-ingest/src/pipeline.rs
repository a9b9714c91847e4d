//! The pipeline itself.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};
use strata_catalog::{
    Catalog, IngestSource, InstanceAttributes, InstanceRecord, ObjectPurgeState, PatientAttributes,
    RequestAttributes, SeriesAttributes, StoreOutcome, StoredObject, StudyAttributes,
};
use strata_dicom::{InspectLimits, InspectedInstance, inspect_file, write_part10_header};
use strata_storage::BlobStore;
use strata_telemetry::metrics::IngestOutcomeLabel;
use strata_types::blocking::run_blocking;
use strata_types::{ObjectKey, StudyUid};
use tracing::{info, warn};

use crate::outcome::refusal_for;
use crate::purge::purge_object;
use crate::spool::new_spool_path;
use crate::{
    FailureReason, IngestError, IngestOutcome, SpooledObject, StoredInstance, WarningReason,
};

/// How many times one object is written and stored when concurrent deletions keep purging it.
const MAX_STORE_ATTEMPTS: u32 = 4;

/// How long an ingest waits for a purge of its object's key to end before refusing.
const MAX_PURGE_WAIT: Duration = Duration::from_secs(5);

/// The oldest purge state a store relies on (read before the object write); an older one is
/// read again. Far below how long the catalog remembers finished purges (a day).
const MAX_STATE_AGE: Duration = Duration::from_secs(3600);

/// Settings of the pipeline.
#[derive(Debug, Clone)]
pub struct IngestSettings {
    /// Where received objects are spooled.
    pub spool_dir: PathBuf,
    /// The largest single object accepted, in bytes.
    pub max_object_bytes: u64,
}

/// Validates, stores and catalogs received objects. Cheap to clone; holds no state of its own.
#[derive(Clone)]
pub struct IngestPipeline {
    catalog: Arc<dyn Catalog>,
    store: Arc<dyn BlobStore>,
    settings: Arc<IngestSettings>,
}

impl IngestPipeline {
    /// Creates a pipeline writing to `store` and `catalog`.
    pub fn new(
        catalog: Arc<dyn Catalog>,
        store: Arc<dyn BlobStore>,
        settings: IngestSettings,
    ) -> Self {
        Self {
            catalog,
            store,
            settings: Arc::new(settings),
        }
    }

    /// Returns the settings.
    pub fn settings(&self) -> &IngestSettings {
        &self.settings
    }

    /// Spools a body stream (see [`SpooledObject::from_stream`]) with this pipeline's limits.
    pub async fn spool<S, E>(&self, body: S) -> Result<SpooledObject, IngestError>
    where
        S: futures::Stream<Item = Result<bytes::Bytes, E>>,
        E: std::fmt::Display,
    {
        SpooledObject::from_stream(
            &self.settings.spool_dir,
            body,
            self.settings.max_object_bytes,
        )
        .await
    }

    /// Ingests one spooled object and reports what happened. Never panics on bad data; an
    /// archive failure (store or catalog down) is reported as a refusal with a Processing
    /// failure or Out of Resources reason. With `expected_study`, an object of another study
    /// is refused before anything is written (STOW-RS to `/studies/{study}`).
    #[tracing::instrument(name = "ingest", skip_all, fields(protocol = %source.protocol))]
    pub async fn ingest(
        &self,
        spooled: SpooledObject,
        source: &IngestSource,
        expected_study: Option<&StudyUid>,
    ) -> IngestOutcome {
        let num_bytes = spooled.size_bytes;
        let outcome = self.ingest_unmetered(spooled, source, expected_study).await;
        let outcome_label = match &outcome {
            IngestOutcome::Stored(stored) if stored.newly_stored => IngestOutcomeLabel::Stored,
            IngestOutcome::Stored(_) => IngestOutcomeLabel::Duplicate,
            IngestOutcome::Refused { .. } => IngestOutcomeLabel::Refused,
        };
        strata_telemetry::metrics::record_ingest(&source.protocol, outcome_label, num_bytes);
        outcome
    }

    async fn ingest_unmetered(
        &self,
        spooled: SpooledObject,
        source: &IngestSource,
        expected_study: Option<&StudyUid>,
    ) -> IngestOutcome {
        let limits = InspectLimits {
            max_object_bytes: self.settings.max_object_bytes,
            ..InspectLimits::default()
        };
        let path = spooled.path().to_owned();
        let parse_span = tracing::info_span!("dicom.parse", num_bytes = spooled.size_bytes);
        let inspected =
            match run_blocking(move || parse_span.in_scope(|| inspect_file(&path, limits))).await {
                Ok(Ok(inspected)) => inspected,
                Ok(Err(error)) => {
                    info!(protocol = %source.protocol, reason = %error.reason, "object refused");
                    return IngestOutcome::Refused {
                        sop_class_uid: None,
                        sop_instance_uid: None,
                        reason: refusal_for(&error),
                        message: error.reason,
                    };
                }
                Err(task_failed) => {
                    warn!(error = %task_failed, "inspection task failed");
                    return processing_failure(None, "internal error while parsing the object");
                }
            };
        let attributes = &inspected.attributes;
        let sop_class_uid = attributes.sop_class_uid.to_string();
        let sop_instance_uid = attributes.sop_instance_uid.to_string();
        let refused = |reason: FailureReason, message: String| IngestOutcome::Refused {
            sop_class_uid: Some(sop_class_uid.clone()),
            sop_instance_uid: Some(sop_instance_uid.clone()),
            reason,
            message,
        };

        if let Some(expected_study) = expected_study
            && expected_study != &attributes.study_instance_uid
        {
            return refused(
                FailureReason::DataSetDoesNotMatchSopClass,
                format!(
                    "Study Instance UID {} differs from the study {expected_study} of the request",
                    attributes.study_instance_uid
                ),
            );
        }

        let spooled = if inspected.has_file_meta {
            spooled
        } else {
            match self.add_part10_header(&spooled, &inspected).await {
                Ok(with_header) => with_header,
                Err(error) => {
                    warn!(%error, "failed to add a file meta header");
                    return refused(
                        FailureReason::ProcessingFailure,
                        "internal error".to_owned(),
                    );
                }
            }
        };

        let key = ObjectKey::for_content(&spooled.sha256);
        let mut record = instance_record(&inspected, &spooled, key.clone(), source);
        for attempt in 1..=MAX_STORE_ATTEMPTS {
            // Read before the object is written: the store transaction checks that no purge of
            // the key began since (`crate::purge`), so an object a concurrent deletion removes
            // is written again instead of being lost under a new row.
            let purge_state = match self.purge_state_when_idle(&key).await {
                Ok(state) => state,
                Err(refusal) => return refused(FailureReason::ProcessingFailure, refusal),
            };
            let state_read_at = Instant::now();
            // The duplicate check and the object write run side by side: the write is wasted
            // only for a duplicate, and is harmless then (keys are content-addressed: the same
            // bytes land on the same key, different bytes on another key that nothing
            // references).
            let (existing, written) = tokio::join!(
                self.catalog.instance_sha256(&attributes.sop_instance_uid),
                self.store
                    .put_spooled(&key, spooled.path(), &spooled.sha256)
            );
            match existing {
                Ok(Some(existing)) if existing == spooled.sha256 => {
                    return IngestOutcome::Stored(self.stored(&inspected, false));
                }
                Ok(Some(_)) => {
                    if written.is_ok() {
                        self.remove_unreferenced(&key).await;
                    }
                    return refused(
                        FailureReason::DuplicateSopInstance,
                        format!(
                            "SOP Instance UID {sop_instance_uid} is already stored with different content"
                        ),
                    );
                }
                Ok(None) => {}
                Err(error) => {
                    warn!(%error, "catalog lookup failed");
                    return refused(
                        FailureReason::ProcessingFailure,
                        "the catalog is unavailable".to_owned(),
                    );
                }
            }
            if let Err(error) = written {
                warn!(%error, object_key = %key, "object store write failed");
                return refused(
                    FailureReason::OutOfResources,
                    "the object store refused the write".to_owned(),
                );
            }
            if state_read_at.elapsed() > MAX_STATE_AGE {
                // The catalog forgets finished purges after a day; never rely on a state
                // anywhere near that old.
                continue;
            }
            record.purge_generation = purge_state.generation;
            match self.catalog.store_instance(&record).await {
                Ok(StoreOutcome::Created) => {
                    info!(
                        sop_instance_uid = %sop_instance_uid,
                        num_bytes = spooled.size_bytes,
                        protocol = %source.protocol,
                        "instance stored"
                    );
                    return IngestOutcome::Stored(self.stored(&inspected, true));
                }
                Ok(StoreOutcome::AlreadyStored) => {
                    return IngestOutcome::Stored(self.stored(&inspected, false));
                }
                Ok(StoreOutcome::Conflict { .. }) => {
                    // Lost a race against a different object with the same UID: ours is
                    // unreferenced, remove it (keys are content-addressed, so it is not the
                    // winner's).
                    self.remove_unreferenced(&key).await;
                    return refused(
                        FailureReason::DuplicateSopInstance,
                        format!(
                            "SOP Instance UID {sop_instance_uid} is already stored with different content"
                        ),
                    );
                }
                Ok(StoreOutcome::ObjectPurged) => {
                    info!(
                        sop_instance_uid = %sop_instance_uid,
                        object_key = %key,
                        attempt,
                        "a concurrent deletion purged the object being stored; writing it again"
                    );
                }
                Err(error) => {
                    warn!(%error, "catalog commit failed");
                    // The object stays unreferenced: nothing refers to it, and a retry
                    // rewrites the same key. Removing it here could race an identical
                    // concurrent request.
                    return refused(
                        FailureReason::ProcessingFailure,
                        "the catalog is unavailable".to_owned(),
                    );
                }
            }
        }
        refused(
            FailureReason::ProcessingFailure,
            "concurrent deletions of this instance kept removing its object; send it again"
                .to_owned(),
        )
    }

    /// Reads the purge state of `key`, waiting (briefly) while a purge of it is in progress:
    /// an object written now could be deleted by it. `Err` carries the refusal message when
    /// the purge does not end in time, or the catalog cannot be read.
    async fn purge_state_when_idle(&self, key: &ObjectKey) -> Result<ObjectPurgeState, String> {
        let mut pause = Duration::from_millis(20);
        let waited_since = Instant::now();
        loop {
            let state = self
                .catalog
                .object_purge_state(key)
                .await
                .map_err(|error| {
                    warn!(%error, "catalog lookup failed");
                    "the catalog is unavailable".to_owned()
                })?;
            if !state.in_progress(unix_time_ms()) {
                return Ok(state);
            }
            if waited_since.elapsed() >= MAX_PURGE_WAIT {
                return Err(
                    "a deletion of this instance is removing its object; send it again".to_owned(),
                );
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(500));
        }
    }

    /// Removes an object this ingest wrote for an instance the catalog refused (another
    /// object holds its SOP Instance UID), through the purge protocol: an identical request
    /// racing this one may yet store a row that refers to it.
    async fn remove_unreferenced(&self, key: &ObjectKey) {
        if let Err(error) = purge_object(self.catalog.as_ref(), self.store.as_ref(), key).await {
            warn!(%error, object_key = %key, "failed to remove an unreferenced object");
        }
    }

    fn stored(&self, inspected: &InspectedInstance, newly_stored: bool) -> StoredInstance {
        let attributes = &inspected.attributes;
        let warning = inspected.warnings.first().map(|message| {
            let reason = if message.contains("derived") {
                WarningReason::CoercionOfDataElements
            } else {
                WarningReason::DataSetDoesNotMatchSopClass
            };
            (reason, inspected.warnings.join("; "))
        });
        StoredInstance {
            sop_class_uid: attributes.sop_class_uid.to_string(),
            sop_instance_uid: attributes.sop_instance_uid.to_string(),
            study_instance_uid: attributes.study_instance_uid.to_string(),
            series_instance_uid: attributes.series_instance_uid.to_string(),
            newly_stored,
            warning,
        }
    }

    /// Writes a Part 10 file (generated header + the received data set bytes unchanged) for
    /// an object received without a File Meta header, so that every stored object is a
    /// complete DICOM file.
    async fn add_part10_header(
        &self,
        spooled: &SpooledObject,
        inspected: &InspectedInstance,
    ) -> Result<SpooledObject, IngestError> {
        let target = new_spool_path(&self.settings.spool_dir).await?;
        let source_path = spooled.path().to_owned();
        let target_path = target.to_path_buf();
        let sop_class_uid = inspected.attributes.sop_class_uid.to_string();
        let sop_instance_uid = inspected.attributes.sop_instance_uid.to_string();
        let transfer_syntax_uid = inspected.transfer_syntax_uid.clone();
        let (size_bytes, sha256) =
            tokio::task::spawn_blocking(move || -> std::io::Result<(u64, String)> {
                use std::io::{Read, Write};
                let mut hasher = HashingWriter {
                    inner: std::io::BufWriter::new(std::fs::File::create(&target_path)?),
                    hasher: Sha256::new(),
                    written: 0,
                };
                write_part10_header(
                    &mut hasher,
                    &sop_class_uid,
                    &sop_instance_uid,
                    &transfer_syntax_uid,
                )
                .map_err(|error| std::io::Error::other(error.reason))?;
                let mut source = std::fs::File::open(&source_path)?;
                let mut buffer = vec![0u8; 256 * 1024];
                loop {
                    let read = source.read(&mut buffer)?;
                    if read == 0 {
                        break;
                    }
                    hasher.write_all(&buffer[..read])?;
                }
                // Not fsynced: the spool is scratch space; the object store makes the
                // object durable.
                hasher.inner.flush()?;
                Ok((hasher.written, hex::encode(hasher.hasher.finalize())))
            })
            .await
            .map_err(|error| IngestError::Spool(std::io::Error::other(error)))?
            .map_err(IngestError::Spool)?;
        Ok(SpooledObject::from_parts(target, size_bytes, sha256))
    }
}

struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    written: u64,
}

impl<W: std::io::Write> std::io::Write for HashingWriter<W> {
    fn write(&mut self, buffer: &[u8]) -> std::io::Result<usize> {
        let written = self.inner.write(buffer)?;
        self.hasher.update(&buffer[..written]);
        self.written += written as u64;
        Ok(written)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

fn processing_failure(sop_instance_uid: Option<String>, message: &str) -> IngestOutcome {
    IngestOutcome::Refused {
        sop_class_uid: None,
        sop_instance_uid,
        reason: FailureReason::ProcessingFailure,
        message: message.to_owned(),
    }
}

fn instance_record(
    inspected: &InspectedInstance,
    spooled: &SpooledObject,
    key: ObjectKey,
    source: &IngestSource,
) -> InstanceRecord {
    let attributes = &inspected.attributes;
    InstanceRecord {
        patient: PatientAttributes {
            patient_id: attributes.patient_id.clone(),
            issuer_of_patient_id: attributes.issuer_of_patient_id.clone(),
            patient_name: attributes.patient_name.clone(),
            patient_birth_date: attributes.patient_birth_date.clone(),
            patient_sex: attributes.patient_sex.clone(),
        },
        study: StudyAttributes {
            study_instance_uid: attributes.study_instance_uid.clone(),
            study_date: attributes.study_date.clone(),
            study_time: attributes.study_time.clone(),
            accession_number: attributes.accession_number.clone(),
            referring_physician_name: attributes.referring_physician_name.clone(),
            study_id: attributes.study_id.clone(),
            study_description: attributes.study_description.clone(),
            timezone_offset_from_utc: attributes.timezone_offset_from_utc.clone(),
        },
        series: SeriesAttributes {
            series_instance_uid: attributes.series_instance_uid.clone(),
            modality: attributes.modality.clone(),
            series_number: attributes.series_number,
            series_description: attributes.series_description.clone(),
            body_part_examined: attributes.body_part_examined.clone(),
            performed_procedure_step_start_date: attributes
                .performed_procedure_step_start_date
                .clone(),
            performed_procedure_step_start_time: attributes
                .performed_procedure_step_start_time
                .clone(),
            request_attributes: attributes
                .request_attributes
                .iter()
                .map(|item| RequestAttributes {
                    scheduled_procedure_step_id: item.scheduled_procedure_step_id.clone(),
                    requested_procedure_id: item.requested_procedure_id.clone(),
                })
                .collect(),
        },
        instance: InstanceAttributes {
            sop_instance_uid: attributes.sop_instance_uid.clone(),
            sop_class_uid: attributes.sop_class_uid.to_string(),
            instance_number: attributes.instance_number,
            rows: attributes.rows,
            columns: attributes.columns,
            bits_allocated: attributes.bits_allocated,
            number_of_frames: attributes.number_of_frames,
            title: attributes.title.clone(),
            transfer_syntax_uid: attributes.transfer_syntax_uid.clone(),
            specific_character_set: attributes.specific_character_set.clone(),
        },
        object: StoredObject {
            key,
            size_bytes: spooled.size_bytes,
            sha256: spooled.sha256.clone(),
        },
        source: source.clone(),
        metadata_json: inspected.metadata.to_string(),
        // A Part 10 header written in front of a received bare data set moves every offset.
        pixel_data_layout: inspected.pixel_data.as_ref().map(|layout| {
            layout.to_catalog_json(spooled.size_bytes.saturating_sub(inspected.file_len))
        }),
        // Set from the purge state read before each object write.
        purge_generation: 0,
    }
}

fn unix_time_ms() -> i64 {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(since_epoch.as_millis()).unwrap_or(i64::MAX)
}
