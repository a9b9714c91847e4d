//! `ObjectStoreBlobStore`: the one `BlobStore` implementation, over any `object_store` backend.

use std::io::{Read, Seek, SeekFrom};
use std::ops::Range;
use std::path::Path as FsPath;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path as ObjectPath;
use object_store::{GetResultPayload, ObjectStore, ObjectStoreExt};
use strata_types::ObjectKey;

use crate::blob_store::{BlobStore, ByteStream, ObjectMeta};
use crate::error::{StorageError, StorageErrorKind, StorageResult};

/// Size of the chunks streamed from a local object file.
const LOCAL_READ_CHUNK_BYTES: u64 = 1024 * 1024;

/// A [`BlobStore`] over an `object_store` backend: a local directory, memory or an
/// S3-compatible bucket (see [`ObjectStoreBlobStore::s3`]).
///
/// Keys are `object_store` paths: `/`-separated, non-empty segments, no `.` or `..` segment.
#[derive(Debug, Clone)]
pub struct ObjectStoreBlobStore {
    store: Arc<dyn ObjectStore>,
    /// The local backend, for uploads that move a file into place instead of copying it.
    local_opt: Option<Arc<LocalFileSystem>>,
    record_sha256: bool,
    description: String,
}

impl ObjectStoreBlobStore {
    /// Opens a store in the local directory `root_dir`, creating it if missing.
    ///
    /// Objects are files under `root_dir`. An upload from a file on the same filesystem (the
    /// ingest spool) is fsynced and hard-linked into place, then its directory fsynced: the
    /// bytes are written once, never copied. Any other upload is written to a temporary file
    /// next to its destination, fsynced and renamed into place. Either way an object is never
    /// partially visible and survives a crash once `put_file` returns. Directories left empty by a delete are
    /// removed. The sha256 is not recorded: the local backend keeps no object metadata.
    pub fn local(root_dir: impl AsRef<FsPath>) -> StorageResult<Self> {
        let root = root_dir.as_ref();
        let context = || format!("failed to open object directory `{}`", root.display());
        std::fs::create_dir_all(root).map_err(|error| StorageError::from_io(error, context()))?;
        let canonical_root =
            std::fs::canonicalize(root).map_err(|error| StorageError::from_io(error, context()))?;
        let store = LocalFileSystem::new_with_prefix(&canonical_root)
            .map_err(|error| StorageError::from_object_store(error, context(), None))?
            .with_fsync(true)
            .with_automatic_cleanup(true);
        let store = Arc::new(store);
        Ok(Self {
            local_opt: Some(store.clone()),
            store,
            record_sha256: false,
            description: format!("file://{}", canonical_root.display()),
        })
    }

    /// Returns a new, empty store held in memory, for tests and throwaway nodes.
    pub fn ram() -> Self {
        Self {
            store: Arc::new(InMemory::new()),
            local_opt: None,
            record_sha256: true,
            description: "ram://".to_owned(),
        }
    }

    /// Wraps any `object_store` backend. `record_sha256` says whether the backend accepts
    /// object attributes (user metadata); `description` is returned by
    /// [`BlobStore::describe`] and must hold no secret.
    pub fn from_object_store(
        store: Arc<dyn ObjectStore>,
        record_sha256: bool,
        description: impl Into<String>,
    ) -> Self {
        Self {
            store,
            local_opt: None,
            record_sha256,
            description: description.into(),
        }
    }

    /// Returns the underlying `object_store`, whose paths are the keys of this store.
    pub fn object_store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    pub(crate) fn store(&self) -> &dyn ObjectStore {
        self.store.as_ref()
    }

    pub(crate) fn local_backend(&self) -> Option<&LocalFileSystem> {
        self.local_opt.as_deref()
    }

    pub(crate) fn record_sha256(&self) -> bool {
        self.record_sha256
    }
}

/// Converts a key to an `object_store` path, refusing keys the path would silently rewrite
/// (a leading or trailing `/`), so that two keys never alias one object.
pub(crate) fn object_path(key: &ObjectKey) -> StorageResult<ObjectPath> {
    let key_str = key.as_str();
    let invalid = |reason: &str| {
        StorageError::new(StorageErrorKind::InvalidKey, format!("{reason} for object"))
            .with_key(key)
    };
    if key_str.is_empty() || key_str.starts_with('/') || key_str.ends_with('/') {
        return Err(invalid("empty key or key with a leading or trailing `/`"));
    }
    ObjectPath::parse(key_str)
        .map_err(|error| invalid("invalid characters or segments").with_source(error))
}

