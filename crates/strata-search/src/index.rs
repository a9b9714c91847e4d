//! The study index on tantivy: one document per study, replaced whole on every change, and the
//! event-log cursor committed atomically with the documents (in tantivy's commit payload).

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use tantivy::directory::MmapDirectory;
use tantivy::schema::Facet;
use tantivy::{Index, IndexReader, IndexWriter, ReloadPolicy, TantivyDocument, Term};

use crate::document::{DocumentSettings, StudyDocument, build_study_document};
use crate::error::{SearchError, SearchErrorKind, SearchResult};
use crate::schema::{Fields, SCHEMA_VERSION, build_schema, register_tokenizers};

/// Memory the writer may buffer before it flushes a segment. One indexing thread: the search
/// role shares its machine with ingest.
const WRITER_MEMORY_BYTES: usize = 64 << 20;

/// What a commit records beside the documents: the last catalog event applied.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct CommitPayload {
    schema_version: u32,
    sequence: i64,
}

/// The study index of one search replica.
pub struct SearchIndex {
    pub(crate) index: Index,
    pub(crate) reader: IndexReader,
    /// `None` when opened read-only (`strata search` beside a running node).
    writer: Option<Mutex<IndexWriter>>,
    pub(crate) fields: Fields,
    settings: DocumentSettings,
    directory: Option<PathBuf>,
}

impl std::fmt::Debug for SearchIndex {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("SearchIndex")
            .field("directory", &self.directory)
            .finish_non_exhaustive()
    }
}

impl SearchIndex {
    /// Opens the index in `directory`, creating it (and the directory) when absent. Fails with
    /// [`SearchErrorKind::SchemaMismatch`] when the index was built by another schema version,
    /// and with an index error when another process holds the writer lock.
    pub fn open(directory: &Path, settings: DocumentSettings) -> SearchResult<Self> {
        std::fs::create_dir_all(directory).map_err(|error| {
            SearchError::new(
                SearchErrorKind::Index,
                format!(
                    "failed to create the index directory `{}`",
                    directory.display()
                ),
                error,
            )
        })?;
        let mmap_directory = MmapDirectory::open(directory).map_err(|error| {
            SearchError::new(
                SearchErrorKind::Index,
                format!(
                    "failed to open the index directory `{}`",
                    directory.display()
                ),
                error,
            )
        })?;
        let (schema, _) = build_schema();
        let index = Index::open_or_create(mmap_directory, schema.clone()).map_err(|error| {
            SearchError::new(
                SearchErrorKind::SchemaMismatch,
                format!(
                    "the index in `{}` cannot be opened with this version's schema; run `strata search rebuild`",
                    directory.display()
                ),
                error,
            )
        })?;
        let search_index = Self::from_index(index, settings, Some(directory.to_owned()), true)?;
        if let Some(payload) = search_index.payload()?
            && payload.schema_version != SCHEMA_VERSION
        {
            return Err(schema_mismatch(directory, payload.schema_version));
        }
        Ok(search_index)
    }

    /// Deletes the index in `directory` and creates an empty one (cursor 0). Fails if a running
    /// node holds the index (its writer lock), before anything is deleted.
    pub fn recreate(directory: &Path, settings: DocumentSettings) -> SearchResult<Self> {
        match Self::open(directory, settings) {
            // Opening takes the writer lock: nobody else is writing; drop it and delete.
            Ok(existing) => drop(existing),
            Err(error) if error.kind == SearchErrorKind::SchemaMismatch => {}
            Err(error) => return Err(error),
        }
        std::fs::remove_dir_all(directory).map_err(|error| {
            SearchError::new(
                SearchErrorKind::Index,
                format!(
                    "failed to delete the index directory `{}`",
                    directory.display()
                ),
                error,
            )
        })?;
        Self::open(directory, settings)
    }

    /// Creates an empty index in memory (tests and benchmarks).
    pub fn in_memory(settings: DocumentSettings) -> SearchResult<Self> {
        let (schema, _) = build_schema();
        Self::from_index(Index::create_in_ram(schema), settings, None, true)
    }

