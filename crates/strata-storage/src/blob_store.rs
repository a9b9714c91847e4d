//! The `BlobStore` trait.

use std::ops::Range;
use std::path::Path;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use strata_types::ObjectKey;

use crate::StorageResult;

/// A stream of an object's bytes, in order.
pub type ByteStream = BoxStream<'static, StorageResult<Bytes>>;

/// What the store knows of one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    pub key: ObjectKey,
    pub size_bytes: u64,
}

/// Durable storage of whole objects.
#[async_trait]
pub trait BlobStore: Send + Sync + 'static {
    /// Uploads the local file at `path` under `key`, streaming it (never reading it whole into
    /// memory), and returns once the object is durable and visible in full. `sha256_hex` is
    /// recorded as object metadata where the backend supports it. Overwriting an existing key
    /// with the same bytes is harmless. The content is checked against `sha256_hex` as it is
    /// read: a mismatch fails with `Integrity` and stores nothing (an object already under the
    /// key stays as it was).
    async fn put_file(&self, key: &ObjectKey, path: &Path, sha256_hex: &str) -> StorageResult<()>;

    /// Like [`BlobStore::put_file`] for a file the caller owns and has just written itself,
    /// hashing it as it went (the ingest spool): the hash is trusted rather than recomputed,
    /// and a local store may move the file into place instead of copying it. The file must
    /// not change afterwards. The default copies it with `put_file`.
    async fn put_spooled(
        &self,
        key: &ObjectKey,
        path: &Path,
        sha256_hex: &str,
    ) -> StorageResult<()> {
        self.put_file(key, path, sha256_hex).await
    }

    /// Returns the size of the object and a stream of its bytes. `NotFound` if absent.
    async fn get(&self, key: &ObjectKey) -> StorageResult<(u64, ByteStream)>;

    /// Returns the bytes in `range` of the object. `NotFound` if absent.
    async fn get_range(&self, key: &ObjectKey, range: Range<u64>) -> StorageResult<Bytes>;

    /// Returns the object's metadata, or `None` if it does not exist.
    async fn head(&self, key: &ObjectKey) -> StorageResult<Option<ObjectMeta>>;

    /// Deletes the object. Deleting a missing object succeeds.
    async fn delete(&self, key: &ObjectKey) -> StorageResult<()>;

    /// Lists every object whose key starts with `prefix` (empty: all objects).
    async fn list(&self, prefix: &str) -> StorageResult<Vec<ObjectMeta>>;

    /// Fails when some of `keys` cannot be read now, before a response starts streaming them:
    /// with `RestoreRequired` when an object is archived (its restore is then started). The
    /// default, for stores without archive tiers, always succeeds.
    async fn check_readable(&self, keys: &[ObjectKey]) -> StorageResult<()> {
        let _ = keys;
        Ok(())
    }

    /// Describes the backend for logs, without secrets (`file:///data/objects`,
    /// `s3://bucket/prefix at http://host:3900`).
    fn describe(&self) -> String;
}
