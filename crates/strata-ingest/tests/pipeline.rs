//! The pipeline on a SQLite catalog and an in-memory or local-disk store: uniqueness is the
//! catalog's job, also when two different objects with one SOP Instance UID race each other;
//! and an instance stored again while its deleted copy's object is purged keeps its object.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use strata_catalog::{Catalog, DeleteScope};
use strata_ingest::{
    FailureReason, IngestOutcome, IngestPipeline, IngestSettings, IngestSource, Purge,
    SpooledObject, purge_object,
};
use strata_storage::{BlobStore, ByteStream, ObjectMeta, ObjectStoreBlobStore, StorageResult};
use strata_types::ObjectKey;

fn corpus(path: &str) -> Option<PathBuf> {
    let file = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/corpus")
        .join(path);
    file.is_file().then_some(file)
}

/// A pipeline on a SQLite catalog in `dir` and `store`.
async fn pipeline_on(
    dir: &std::path::Path,
    store: Arc<dyn BlobStore>,
) -> (IngestPipeline, Arc<dyn Catalog>) {
    let catalog =
        strata_catalog::open_catalog(&format!("sqlite://{}", dir.join("catalog.db").display()), 4)
            .await
            .unwrap();
    let settings = IngestSettings {
        spool_dir: dir.join("spool"),
        max_object_bytes: 1 << 30,
    };
    (
        IngestPipeline::new(catalog.clone(), store, settings),
        catalog,
    )
}

async fn pipeline(dir: &std::path::Path) -> (IngestPipeline, Arc<dyn Catalog>, Arc<dyn BlobStore>) {
    let store: Arc<dyn BlobStore> = Arc::new(ObjectStoreBlobStore::ram());
    let (pipeline, catalog) = pipeline_on(dir, store.clone()).await;
    (pipeline, catalog, store)
}

fn test_source() -> IngestSource {
    IngestSource {
        protocol: "test".into(),
        ..IngestSource::default()
    }
}

