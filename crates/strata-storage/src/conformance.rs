//! The conformance suite every [`BlobStore`] must pass (feature `testsuite`).
//!
//! [`run_conformance_suite`] runs every check; each check is also public so a failing one can
//! be run alone. Checks panic with a message naming what broke. They write only under the key
//! prefix `conformance/` and delete what they wrote, so the store may hold other objects (but
//! must not hold other keys under `conformance/`). Source files go to a temporary directory.

use std::path::{Path, PathBuf};

use futures::TryStreamExt;
use sha2::{Digest, Sha256};
use strata_types::{ObjectKey, SeriesUid, SopInstanceUid, StudyUid};

use crate::{BlobStore, StorageErrorKind};

/// Size of the large object: over the multipart threshold, not a whole number of parts.
pub const LARGE_OBJECT_BYTES: usize = 20 * 1024 * 1024 + 12_345;

/// Runs every check of the suite against `store`, then checks that `conformance/` is empty.
pub async fn run_conformance_suite(store: &dyn BlobStore) {
    let scratch = tempfile::tempdir().expect("create scratch directory");
    let scratch_dir = scratch.path();
    check_small_object_round_trip(store, scratch_dir).await;
    check_empty_object(store, scratch_dir).await;
    check_large_object_round_trip(store, scratch_dir).await;
    check_overwrite_with_same_content(store, scratch_dir).await;
    check_put_spooled(store, scratch_dir).await;
    check_delete_is_idempotent(store, scratch_dir).await;
    check_missing_object(store).await;
    check_range_past_end_fails(store, scratch_dir).await;
    check_list_by_prefix(store, scratch_dir).await;
    check_instance_keys(store, scratch_dir).await;
    check_failed_uploads_leave_nothing(store, scratch_dir).await;
    let leftovers = store.list("conformance/").await.expect("list conformance/");
    assert!(
        leftovers.is_empty(),
        "the suite left objects behind: {leftovers:?}"
    );
}

/// A small object reads back identically by stream, range and head.
pub async fn check_small_object_round_trip(store: &dyn BlobStore, scratch_dir: &Path) {
    let key = ObjectKey::from_stored("conformance/small/hello.dcm");
    let content = b"DICM small object: hello from strata".to_vec();
    put_bytes(store, scratch_dir, &key, &content).await;

    assert_eq!(get_all(store, &key).await, content, "get of a small object");
    let head = store
        .head(&key)
        .await
        .expect("head")
        .expect("head finds the object");
    assert_eq!(head.key, key);
    assert_eq!(
        head.size_bytes,
        content.len() as u64,
        "head size of a small object"
    );
    let range = store.get_range(&key, 5..11).await.expect("get_range");
    assert_eq!(&range[..], &content[5..11], "get_range of a small object");
    let empty_range = store.get_range(&key, 3..3).await.expect("empty get_range");
    assert!(empty_range.is_empty());
    delete_all(store, &[key]).await;
}

/// A zero-byte object can be stored and read.
pub async fn check_empty_object(store: &dyn BlobStore, scratch_dir: &Path) {
    let key = ObjectKey::from_stored("conformance/empty/zero.bin");
    put_bytes(store, scratch_dir, &key, &[]).await;
    let (size_bytes, stream) = store.get(&key).await.expect("get of an empty object");
    assert_eq!(size_bytes, 0);
    let chunks: Vec<_> = stream.try_collect().await.expect("read empty object");
    assert!(
        chunks.iter().all(|chunk| chunk.is_empty()),
        "an empty object streamed bytes"
    );
    assert_eq!(
        store
            .head(&key)
            .await
            .expect("head")
            .map(|meta| meta.size_bytes),
        Some(0)
    );
    delete_all(store, &[key]).await;
}

/// An object over the multipart threshold reads back identically, including ranges that cross
/// part boundaries and the last bytes.
pub async fn check_large_object_round_trip(store: &dyn BlobStore, scratch_dir: &Path) {
    let key = ObjectKey::from_stored("conformance/large/object.bin");
    let content = pseudo_random_bytes(LARGE_OBJECT_BYTES, 0x5eed);
    put_bytes(store, scratch_dir, &key, &content).await;

    let (size_bytes, stream) = store.get(&key).await.expect("get of a large object");
    assert_eq!(size_bytes, content.len() as u64, "size announced by get");
    let read_back: Vec<u8> = stream
        .try_fold(
            Vec::with_capacity(content.len()),
            |mut buffer, chunk| async move {
                buffer.extend_from_slice(&chunk);
                Ok(buffer)
            },
        )
        .await
        .expect("stream a large object");
    assert_eq!(
        read_back.len(),
        content.len(),
        "streamed length of a large object"
    );
    assert!(
        read_back == content,
        "streamed bytes of a large object differ"
    );

    let mib = 1024 * 1024;
    let len = content.len();
    for range in [
        0..17,
        8 * mib - 5..8 * mib + 5,
        16 * mib - 1..16 * mib + 1,
        len - 7..len,
        0..len,
    ] {
        let bytes = store
            .get_range(&key, range.start as u64..range.end as u64)
            .await
            .unwrap_or_else(|error| panic!("get_range {range:?} of a large object: {error}"));
        assert!(
            bytes[..] == content[range.clone()],
            "get_range {range:?} of a large object"
        );
    }
    let head = store
        .head(&key)
        .await
        .expect("head")
        .expect("head finds the large object");
    assert_eq!(head.size_bytes, len as u64);
    delete_all(store, &[key]).await;
}