#[async_trait]
impl BlobStore for ObjectStoreBlobStore {
    #[tracing::instrument(name = "storage.put", skip_all, fields(object_key = %key))]
    async fn put_file(
        &self,
        key: &ObjectKey,
        path: &FsPath,
        sha256_hex: &str,
    ) -> StorageResult<()> {
        crate::upload::put_file(self, key, path, sha256_hex)
            .await
            .inspect_err(count_error("put"))
    }

    #[tracing::instrument(name = "storage.put", skip_all, fields(object_key = %key))]
    async fn put_spooled(
        &self,
        key: &ObjectKey,
        path: &FsPath,
        sha256_hex: &str,
    ) -> StorageResult<()> {
        crate::upload::put_spooled(self, key, path, sha256_hex)
            .await
            .inspect_err(count_error("put"))
    }

    #[tracing::instrument(name = "storage.get", skip_all, fields(object_key = %key))]
    async fn get(&self, key: &ObjectKey) -> StorageResult<(u64, ByteStream)> {
        const CONTEXT: &str = "failed to read object";
        let location = object_path(key)?;
        let result = self
            .store
            .get(&location)
            .await
            .map_err(|error| StorageError::from_object_store(error, CONTEXT, Some(key)))
            .inspect_err(count_error("get"))?;
        let size_bytes = result.meta.size;
        let stream: ByteStream = match result.payload {
            // `object_store` streams local files 8 KiB per blocking task; larger reads keep
            // multi-GB retrievals cheap.
            GetResultPayload::File(file, _) => local_file_stream(file, result.range, key.clone()),
            GetResultPayload::Stream(stream) => {
                let stream_key = key.clone();
                stream
                    .map_err(move |error| {
                        StorageError::from_object_store(error, CONTEXT, Some(&stream_key))
                    })
                    .boxed()
            }
        };
        Ok((size_bytes, stream))
    }

    #[tracing::instrument(name = "storage.get_range", skip_all, fields(object_key = %key))]
    async fn get_range(&self, key: &ObjectKey, range: Range<u64>) -> StorageResult<Bytes> {
        const CONTEXT: &str = "failed to read range of object";
        let location = object_path(key)?;
        if range.start > range.end {
            return Err(StorageError::new(
                StorageErrorKind::Other,
                format!(
                    "{CONTEXT} (range {}..{} is reversed)",
                    range.start, range.end
                ),
            )
            .with_key(key));
        }
        if range.is_empty() {
            // Backends refuse empty ranges; the object must still exist.
            return match self.head(key).await? {
                Some(_) => Ok(Bytes::new()),
                None => Err(StorageError::new(StorageErrorKind::NotFound, CONTEXT).with_key(key)),
            };
        }
        let num_bytes_requested = range.end - range.start;
        let bytes = match self.local_backend() {
            // One blocking task that reads straight into an unfilled buffer (`object_store`
            // zero-fills it first and asks for the file's metadata): frame reads are small
            // and frequent, and each saved step shows in their latency.
            Some(local) => {
                let path = local
                    .path_to_filesystem(&location)
                    .map_err(|error| StorageError::from_object_store(error, CONTEXT, Some(key)))?;
                let range = range.clone();
                tokio::task::spawn_blocking(move || read_local_range(&path, range))
                    .await
                    .map_err(std::io::Error::other)
                    .and_then(|result| result)
                    .map_err(|error| {
                        if error.kind() == std::io::ErrorKind::NotFound {
                            // The object's own file is missing: the object is not there.
                            StorageError::new(StorageErrorKind::NotFound, CONTEXT)
                                .with_key(key)
                                .with_source(error)
                        } else {
                            StorageError::from_io(error, CONTEXT).with_key(key)
                        }
                    })
            }
            None => self
                .store
                .get_range(&location, range.clone())
                .await
                .map_err(|error| StorageError::from_object_store(error, CONTEXT, Some(key))),
        }
        .inspect_err(count_error("get_range"))?;
        if bytes.len() as u64 != num_bytes_requested {
            // Some stores clip a range past the end instead of failing.
            return Err(StorageError::new(
                StorageErrorKind::Other,
                format!(
                    "{CONTEXT} (range {}..{} ends past the object: got {} bytes)",
                    range.start,
                    range.end,
                    bytes.len()
                ),
            )
            .with_key(key));
        }
        Ok(bytes)
    }

    #[tracing::instrument(name = "storage.head", skip_all, fields(object_key = %key))]
    async fn head(&self, key: &ObjectKey) -> StorageResult<Option<ObjectMeta>> {
        let location = object_path(key)?;
        match self.store.head(&location).await {
            Ok(meta) => Ok(Some(ObjectMeta {
                key: key.clone(),
                size_bytes: meta.size,
            })),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(error) => Err(StorageError::from_object_store(
                error,
                "failed to read metadata of object",
                Some(key),
            )),
        }
    }

