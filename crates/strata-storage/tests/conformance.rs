//! Runs the conformance suite on the local, in-memory and in-process S3 backends, and checks
//! what the suite cannot see through the trait: recorded sha256 metadata, aborted uploads,
//! no staging files left behind.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use futures::FutureExt;
use futures::stream::BoxStream;
use object_store::memory::InMemory;
use object_store::path::Path as ObjectPath;
use object_store::{
    Attribute, CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectStore,
    ObjectStoreExt, PutMultipartOptions, PutOptions, PutPayload, PutResult, UploadPart,
};
use sha2::{Digest, Sha256};
use strata_config::StorageConfig;
use strata_storage::conformance::{self, LARGE_OBJECT_BYTES, pseudo_random_bytes};
use strata_storage::testsuite::InProcessS3;
use strata_storage::{BlobStore, ObjectStoreBlobStore, StorageErrorKind, open_blob_store};
use strata_types::ObjectKey;

/// Lists every file under `dir`, relative to it.
fn files_under(dir: &Path) -> Vec<String> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(current) = pending.pop() {
        for entry in std::fs::read_dir(&current).unwrap() {
            let entry = entry.unwrap();
            if entry.file_type().unwrap().is_dir() {
                pending.push(entry.path());
            } else {
                files.push(
                    entry
                        .path()
                        .strip_prefix(dir)
                        .unwrap()
                        .display()
                        .to_string(),
                );
            }
        }
    }
    files.sort();
    files
}

fn sha256_hex(content: &[u8]) -> String {
    hex::encode(Sha256::digest(content))
}

#[tokio::test]
async fn test_local_store_passes_conformance_and_leaves_no_file_behind() {
    let root = tempfile::tempdir().unwrap();
    let objects_dir = root.path().join("not/yet/created");
    let store = ObjectStoreBlobStore::local(&objects_dir).unwrap();
    assert_eq!(
        store.describe(),
        format!(
            "file://{}",
            std::fs::canonicalize(&objects_dir).unwrap().display()
        )
    );
    conformance::run_conformance_suite(&store).await;
    // No staging file of a failed or aborted upload, no empty directory.
    assert_eq!(files_under(&objects_dir), Vec::<String>::new());
    assert_eq!(std::fs::read_dir(&objects_dir).unwrap().count(), 0);
}

#[tokio::test]
async fn test_local_store_keeps_objects_as_plain_files() {
    let root = tempfile::tempdir().unwrap();
    let config = StorageConfig {
        uri: format!("file://{}", root.path().display()),
        ..StorageConfig::default()
    };
    let store = open_blob_store(&config).unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let key = ObjectKey::from_stored("instances/1.2/1.2.3/1.2.3.4/abc.dcm");
    conformance::put_bytes(store.as_ref(), scratch.path(), &key, b"DICM").await;
    assert_eq!(
        std::fs::read(root.path().join(key.as_str())).unwrap(),
        b"DICM"
    );
}

#[tokio::test]
async fn test_ram_store_passes_conformance_and_records_sha256() {
    let store = ObjectStoreBlobStore::ram();
    conformance::run_conformance_suite(&store).await;

    let scratch = tempfile::tempdir().unwrap();
    for (name, size) in [("small", 100), ("large", LARGE_OBJECT_BYTES)] {
        let key = ObjectKey::from_stored(format!("metadata/{name}.bin"));
        let content = pseudo_random_bytes(size, 3);
        conformance::put_bytes(&store, scratch.path(), &key, &content).await;
        let result = store
            .object_store()
            .get(&ObjectPath::from(key.as_str()))
            .await
            .unwrap();
        let recorded = result.attributes.get(&Attribute::Metadata("sha256".into()));
        assert_eq!(
            recorded.map(|value| value.as_ref()),
            Some(sha256_hex(&content).as_str())
        );
    }
}