/// Uploading the same bytes again under the same key succeeds and keeps one object.
pub async fn check_overwrite_with_same_content(store: &dyn BlobStore, scratch_dir: &Path) {
    let key = ObjectKey::from_stored("conformance/overwrite/same.dcm");
    let content = pseudo_random_bytes(4096, 7);
    put_bytes(store, scratch_dir, &key, &content).await;
    put_bytes(store, scratch_dir, &key, &content).await;
    assert_eq!(get_all(store, &key).await, content);
    let listed = store.list("conformance/overwrite/").await.expect("list");
    assert_eq!(listed.len(), 1, "an overwrite left {listed:?}");
    delete_all(store, &[key]).await;
}

/// `put_spooled` stores the file's bytes, which stay readable after the caller removes its
/// file (a local store links it into place), and storing the same bytes again is harmless.
pub async fn check_put_spooled(store: &dyn BlobStore, scratch_dir: &Path) {
    let key = ObjectKey::from_stored("conformance/spooled/linked.dcm");
    let content = pseudo_random_bytes(300_000, 11);
    let sha256_hex = hex::encode(Sha256::digest(&content));
    for attempt in 0..2 {
        let source = write_source(scratch_dir, "spooled.bin", &content).await;
        store
            .put_spooled(&key, &source, &sha256_hex)
            .await
            .unwrap_or_else(|error| panic!("put_spooled {key} (attempt {attempt}): {error:?}"));
        tokio::fs::remove_file(&source)
            .await
            .expect("remove spooled file");
        assert_eq!(
            get_all(store, &key).await,
            content,
            "object after put_spooled (attempt {attempt})"
        );
    }
    let range = store.get_range(&key, 1000..1010).await.expect("get_range");
    assert_eq!(&range[..], &content[1000..1010]);
    let listed = store.list("conformance/spooled/").await.expect("list");
    assert_eq!(listed.len(), 1, "put_spooled twice left {listed:?}");
    delete_all(store, &[key]).await;
}

/// Deleting removes the object; deleting again, or a key never written, succeeds.
pub async fn check_delete_is_idempotent(store: &dyn BlobStore, scratch_dir: &Path) {
    let key = ObjectKey::from_stored("conformance/delete/gone.dcm");
    put_bytes(store, scratch_dir, &key, b"to be deleted").await;
    store.delete(&key).await.expect("delete");
    assert_eq!(store.head(&key).await.expect("head after delete"), None);
    let error = store.get(&key).await.err().expect("get after delete fails");
    assert_eq!(
        error.kind,
        StorageErrorKind::NotFound,
        "get after delete: {error}"
    );
    store.delete(&key).await.expect("second delete");
    let never_written = ObjectKey::from_stored("conformance/delete/never/written.dcm");
    store
        .delete(&never_written)
        .await
        .expect("delete of a key never written");
}

/// A missing object is `NotFound` for reads and `None` for head.
pub async fn check_missing_object(store: &dyn BlobStore) {
    let key = ObjectKey::from_stored("conformance/missing/nothing-here.dcm");
    let error = store
        .get(&key)
        .await
        .err()
        .expect("get of a missing key fails");
    assert_eq!(error.kind, StorageErrorKind::NotFound, "get: {error}");
    assert_eq!(error.key.as_ref(), Some(&key), "the error names the key");
    let error = store
        .get_range(&key, 0..10)
        .await
        .expect_err("get_range of a missing key");
    assert_eq!(error.kind, StorageErrorKind::NotFound, "get_range: {error}");
    let error = store
        .get_range(&key, 0..0)
        .await
        .expect_err("empty get_range of a missing key");
    assert_eq!(
        error.kind,
        StorageErrorKind::NotFound,
        "empty get_range: {error}"
    );
    assert_eq!(store.head(&key).await.expect("head of a missing key"), None);
    assert!(
        store
            .list("conformance/missing/")
            .await
            .expect("list")
            .is_empty()
    );
}