    #[tracing::instrument(name = "storage.delete", skip_all, fields(object_key = %key))]
    async fn delete(&self, key: &ObjectKey) -> StorageResult<()> {
        let location = object_path(key)?;
        match self.store.delete(&location).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(error) => Err(StorageError::from_object_store(
                error,
                "failed to delete object",
                Some(key),
            ))
            .inspect_err(count_error("delete")),
        }
    }

    async fn list(&self, prefix: &str) -> StorageResult<Vec<ObjectMeta>> {
        let context = || format!("failed to list objects under `{prefix}`");
        // `object_store` lists whole path segments; the trait promises a plain string prefix,
        // so list the enclosing directory and filter.
        let directory_opt = match prefix.rsplit_once('/') {
            Some((directory, _)) if !directory.is_empty() => {
                Some(ObjectPath::parse(directory).map_err(|error| {
                    StorageError::new(StorageErrorKind::InvalidKey, context()).with_source(error)
                })?)
            }
            _ => None,
        };
        let mut objects: Vec<ObjectMeta> = self
            .store
            .list(directory_opt.as_ref())
            .map_err(|error| StorageError::from_object_store(error, context(), None))
            .try_filter_map(|meta| {
                let key_str = meta.location.as_ref();
                let object_opt = key_str.starts_with(prefix).then(|| ObjectMeta {
                    key: ObjectKey::from_stored(key_str),
                    size_bytes: meta.size,
                });
                futures::future::ready(Ok(object_opt))
            })
            .try_collect()
            .await?;
        objects.sort_by(|left, right| left.key.cmp(&right.key));
        Ok(objects)
    }

    fn describe(&self) -> String {
        self.description.clone()
    }
}

/// Streams `range` of a local object file in large chunks, each read on the blocking pool.
/// Counts a failed operation in `strata_store_errors_total`; a missing object is an answer,
/// not a failure of the store.
fn count_error(op: &'static str) -> impl Fn(&StorageError) {
    move |error| {
        if error.kind != StorageErrorKind::NotFound {
            strata_telemetry::metrics::record_store_error(op);
        }
    }
}

/// Reads `range` of a local file; fewer bytes than asked for when the file ends first (the
/// caller reports that).
fn read_local_range(path: &FsPath, range: Range<u64>) -> std::io::Result<Bytes> {
    let mut file = std::fs::File::open(path)?;
    file.seek(SeekFrom::Start(range.start))?;
    let num_bytes = range.end - range.start;
    // `read_to_end` fills spare capacity without zeroing it first.
    let mut buffer = Vec::with_capacity(usize::try_from(num_bytes).unwrap_or(0));
    file.take(num_bytes).read_to_end(&mut buffer)?;
    Ok(Bytes::from(buffer))
}

fn local_file_stream(file: std::fs::File, range: Range<u64>, key: ObjectKey) -> ByteStream {
    struct State {
        file: std::fs::File,
        position: u64,
        end: u64,
        seeked: bool,
    }
    let state = State {
        file,
        position: range.start,
        end: range.end,
        seeked: false,
    };
    futures::stream::try_unfold(state, move |mut state| {
        let chunk_key = key.clone();
        async move {
            if state.position >= state.end {
                return Ok(None);
            }
            let read_result = tokio::task::spawn_blocking(move || {
                if !state.seeked {
                    state.file.seek(SeekFrom::Start(state.position))?;
                    state.seeked = true;
                }
                let num_bytes = (state.end - state.position).min(LOCAL_READ_CHUNK_BYTES);
                // `read_to_end` fills spare capacity without zeroing it first.
                let mut buffer = Vec::with_capacity(num_bytes as usize);
                (&mut state.file).take(num_bytes).read_to_end(&mut buffer)?;
                if buffer.len() as u64 != num_bytes {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "object shorter than its size",
                    ));
                }
                state.position += num_bytes;
                Ok::<_, std::io::Error>((Bytes::from(buffer), state))
            })
            .await
            .map_err(std::io::Error::other)
            .and_then(|result| result);
            match read_result {
                Ok((chunk, next_state)) => Ok(Some((chunk, next_state))),
                Err(error) => {
                    Err(StorageError::from_io(error, "failed to read object").with_key(&chunk_key))
                }
            }
        }
    })
    .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_object_path_refuses_aliasing_keys() {
        for bad_key in ["", "/a/b", "a/b/", "a//b", "a/../b", "a/./b"] {
            let error = object_path(&ObjectKey::from_stored(bad_key)).unwrap_err();
            assert_eq!(error.kind, StorageErrorKind::InvalidKey, "{bad_key:?}");
        }
        let key = ObjectKey::from_stored("instances/1.2.3/1.2.3.4/1.2.3.4.5/ab.dcm");
        assert_eq!(object_path(&key).unwrap().as_ref(), key.as_str());
    }
}