#[tokio::test]
async fn test_in_process_s3_passes_conformance_at_bucket_root_and_under_a_prefix() {
    let s3 = InProcessS3::start().await.unwrap();
    let store = s3.blob_store("").unwrap();
    assert_eq!(
        store.describe(),
        format!("s3://strata-test at {} (region us-east-1)", s3.endpoint)
    );
    conformance::run_conformance_suite(&store).await;

    let prefixed = open_blob_store(&s3.storage_config("nested/strata")).unwrap();
    conformance::run_conformance_suite(prefixed.as_ref()).await;

    // Keys are relative to the prefix, which is a real path inside the bucket.
    let scratch = tempfile::tempdir().unwrap();
    let key = ObjectKey::from_stored("instances/1.2/1.2.3/1.2.3.4/abc.dcm");
    conformance::put_bytes(prefixed.as_ref(), scratch.path(), &key, b"DICM").await;
    let listed = prefixed.list("").await.unwrap();
    assert_eq!(
        listed
            .iter()
            .map(|meta| meta.key.clone())
            .collect::<Vec<_>>(),
        vec![key.clone()]
    );
    let file_on_server = s3
        .data_dir()
        .join("strata-test/nested/strata")
        .join(key.as_str());
    assert_eq!(tokio::fs::read(&file_on_server).await.unwrap(), b"DICM");
    assert!(store.list("nested/strata/instances/").await.unwrap().len() == 1);
}

#[tokio::test]
async fn test_in_process_s3_records_sha256_as_user_metadata() {
    let s3 = InProcessS3::start().await.unwrap();
    let store = s3.blob_store("meta").unwrap();
    let scratch = tempfile::tempdir().unwrap();
    for (name, size) in [("small", 100), ("large", LARGE_OBJECT_BYTES)] {
        let key = ObjectKey::from_stored(format!("{name}.bin"));
        let content = pseudo_random_bytes(size, 4);
        conformance::put_bytes(&store, scratch.path(), &key, &content).await;
        let result = store
            .object_store()
            .get(&ObjectPath::from(key.as_str()))
            .await
            .unwrap();
        let recorded = result.attributes.get(&Attribute::Metadata("sha256".into()));
        assert_eq!(
            recorded.map(|value| value.as_ref()),
            Some(sha256_hex(&content).as_str()),
            "{name}"
        );
    }
}

#[tokio::test]
async fn test_wrong_credentials_are_permission_denied() {
    let s3 = InProcessS3::start().await.unwrap();
    let mut config = s3.s3_config();
    config.secret_access_key = Some("wrong-secret".to_owned());
    let store = ObjectStoreBlobStore::s3_with_env(&s3.bucket, "", &config, Vec::new()).unwrap();
    let error = store
        .head(&ObjectKey::from_stored("a.dcm"))
        .await
        .unwrap_err();
    assert_eq!(error.kind, StorageErrorKind::PermissionDenied, "{error:?}");
    assert!(!format!("{error:?}").contains("wrong-secret"), "{error:?}");
}

#[tokio::test]
async fn test_secret_comes_from_a_trimmed_file_or_the_environment() {
    let s3 = InProcessS3::start().await.unwrap();
    let key = ObjectKey::from_stored("a.dcm");
    let secrets = tempfile::tempdir().unwrap();
    let secret_file = secrets.path().join("secret");
    std::fs::write(&secret_file, format!("  {}\n", s3.secret_access_key)).unwrap();
    let mut config = s3.s3_config();
    // The file wins over the inline secret.
    config.secret_access_key = Some("ignored-inline-secret".to_owned());
    config.secret_access_key_file = Some(secret_file);
    let store = ObjectStoreBlobStore::s3_with_env(&s3.bucket, "", &config, Vec::new()).unwrap();
    assert_eq!(store.head(&key).await.unwrap(), None);

    let mut config = s3.s3_config();
    config.secret_access_key = None;
    let env = vec![(
        "AWS_SECRET_ACCESS_KEY".to_owned(),
        s3.secret_access_key.clone(),
    )];
    let store = ObjectStoreBlobStore::s3_with_env(&s3.bucket, "", &config, env).unwrap();
    assert_eq!(store.head(&key).await.unwrap(), None);
}