/// A range that ends past the object is an error, never a short read.
pub async fn check_range_past_end_fails(store: &dyn BlobStore, scratch_dir: &Path) {
    let key = ObjectKey::from_stored("conformance/range/short.bin");
    put_bytes(store, scratch_dir, &key, b"0123456789").await;
    assert!(
        store.get_range(&key, 5..11).await.is_err(),
        "range past the end succeeded"
    );
    assert_eq!(
        &store
            .get_range(&key, 5..10)
            .await
            .expect("range to the end")[..],
        b"56789"
    );
    delete_all(store, &[key]).await;
}

/// `list` returns exactly the keys starting with the prefix (a plain string prefix, not only
/// whole segments), relative to the store's root, with their sizes.
pub async fn check_list_by_prefix(store: &dyn BlobStore, scratch_dir: &Path) {
    let keys_and_sizes = [
        ("conformance/list/a/1.dcm", 1),
        ("conformance/list/a/deeper/2.dcm", 22),
        ("conformance/list/ab/3.dcm", 333),
        ("conformance/list/b/4.dcm", 4444),
    ];
    let mut keys = Vec::new();
    for (key_str, size) in keys_and_sizes {
        let key = ObjectKey::from_stored(key_str);
        put_bytes(
            store,
            scratch_dir,
            &key,
            &pseudo_random_bytes(size, size as u64),
        )
        .await;
        keys.push(key);
    }
    let listed_keys = |prefix: &'static str| async move {
        let listed = store.list(prefix).await.expect("list");
        listed
            .into_iter()
            .map(|meta| (meta.key.as_str().to_owned(), meta.size_bytes))
            .collect()
    };
    let expected = |indices: &[usize]| -> Vec<(String, u64)> {
        let mut expected: Vec<(String, u64)> = indices
            .iter()
            .map(|&index| {
                (
                    keys_and_sizes[index].0.to_owned(),
                    keys_and_sizes[index].1 as u64,
                )
            })
            .collect();
        expected.sort();
        expected
    };
    let sorted = |mut listed: Vec<(String, u64)>| {
        listed.sort();
        listed
    };
    assert_eq!(
        sorted(listed_keys("conformance/list/").await),
        expected(&[0, 1, 2, 3])
    );
    assert_eq!(
        sorted(listed_keys("conformance/list/a/").await),
        expected(&[0, 1])
    );
    assert_eq!(
        sorted(listed_keys("conformance/list/a").await),
        expected(&[0, 1, 2])
    );
    assert_eq!(
        sorted(listed_keys("conformance/list/b/4").await),
        expected(&[3])
    );
    assert_eq!(
        sorted(listed_keys("conformance/list/c").await),
        expected(&[])
    );
    assert_eq!(
        sorted(listed_keys("conformance/lis").await),
        expected(&[0, 1, 2, 3])
    );
    let everything: Vec<(String, u64)> = listed_keys("").await;
    for key_and_size in expected(&[0, 1, 2, 3]) {
        assert!(
            everything.contains(&key_and_size),
            "list(\"\") misses {key_and_size:?}"
        );
    }
    delete_all(store, &keys).await;
}

/// Keys shaped like DICOM instance keys (dotted UIDs, several segments, a sha256 file name)
/// round-trip and list back unchanged.
pub async fn check_instance_keys(store: &dyn BlobStore, scratch_dir: &Path) {
    let study_uid = StudyUid::parse("1.2.3").expect("study uid");
    let series_uid = SeriesUid::parse("1.2.3.4").expect("series uid");
    let mut keys = Vec::new();
    for index in 0..3u8 {
        let sop_instance_uid =
            SopInstanceUid::parse(&format!("1.2.3.4.5.{index}")).expect("sop instance uid");
        let content = pseudo_random_bytes(1000 + usize::from(index), u64::from(index));
        let sha256_hex = hex::encode(Sha256::digest(&content));
        // Long, dotted, many-segment keys such as a readable layout would use, and the
        // archive's own content-addressed layout.
        let readable_key = ObjectKey::from_stored(format!(
            "conformance/instances/{study_uid}/{series_uid}/{sop_instance_uid}/{sha256_hex}.dcm"
        ));
        put_bytes(store, scratch_dir, &readable_key, &content).await;
        assert_eq!(
            get_all(store, &readable_key).await,
            content,
            "get {readable_key}"
        );
        keys.push(readable_key);
        let key = ObjectKey::from_stored(format!(
            "conformance/{}",
            ObjectKey::for_content(&sha256_hex)
        ));
        put_bytes(store, scratch_dir, &key, &content).await;
        assert_eq!(get_all(store, &key).await, content, "get {key}");
        keys.push(key);
    }
    let listed: Vec<ObjectKey> = store
        .list("conformance/")
        .await
        .expect("list instances")
        .into_iter()
        .map(|meta| meta.key)
        .collect();
    let mut expected = keys.clone();
    expected.sort();
    let mut listed_sorted = listed;
    listed_sorted.sort();
    assert_eq!(listed_sorted, expected, "instance keys listed back");
    delete_all(store, &keys).await;
}