    fn from_index(
        index: Index,
        settings: DocumentSettings,
        directory: Option<PathBuf>,
        writable: bool,
    ) -> SearchResult<Self> {
        register_tokenizers(&index);
        let (_, fields) = build_schema();
        let writer = if writable {
            let writer = index
                .writer_with_num_threads(1, WRITER_MEMORY_BYTES)
                .map_err(|error| SearchError::index("failed to open the index writer", error))?;
            Some(Mutex::new(writer))
        } else {
            None
        };
        // Manual reloads: this process reloads right after its own commits, so a result is
        // visible as soon as its commit returns.
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()
            .map_err(|error| SearchError::index("failed to open the index reader", error))?;
        Ok(Self {
            index,
            reader,
            writer,
            fields,
            settings,
            directory,
        })
    }

    /// Opens an existing index for searching only, without the writer lock: works beside the
    /// node that writes it (the files of a commit never change). Sees the commits made before
    /// it opened.
    pub fn open_read_only(directory: &Path) -> SearchResult<Self> {
        let index = Index::open_in_dir(directory).map_err(|error| {
            SearchError::index(
                format!(
                    "failed to open the search index in `{}`",
                    directory.display()
                ),
                error,
            )
        })?;
        let (schema, _) = build_schema();
        if index.schema() != schema {
            return Err(schema_mismatch(directory, 0));
        }
        Self::from_index(
            index,
            DocumentSettings::default(),
            Some(directory.to_owned()),
            false,
        )
    }

    fn writer(&self) -> SearchResult<std::sync::MutexGuard<'_, IndexWriter>> {
        let writer = self.writer.as_ref().ok_or_else(|| {
            SearchError::new(
                SearchErrorKind::Index,
                "the index is open read-only",
                std::io::Error::other("read-only"),
            )
        })?;
        Ok(writer
            .lock()
            .expect("the index writer lock is never poisoned"))
    }

    /// Returns the directory of the index (`None` in memory).
    pub fn directory(&self) -> Option<&Path> {
        self.directory.as_deref()
    }

    fn payload(&self) -> SearchResult<Option<CommitPayload>> {
        let metas = self
            .index
            .load_metas()
            .map_err(|error| SearchError::index("failed to read the index metadata", error))?;
        Ok(metas
            .payload
            .as_deref()
            .and_then(|payload| serde_json::from_str(payload).ok()))
    }

    /// Returns the sequence of the last catalog event whose effect is committed in the index
    /// (0 for a new index). Documents and this cursor are committed together.
    pub fn committed_sequence(&self) -> SearchResult<i64> {
        Ok(self.payload()?.map_or(0, |payload| payload.sequence))
    }

    /// What the documents of this index are built from.
    pub fn document_settings(&self) -> DocumentSettings {
        self.settings
    }

    /// Replaces the document of a study with one built from `instances_json` (the DICOM JSON
    /// of all its instances), or removes it when the list is empty. Not visible until
    /// [`SearchIndex::commit`].
    pub fn stage_study(
        &self,
        study_instance_uid: &str,
        instances_json: &[String],
    ) -> SearchResult<()> {
        let document = build_study_document(study_instance_uid, instances_json, self.settings);
        self.stage_document(study_instance_uid, document.as_ref())
    }

    /// Replaces (or with `None` removes) the document of a study. Not visible until commit.
    pub fn stage_document(
        &self,
        study_instance_uid: &str,
        document: Option<&StudyDocument>,
    ) -> SearchResult<()> {
        let writer = self.writer()?;
        writer.delete_term(Term::from_field_text(
            self.fields.study_uid,
            study_instance_uid,
        ));
        if let Some(document) = document {
            writer
                .add_document(self.to_tantivy_document(document))
                .map_err(|error| SearchError::index("failed to add a study document", error))?;
        }
        Ok(())
    }

    /// Removes every document (not visible until commit): the first step of a rebuild.
    pub fn stage_delete_all(&self) -> SearchResult<()> {
        let writer = self.writer()?;
        writer
            .delete_all_documents()
            .map_err(|error| SearchError::index("failed to delete all documents", error))?;
        Ok(())
    }

    /// Commits the staged changes together with the cursor `sequence`, then makes them
    /// visible to this process's searches. Blocking: call it from `spawn_blocking`.
    pub fn commit(&self, sequence: i64) -> SearchResult<()> {
        let payload = serde_json::to_string(&CommitPayload {
            schema_version: SCHEMA_VERSION,
            sequence,
        })
        .expect("the commit payload serializes");
        {
            let mut writer = self.writer()?;
            let mut prepared = writer
                .prepare_commit()
                .map_err(|error| SearchError::index("failed to prepare the index commit", error))?;
            prepared.set_payload(&payload);
            prepared
                .commit()
                .map_err(|error| SearchError::index("failed to commit the index", error))?;
        }
        self.reader
            .reload()
            .map_err(|error| SearchError::index("failed to reload the index reader", error))
    }

    /// Drops the staged, uncommitted changes (after a failed batch).
    pub fn rollback(&self) -> SearchResult<()> {
        let mut writer = self.writer()?;
        writer
            .rollback()
            .map_err(|error| SearchError::index("failed to roll back the index", error))?;
        Ok(())
    }

    /// Returns the number of studies visible to searches.
    pub fn num_studies(&self) -> u64 {
        self.reader.searcher().num_docs()
    }

    fn to_tantivy_document(&self, document: &StudyDocument) -> TantivyDocument {
        let fields = &self.fields;
        let mut tantivy_document = TantivyDocument::default();
        tantivy_document.add_text(fields.study_uid, &document.study_instance_uid);
        for text in &document.text_values {
            tantivy_document.add_text(fields.text, text);
        }
        for name in &document.person_names {
            tantivy_document.add_text(fields.names, name);
        }
        if let Some(study_date) = document.study_date {
            tantivy_document.add_u64(fields.study_date, study_date);
        }
        for (field, facet_root, values) in [
            (fields.modality, "modality", &document.modalities),
            (fields.source, "source", &document.sources),
            (fields.institution, "institution", &document.institutions),
        ] {
            for value in values {
                tantivy_document.add_text(field, value);
                tantivy_document.add_facet(fields.facets, Facet::from_path([facet_root, value]));
            }
        }
        let summary = serde_json::to_string(&document.summary).expect("a summary serializes");
        tantivy_document.add_text(fields.summary, summary);
        tantivy_document
    }
}