/// What the wrapped multipart upload does with part number `at_part` (0-based).
#[derive(Debug, Clone, Copy)]
enum PartFault {
    Fail {
        at_part: usize,
    },
    Hang {
        at_part: usize,
    },
    /// Every part takes this long, so that parts pile up if the writer does not wait.
    Slow(Duration),
}

/// Part uploads running now, and the most seen at once.
#[derive(Debug, Default)]
struct PartCounters {
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
}

/// An in-memory store whose multipart uploads fail or hang at one part, recording aborts.
#[derive(Debug)]
struct FaultyStore {
    inner: InMemory,
    fault: PartFault,
    aborted: Arc<AtomicBool>,
    counters: Arc<PartCounters>,
}

impl std::fmt::Display for FaultyStore {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "FaultyStore")
    }
}

#[derive(Debug)]
struct FaultyUpload {
    inner: Box<dyn MultipartUpload>,
    fault: PartFault,
    num_parts: AtomicUsize,
    aborted: Arc<AtomicBool>,
    counters: Arc<PartCounters>,
}

#[async_trait]
impl MultipartUpload for FaultyUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        let part_index = self.num_parts.fetch_add(1, Ordering::SeqCst);
        match self.fault {
            PartFault::Fail { at_part } if at_part == part_index => {
                futures::future::ready(Err(object_store::Error::Generic {
                    store: "FaultyStore",
                    source: "injected part failure".into(),
                }))
                .boxed()
            }
            PartFault::Hang { at_part } if at_part == part_index => {
                futures::future::pending().boxed()
            }
            PartFault::Slow(delay) => {
                let counters = Arc::clone(&self.counters);
                let in_flight = counters.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                counters
                    .max_in_flight
                    .fetch_max(in_flight, Ordering::SeqCst);
                let part_upload = self.inner.put_part(data);
                async move {
                    tokio::time::sleep(delay).await;
                    let result = part_upload.await;
                    counters.in_flight.fetch_sub(1, Ordering::SeqCst);
                    result
                }
                .boxed()
            }
            _ => self.inner.put_part(data),
        }
    }

    async fn complete(&mut self) -> object_store::Result<PutResult> {
        self.inner.complete().await
    }

    async fn abort(&mut self) -> object_store::Result<()> {
        self.aborted.store(true, Ordering::SeqCst);
        self.inner.abort().await
    }
}

#[async_trait]
impl ObjectStore for FaultyStore {
    async fn put_opts(
        &self,
        location: &ObjectPath,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &ObjectPath,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        let inner = self.inner.put_multipart_opts(location, opts).await?;
        Ok(Box::new(FaultyUpload {
            inner,
            fault: self.fault,
            num_parts: AtomicUsize::new(0),
            aborted: Arc::clone(&self.aborted),
            counters: Arc::clone(&self.counters),
        }))
    }

    async fn get_opts(
        &self,
        location: &ObjectPath,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        self.inner.get_opts(location, options).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<ObjectPath>>,
    ) -> BoxStream<'static, object_store::Result<ObjectPath>> {
        self.inner.delete_stream(locations)
    }

    fn list(
        &self,
        prefix: Option<&ObjectPath>,
    ) -> BoxStream<'static, object_store::Result<object_store::ObjectMeta>> {
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(
        &self,
        prefix: Option<&ObjectPath>,
    ) -> object_store::Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &ObjectPath,
        to: &ObjectPath,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}