/// Uploads that fail (missing source, wrong or malformed sha256, small or multipart) leave no
/// object, and do not damage an object already under the key.
pub async fn check_failed_uploads_leave_nothing(store: &dyn BlobStore, scratch_dir: &Path) {
    let key = ObjectKey::from_stored("conformance/failed/upload.dcm");
    let missing_source = scratch_dir.join("does-not-exist.dcm");
    let error = store
        .put_file(&key, &missing_source, &"0".repeat(64))
        .await
        .expect_err("upload of a missing file");
    assert_eq!(error.kind, StorageErrorKind::Io, "missing source: {error}");

    let wrong_sha256 = "ab".repeat(32);
    for (name, size) in [("small", 1000), ("large", LARGE_OBJECT_BYTES)] {
        let content = pseudo_random_bytes(size, 99);
        let source = write_source(scratch_dir, &format!("failed-{name}.bin"), &content).await;
        let error = store
            .put_file(&key, &source, &wrong_sha256)
            .await
            .expect_err("upload with a wrong sha256");
        assert_eq!(
            error.kind,
            StorageErrorKind::Integrity,
            "{name} wrong sha256: {error}"
        );
        let error = store
            .put_file(&key, &source, "not-a-sha256")
            .await
            .expect_err("upload with a malformed sha256");
        assert_eq!(
            error.kind,
            StorageErrorKind::Integrity,
            "{name} malformed sha256: {error}"
        );
    }
    assert_eq!(
        store.head(&key).await.expect("head after failed uploads"),
        None
    );
    assert!(
        store
            .list("conformance/failed/")
            .await
            .expect("list")
            .is_empty()
    );

    // A failed upload over an existing object leaves the old object whole.
    let original = pseudo_random_bytes(3000, 1);
    put_bytes(store, scratch_dir, &key, &original).await;
    let replacement = pseudo_random_bytes(LARGE_OBJECT_BYTES, 2);
    let source = write_source(scratch_dir, "replacement.bin", &replacement).await;
    store
        .put_file(&key, &source, &wrong_sha256)
        .await
        .expect_err("replacement with a wrong sha256");
    assert_eq!(
        get_all(store, &key).await,
        original,
        "a failed upload damaged the old object"
    );
    delete_all(store, &[key]).await;
}

/// Returns `len` deterministic, incompressible bytes.
pub fn pseudo_random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed ^ 0x9e37_79b9_7f4a_7c15;
    let mut bytes = Vec::with_capacity(len + 8);
    while bytes.len() < len {
        // xorshift64*
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        bytes.extend_from_slice(&state.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    bytes.truncate(len);
    bytes
}

/// Writes `content` to a file in `scratch_dir` and uploads it under `key` with its sha256.
pub async fn put_bytes(store: &dyn BlobStore, scratch_dir: &Path, key: &ObjectKey, content: &[u8]) {
    let source = write_source(scratch_dir, "upload.bin", content).await;
    let sha256_hex = hex::encode(Sha256::digest(content));
    store
        .put_file(key, &source, &sha256_hex)
        .await
        .unwrap_or_else(|error| panic!("put_file {key}: {error:?}"));
    tokio::fs::remove_file(&source)
        .await
        .expect("remove source file");
}

/// Reads a whole object through `get`, checking the announced size.
pub async fn get_all(store: &dyn BlobStore, key: &ObjectKey) -> Vec<u8> {
    let (size_bytes, stream) = store
        .get(key)
        .await
        .unwrap_or_else(|error| panic!("get {key}: {error:?}"));
    let chunks: Vec<_> = stream
        .try_collect()
        .await
        .unwrap_or_else(|error| panic!("stream {key}: {error:?}"));
    let content = chunks.concat();
    assert_eq!(
        content.len() as u64,
        size_bytes,
        "get {key}: size differs from bytes streamed"
    );
    content
}

async fn write_source(scratch_dir: &Path, name: &str, content: &[u8]) -> PathBuf {
    let path = scratch_dir.join(name);
    tokio::fs::write(&path, content)
        .await
        .expect("write source file");
    path
}

async fn delete_all(store: &dyn BlobStore, keys: &[ObjectKey]) {
    for key in keys {
        store
            .delete(key)
            .await
            .unwrap_or_else(|error| panic!("delete {key}: {error:?}"));
        assert_eq!(
            store.head(key).await.expect("head after delete"),
            None,
            "{key} survived"
        );
    }
}
