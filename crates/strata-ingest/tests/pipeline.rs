//! The pipeline on an in-memory store and a SQLite catalog: uniqueness is the catalog's job,
//! also when two different objects with one SOP Instance UID race each other.

use std::path::PathBuf;
use std::sync::Arc;

use strata_catalog::Catalog;
use strata_ingest::{
    FailureReason, IngestOutcome, IngestPipeline, IngestSettings, IngestSource, SpooledObject,
};
use strata_storage::{BlobStore, ObjectStoreBlobStore};

fn corpus(path: &str) -> Option<PathBuf> {
    let file = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/corpus")
        .join(path);
    file.is_file().then_some(file)
}

async fn pipeline(dir: &std::path::Path) -> (IngestPipeline, Arc<dyn Catalog>, Arc<dyn BlobStore>) {
    let catalog =
        strata_catalog::open_catalog(&format!("sqlite://{}", dir.join("catalog.db").display()), 4)
            .await
            .unwrap();
    let store: Arc<dyn BlobStore> = Arc::new(ObjectStoreBlobStore::ram());
    let settings = IngestSettings {
        spool_dir: dir.join("spool"),
        max_object_bytes: 1 << 30,
    };
    (
        IngestPipeline::new(catalog.clone(), store.clone(), settings),
        catalog,
        store,
    )
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
    let source = IngestSource {
        protocol: "test".into(),
        ..IngestSource::default()
    };
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
    let source = IngestSource {
        protocol: "test".into(),
        ..IngestSource::default()
    };
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