async fn spool(pipeline: &IngestPipeline, file: &std::path::Path) -> SpooledObject {
    SpooledObject::from_file(&pipeline.settings().spool_dir, file, 1 << 30)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_racing_objects_with_one_uid_store_exactly_one() {
    let (Some(original), Some(conflicting)) = (
        corpus("valid/mr_explicit_le.dcm"),
        corpus("invalid/duplicate_sop_uid_different_content.dcm"),
    ) else {
        eprintln!("skipped: ../shared/corpus not found");
        return;
    };
    let source = test_source();
    for round in 0..10 {
        let dir = tempfile::tempdir().unwrap();
        let (pipeline, catalog, store) = pipeline(dir.path()).await;
        let (first, second) = (
            spool(&pipeline, &original).await,
            spool(&pipeline, &conflicting).await,
        );
        let (left, right) = tokio::join!(
            pipeline.ingest(first, &source, None),
            pipeline.ingest(second, &source, None)
        );
        let outcomes = [left, right];
        let stored = outcomes
            .iter()
            .filter(|outcome| matches!(outcome, IngestOutcome::Stored(_)))
            .count();
        let duplicates = outcomes
            .iter()
            .filter(|outcome| {
                matches!(
                    outcome,
                    IngestOutcome::Refused {
                        reason: FailureReason::DuplicateSopInstance,
                        ..
                    }
                )
            })
            .count();
        assert_eq!((stored, duplicates), (1, 1), "round {round}: {outcomes:?}");
        assert_eq!(catalog.count_instances().await.unwrap(), 1, "round {round}");
        assert_eq!(
            store.list("").await.unwrap().len(),
            1,
            "round {round}: the loser's object is removed"
        );
        assert_eq!(
            catalog.events_after(0, 10).await.unwrap().len(),
            1,
            "round {round}: one event"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_identical_resend_stores_nothing_new() {
    let Some(file) = corpus("valid/ct_explicit_le_private_tags.dcm") else {
        eprintln!("skipped: ../shared/corpus not found");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (pipeline, catalog, store) = pipeline(dir.path()).await;
    let source = test_source();
    let first = pipeline
        .ingest(spool(&pipeline, &file).await, &source, None)
        .await;
    let second = pipeline
        .ingest(spool(&pipeline, &file).await, &source, None)
        .await;
    assert!(
        matches!(&first, IngestOutcome::Stored(stored) if stored.newly_stored),
        "{first:?}"
    );
    assert!(
        matches!(&second, IngestOutcome::Stored(stored) if !stored.newly_stored),
        "{second:?}"
    );
    assert_eq!(catalog.events_after(0, 10).await.unwrap().len(), 1);
    assert_eq!(store.list("").await.unwrap().len(), 1);
    // The spool holds nothing once the objects are stored.
    assert_eq!(
        std::fs::read_dir(dir.path().join("spool")).unwrap().count(),
        0
    );
}

/// A store that can hold the next object write after it completed, until released: puts an
/// ingest between its object write and its catalog commit, where a concurrent purge of the same
/// key used to leave its row without an object.
struct HoldingStore {
    inner: Arc<dyn BlobStore>,
    hold_next_put: std::sync::atomic::AtomicBool,
    written: tokio::sync::Notify,
    release: tokio::sync::Notify,
}

#[async_trait::async_trait]
impl BlobStore for HoldingStore {
    async fn put_file(
        &self,
        key: &ObjectKey,
        path: &std::path::Path,
        sha256_hex: &str,
    ) -> StorageResult<()> {
        self.inner.put_file(key, path, sha256_hex).await
    }
    async fn put_spooled(
        &self,
        key: &ObjectKey,
        path: &std::path::Path,
        sha256_hex: &str,
    ) -> StorageResult<()> {
        let put = self.inner.put_spooled(key, path, sha256_hex).await;
        if self.hold_next_put.swap(false, Ordering::SeqCst) {
            self.written.notify_one();
            self.release.notified().await;
        }
        put
    }
    async fn get(&self, key: &ObjectKey) -> StorageResult<(u64, ByteStream)> {
        self.inner.get(key).await
    }
    async fn get_range(
        &self,
        key: &ObjectKey,
        range: std::ops::Range<u64>,
    ) -> StorageResult<Bytes> {
        self.inner.get_range(key, range).await
    }
    async fn head(&self, key: &ObjectKey) -> StorageResult<Option<ObjectMeta>> {
        self.inner.head(key).await
    }
    async fn delete(&self, key: &ObjectKey) -> StorageResult<()> {
        self.inner.delete(key).await
    }
    async fn list(&self, prefix: &str) -> StorageResult<Vec<ObjectMeta>> {
        self.inner.list(prefix).await
    }
    fn describe(&self) -> String {
        format!("holding {}", self.inner.describe())
    }
}

/// A pipeline on a SQLite catalog and a local-disk store that can hold object writes.
async fn holding_pipeline(
    dir: &std::path::Path,
) -> (IngestPipeline, Arc<dyn Catalog>, Arc<HoldingStore>) {
    let store = Arc::new(HoldingStore {
        inner: Arc::new(ObjectStoreBlobStore::local(dir.join("objects")).unwrap()),
        hold_next_put: false.into(),
        written: tokio::sync::Notify::new(),
        release: tokio::sync::Notify::new(),
    });
    let (pipeline, catalog) = pipeline_on(dir, store.clone()).await;
    (pipeline, catalog, store)
}

/// Ingests `file` in a task of its own.
async fn ingest_in_task(
    pipeline: &IngestPipeline,
    file: &std::path::Path,
) -> tokio::task::JoinHandle<IngestOutcome> {
    let (pipeline, spooled) = (pipeline.clone(), spool(pipeline, file).await);
    tokio::spawn(async move { pipeline.ingest(spooled, &test_source(), None).await })
}

/// Stores `file`, deletes its instance from the catalog (its object stays, as after a DELETE
/// whose purge has not run yet) and returns its object key.
async fn stored_then_deleted(
    pipeline: &IngestPipeline,
    catalog: &dyn Catalog,
    file: &std::path::Path,
) -> ObjectKey {
    let source = test_source();
    let IngestOutcome::Stored(stored) = pipeline
        .ingest(spool(pipeline, file).await, &source, None)
        .await
    else {
        panic!("the first store fails");
    };
    let scope = DeleteScope::Instance {
        study_instance_uid: stored.study_instance_uid.parse().unwrap(),
        series_instance_uid: stored.series_instance_uid.parse().unwrap(),
        sop_instance_uid: stored.sop_instance_uid.parse().unwrap(),
    };
    let outcome = catalog.delete(&scope).await.unwrap();
    assert_eq!(outcome.instances.len(), 1);
    outcome.instances[0].object.key.clone()
}

/// The corpus CT stored and then deleted from the catalog on a holding pipeline, with the
/// temporary directory that must outlive the test; `None` (test skipped) without the corpus.
async fn deleted_ct() -> Option<(
    tempfile::TempDir,
    PathBuf,
    IngestPipeline,
    Arc<dyn Catalog>,
    Arc<HoldingStore>,
    ObjectKey,
)> {
    let Some(file) = corpus("valid/ct_explicit_le_private_tags.dcm") else {
        eprintln!("skipped: ../shared/corpus not found");
        return None;
    };
    let dir = tempfile::tempdir().unwrap();
    let (pipeline, catalog, store) = holding_pipeline(dir.path()).await;
    let key = stored_then_deleted(&pipeline, catalog.as_ref(), &file).await;
    Some((dir, file, pipeline, catalog, store, key))
}

/// Asserts the instance of `key` is stored and its object is in the store, whole.
async fn assert_stored_with_object(catalog: &dyn Catalog, store: &dyn BlobStore, key: &ObjectKey) {
    assert!(
        catalog.object_key_referenced(key).await.unwrap(),
        "no row refers to {key}"
    );
    let meta = store.head(key).await.unwrap();
    assert!(
        meta.is_some(),
        "a row refers to {key}, but its object is gone"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_a_purge_between_object_write_and_commit_makes_the_ingest_write_again() {
    let Some((_dir, file, pipeline, catalog, store, key)) = deleted_ct().await else {
        return;
    };

    // Store it again; hold the ingest once its object is written, before its commit.
    store.hold_next_put.store(true, Ordering::SeqCst);
    let again = ingest_in_task(&pipeline, &file).await;
    store.written.notified().await;
    // The deletion's purge runs now: nothing refers to the key yet, so the object goes.
    let purged = purge_object(catalog.as_ref(), store.as_ref(), &key)
        .await
        .unwrap();
    assert_eq!(purged, Purge::Deleted);
    assert!(store.head(&key).await.unwrap().is_none());
    store.release.notify_one();

    let outcome = again.await.unwrap();
    assert!(
        matches!(&outcome, IngestOutcome::Stored(stored) if stored.newly_stored),
        "{outcome:?}"
    );
    assert_stored_with_object(catalog.as_ref(), store.as_ref(), &key).await;
    let (size, _) = store.get(&key).await.unwrap();
    assert_eq!(size, std::fs::metadata(&file).unwrap().len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_an_ingest_waits_for_a_running_purge_of_its_object() {
    let Some((_dir, file, pipeline, catalog, store, key)) = deleted_ct().await else {
        return;
    };

    // A purge has begun and not deleted the object yet.
    let generation = catalog.begin_object_purge(&key).await.unwrap().unwrap();
    let again = ingest_in_task(&pipeline, &file).await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(
        !again.is_finished(),
        "the ingest did not wait for the purge"
    );
    store.delete(&key).await.unwrap();
    catalog.finish_object_purge(&key, generation).await.unwrap();

    let outcome = again.await.unwrap();
    assert!(
        matches!(&outcome, IngestOutcome::Stored(stored) if stored.newly_stored),
        "{outcome:?}"
    );
    assert_stored_with_object(catalog.as_ref(), store.as_ref(), &key).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_a_purge_leaves_an_object_stored_again_before_it() {
    let Some((_dir, file, pipeline, catalog, store, key)) = deleted_ct().await else {
        return;
    };
    let source = test_source();
    let outcome = pipeline
        .ingest(spool(&pipeline, &file).await, &source, None)
        .await;
    assert!(matches!(&outcome, IngestOutcome::Stored(stored) if stored.newly_stored));
    // The late purge of the deletion finds the row stored again and keeps the object.
    let purged = purge_object(catalog.as_ref(), store.as_ref(), &key)
        .await
        .unwrap();
    assert_eq!(purged, Purge::StillReferenced);
    assert_stored_with_object(catalog.as_ref(), store.as_ref(), &key).await;
}