fn schema_mismatch(directory: &Path, found: u32) -> SearchError {
    SearchError::schema_mismatch(format!(
        "the index in `{}` has schema version {found}, this version needs {SCHEMA_VERSION}; run `strata search rebuild`",
        directory.display()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instance(patient_name: &str, description: &str) -> String {
        serde_json::json!({
            "00081030": {"vr": "LO", "Value": [description]},
            "00100010": {"vr": "PN", "Value": [{"Alphabetic": patient_name}]},
        })
        .to_string()
    }

    #[test]
    fn test_commit_records_the_cursor_and_replaces_documents() {
        let directory = tempfile::tempdir().expect("temp dir");
        let index = SearchIndex::open(directory.path(), DocumentSettings::default()).expect("open");
        assert_eq!(index.committed_sequence().expect("cursor"), 0);
        index
            .stage_study("1.2.3", &[instance("Doe^Jane", "Head CT")])
            .expect("stage");
        index
            .stage_study("1.2.3", &[instance("Doe^Jane", "Head CT v2")])
            .expect("stage");
        index.commit(7).expect("commit");
        assert_eq!(index.num_studies(), 1);
        drop(index);
        let reopened =
            SearchIndex::open(directory.path(), DocumentSettings::default()).expect("reopen");
        assert_eq!(reopened.committed_sequence().expect("cursor"), 7);
        assert_eq!(reopened.num_studies(), 1);
        reopened.stage_study("1.2.3", &[]).expect("stage delete");
        reopened.commit(8).expect("commit");
        assert_eq!(reopened.num_studies(), 0);
    }

    #[test]
    fn test_uncommitted_changes_are_lost_with_their_cursor() {
        let directory = tempfile::tempdir().expect("temp dir");
        let index = SearchIndex::open(directory.path(), DocumentSettings::default()).expect("open");
        index
            .stage_study("1.2.3", &[instance("Doe^Jane", "Head CT")])
            .expect("stage");
        index.commit(1).expect("commit");
        index
            .stage_study("1.2.4", &[instance("Roe^Rick", "Knee MR")])
            .expect("stage");
        drop(index); // killed before the commit
        let reopened =
            SearchIndex::open(directory.path(), DocumentSettings::default()).expect("reopen");
        assert_eq!(reopened.committed_sequence().expect("cursor"), 1);
        assert_eq!(reopened.num_studies(), 1);
    }

    #[test]
    fn test_a_second_writer_on_the_same_directory_is_refused() {
        let directory = tempfile::tempdir().expect("temp dir");
        let _index =
            SearchIndex::open(directory.path(), DocumentSettings::default()).expect("open");
        let error = SearchIndex::recreate(directory.path(), DocumentSettings::default())
            .expect_err("locked");
        assert_eq!(error.kind, SearchErrorKind::Index);
    }
}