fn faulty_store(fault: PartFault) -> (ObjectStoreBlobStore, Arc<AtomicBool>, Arc<PartCounters>) {
    let aborted = Arc::new(AtomicBool::new(false));
    let counters = Arc::new(PartCounters::default());
    let store = FaultyStore {
        inner: InMemory::new(),
        fault,
        aborted: Arc::clone(&aborted),
        counters: Arc::clone(&counters),
    };
    (
        ObjectStoreBlobStore::from_object_store(Arc::new(store), true, "faulty://"),
        aborted,
        counters,
    )
}

#[tokio::test]
async fn test_parts_in_flight_are_bounded() {
    let (store, aborted, counters) = faulty_store(PartFault::Slow(Duration::from_millis(300)));
    let scratch = tempfile::tempdir().unwrap();
    // 10 parts of 8 MiB: memory would grow with the file if reading outran uploading.
    let content = pseudo_random_bytes(80 * 1024 * 1024 - 1, 8);
    let source = scratch.path().join("huge.bin");
    tokio::fs::write(&source, &content).await.unwrap();
    let key = ObjectKey::from_stored("a/huge.bin");

    store
        .put_file(&key, &source, &sha256_hex(&content))
        .await
        .unwrap();
    let max_in_flight = counters.max_in_flight.load(Ordering::SeqCst);
    assert!(
        (2..=4).contains(&max_in_flight),
        "{max_in_flight} parts were in flight at once"
    );
    assert!(!aborted.load(Ordering::SeqCst));
    assert!(
        conformance::get_all(&store, &key).await == content,
        "read back differs"
    );
}

#[tokio::test]
async fn test_failed_part_aborts_the_upload() {
    let (store, aborted, _) = faulty_store(PartFault::Fail { at_part: 1 });
    let scratch = tempfile::tempdir().unwrap();
    let content = pseudo_random_bytes(LARGE_OBJECT_BYTES, 5);
    let source = scratch.path().join("large.bin");
    tokio::fs::write(&source, &content).await.unwrap();
    let key = ObjectKey::from_stored("a/large.bin");

    let error = store
        .put_file(&key, &source, &sha256_hex(&content))
        .await
        .unwrap_err();
    assert!(
        format!("{error:?}").contains("injected part failure"),
        "{error:?}"
    );
    assert_eq!(error.key.as_ref(), Some(&key));
    assert!(
        aborted.load(Ordering::SeqCst),
        "the multipart upload was not aborted"
    );
    assert_eq!(store.head(&key).await.unwrap(), None);
}

#[tokio::test]
async fn test_cancelled_upload_is_aborted() {
    let (store, aborted, _) = faulty_store(PartFault::Hang { at_part: 0 });
    let scratch = tempfile::tempdir().unwrap();
    let content = pseudo_random_bytes(LARGE_OBJECT_BYTES, 6);
    let source = scratch.path().join("large.bin");
    tokio::fs::write(&source, &content).await.unwrap();
    let key = ObjectKey::from_stored("a/cancelled.bin");

    let content_sha256 = sha256_hex(&content);
    let upload = store.put_file(&key, &source, &content_sha256);
    let timed_out = tokio::time::timeout(Duration::from_millis(500), upload).await;
    assert!(timed_out.is_err(), "the hanging upload finished");
    // The abort runs in a task spawned when the upload was dropped.
    for _ in 0..100 {
        if aborted.load(Ordering::SeqCst) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        aborted.load(Ordering::SeqCst),
        "the cancelled upload was not aborted"
    );
    assert_eq!(store.head(&key).await.unwrap(), None);
}

#[tokio::test]
async fn test_invalid_keys_are_refused() {
    let store = ObjectStoreBlobStore::ram();
    for bad_key in ["", "/leading", "trailing/", "double//slash", "dot/../dot"] {
        let error = store
            .head(&ObjectKey::from_stored(bad_key))
            .await
            .unwrap_err();
        assert_eq!(error.kind, StorageErrorKind::InvalidKey, "{bad_key:?}");
    }
}
