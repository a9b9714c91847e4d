//! `put_file`: streams a local file into the store, single PUT or multipart, verifying its
//! sha256 before the object becomes visible.

use std::fs::File;
use std::io::{ErrorKind, Read};
use std::path::{Path as FsPath, PathBuf};

use bytes::Bytes;
use object_store::{
    Attribute, AttributeValue, Attributes, MultipartUpload, PutMultipartOptions, PutOptions,
    PutPayload,
};
use sha2::{Digest, Sha256};
use strata_types::ObjectKey;
use tokio::task::JoinSet;
use tracing::{debug, warn};

use crate::error::{StorageError, StorageErrorKind, StorageResult};
use crate::store::{ObjectStoreBlobStore, object_path};

/// Files smaller than this are sent in one PUT; larger ones as a multipart upload.
pub const SINGLE_PUT_MAX_BYTES: u64 = 8 * 1024 * 1024;
/// The smallest multipart part; parts grow for huge files to stay under the part-count limit.
const MIN_PART_BYTES: u64 = 8 * 1024 * 1024;
/// S3 allows 10,000 parts; keep a margin.
const MAX_NUM_PARTS: u64 = 9_000;
/// Parts uploaded at once; with the part being read, memory stays near
/// `(MAX_CONCURRENT_PARTS + 1) * part size` whatever the file size.
const MAX_CONCURRENT_PARTS: usize = 4;
/// The user-metadata name of the content hash (`x-amz-meta-sha256` on S3).
pub const SHA256_METADATA_NAME: &str = "sha256";

const CONTEXT: &str = "failed to upload object";

pub(crate) async fn put_file(
    blob_store: &ObjectStoreBlobStore,
    key: &ObjectKey,
    path: &FsPath,
    sha256_hex: &str,
) -> StorageResult<()> {
    let location = object_path(key)?;
    if sha256_hex.len() != 64 || !sha256_hex.bytes().all(|byte| byte.is_ascii_hexdigit()) {
        return Err(StorageError::new(
            StorageErrorKind::Integrity,
            format!("{CONTEXT} (expected sha256 is not 64 hex digits)"),
        )
        .with_key(key));
    }
    let expected_sha256 = sha256_hex.to_ascii_lowercase();
    let source = SourceFile::open(path.to_path_buf())
        .await
        .map_err(|error| error.with_key(key))?;
    let attributes = if blob_store.record_sha256() {
        Attributes::from_iter([(
            Attribute::Metadata(SHA256_METADATA_NAME.into()),
            AttributeValue::from(expected_sha256.clone()),
        )])
    } else {
        Attributes::new()
    };
    let num_bytes = source.len;
    if num_bytes < SINGLE_PUT_MAX_BYTES {
        let (read_source, content) = source
            .read_chunk(num_bytes)
            .await
            .map_err(|error| error.with_key(key))?;
        check_sha256(&read_source.finish_sha256(), &expected_sha256, key)?;
        let options = PutOptions {
            attributes,
            ..PutOptions::default()
        };
        blob_store
            .store()
            .put_opts(&location, PutPayload::from_bytes(content), options)
            .await
            .map_err(|error| StorageError::from_object_store(error, CONTEXT, Some(key)))?;
    } else {
        let options = PutMultipartOptions {
            attributes,
            ..PutMultipartOptions::default()
        };
        let upload = blob_store
            .store()
            .put_multipart_opts(&location, options)
            .await
            .map_err(|error| StorageError::from_object_store(error, CONTEXT, Some(key)))?;
        let mut writer = PartWriter::new(upload);
        let uploaded = upload_parts(&mut writer, source, &expected_sha256, key).await;
        match uploaded {
            Ok(()) => writer.complete().await,
            Err(error) => {
                writer.abort().await;
                Err(error)
            }
        }
        .map_err(|error| error.with_key(key))?;
    }
    debug!(key = %key, num_bytes, "object uploaded");
    Ok(())
}

/// `put_spooled` for every backend: a local store links the file into place (one write of
/// the bytes, two fsyncs: file and directory); other stores, or a spool on another
/// filesystem, copy it with [`put_file`].
pub(crate) async fn put_spooled(
    blob_store: &ObjectStoreBlobStore,
    key: &ObjectKey,
    path: &FsPath,
    sha256_hex: &str,
) -> StorageResult<()> {
    let Some(local) = blob_store.local_backend() else {
        return put_file(blob_store, key, path, sha256_hex).await;
    };
    let location = object_path(key)?;
    let target = local
        .path_to_filesystem(&location)
        .map_err(|error| StorageError::from_object_store(error, CONTEXT, Some(key)))?;
    let source = path.to_path_buf();
    let linked = strata_types::blocking::run_blocking(move || link_into_place(&source, &target))
        .await
        .map_err(|error| {
            StorageError::new(StorageErrorKind::Io, CONTEXT)
                .with_key(key)
                .with_source(std::io::Error::other(error))
        })?;
    match linked {
        Ok(()) => {
            debug!(key = %key, "object linked into place");
            Ok(())
        }
        // Another filesystem, or one without hard links: copy instead.
        Err(error)
            if matches!(
                error.kind(),
                ErrorKind::CrossesDevices | ErrorKind::PermissionDenied | ErrorKind::Unsupported
            ) =>
        {
            debug!(key = %key, %error, "cannot link the spool file into place; copying it");
            put_file(blob_store, key, path, sha256_hex).await
        }
        Err(error) => Err(StorageError::from_io(error, CONTEXT.to_owned()).with_key(key)),
    }
}

/// Makes `source` durable and visible at `target`: fsync the file, create the directories
/// (fsyncing the parent of each one created), hard-link, fsync the directory. An existing
/// `target` is the same object (keys are content-addressed) and is kept.
fn link_into_place(source: &FsPath, target: &FsPath) -> std::io::Result<()> {
    File::open(source)?.sync_all()?;
    let directory = target
        .parent()
        .ok_or_else(|| std::io::Error::other("object path without a directory"))?;
    // A concurrent delete may remove a directory it left empty between our creating it and
    // linking into it: try again.
    let mut attempts_left = 3;
    loop {
        create_dir_all_durable(directory)?;
        match std::fs::hard_link(source, target) {
            Ok(()) => break,
            Err(error) if error.kind() == ErrorKind::AlreadyExists => return Ok(()),
            Err(error) if error.kind() == ErrorKind::NotFound && attempts_left > 0 => {
                attempts_left -= 1;
            }
            Err(error) => return Err(error),
        }
    }
    File::open(directory)?.sync_all()
}

/// `create_dir_all` that also fsyncs the parent of every directory it creates, so that the
/// new directories survive a crash.
fn create_dir_all_durable(directory: &FsPath) -> std::io::Result<()> {
    if directory.is_dir() {
        return Ok(());
    }
    let mut missing: Vec<&FsPath> = Vec::new();
    let mut current = Some(directory);
    while let Some(candidate) = current {
        if candidate.is_dir() {
            break;
        }
        missing.push(candidate);
        current = candidate.parent();
    }
    std::fs::create_dir_all(directory)?;
    for created in missing.iter().rev() {
        if let Some(parent) = created.parent() {
            File::open(parent)?.sync_all()?;
        }
    }
    Ok(())
}

/// Reads the file part by part into `writer`, which uploads up to `MAX_CONCURRENT_PARTS`
/// parts while the next one is read, then checks the sha256 (before completion, so a mismatch
/// leaves nothing visible).
async fn upload_parts(
    writer: &mut PartWriter,
    mut source: SourceFile,
    expected_sha256: &str,
    key: &ObjectKey,
) -> StorageResult<()> {
    let part_size = part_size_bytes(source.len);
    while source.remaining() > 0 {
        let num_bytes = source.remaining().min(part_size);
        let (next_source, part) = source
            .read_chunk(num_bytes)
            .await
            .map_err(|error| error.with_key(key))?;
        source = next_source;
        writer.wait_for_capacity(MAX_CONCURRENT_PARTS).await?;
        writer.put_part(part);
    }
    check_sha256(&source.finish_sha256(), expected_sha256, key)
}

fn check_sha256(actual_sha256: &str, expected_sha256: &str, key: &ObjectKey) -> StorageResult<()> {
    if actual_sha256 == expected_sha256 {
        return Ok(());
    }
    Err(StorageError::new(
        StorageErrorKind::Integrity,
        format!("{CONTEXT} (content sha256 {actual_sha256} differs from {expected_sha256})"),
    )
    .with_key(key))
}

/// Picks a part size of at least `MIN_PART_BYTES`, whole MiB, keeping the number of parts
/// under `MAX_NUM_PARTS`.
fn part_size_bytes(num_bytes: u64) -> u64 {
    const MIB: u64 = 1024 * 1024;
    let needed = num_bytes.div_ceil(MAX_NUM_PARTS).div_ceil(MIB) * MIB;
    needed.max(MIN_PART_BYTES)
}

/// A multipart upload with its parts in flight. Dropped before it completes (a cancelled
/// `put_file`), it aborts the upload in a spawned task, so no staging file or incomplete
/// upload is left behind.
struct PartWriter {
    upload_opt: Option<Box<dyn MultipartUpload>>,
    parts_in_flight: JoinSet<object_store::Result<()>>,
}

impl PartWriter {
    fn new(upload: Box<dyn MultipartUpload>) -> Self {
        Self {
            upload_opt: Some(upload),
            parts_in_flight: JoinSet::new(),
        }
    }

    fn upload(&mut self) -> &mut Box<dyn MultipartUpload> {
        self.upload_opt
            .as_mut()
            .expect("the upload is only taken by drop")
    }

    /// Starts uploading the next part. Parts are numbered in call order.
    fn put_part(&mut self, part: Bytes) {
        let part_upload = self.upload().put_part(PutPayload::from_bytes(part));
        self.parts_in_flight.spawn(part_upload);
    }

    /// Waits until fewer than `max_in_flight` parts are uploading, failing on the first part
    /// that failed.
    async fn wait_for_capacity(&mut self, max_in_flight: usize) -> StorageResult<()> {
        while self.parts_in_flight.len() >= max_in_flight.max(1) {
            self.join_next_part().await?;
        }
        Ok(())
    }

    async fn join_next_part(&mut self) -> StorageResult<()> {
        match self.parts_in_flight.join_next().await {
            None | Some(Ok(Ok(()))) => Ok(()),
            Some(Ok(Err(error))) => Err(StorageError::from_object_store(error, CONTEXT, None)),
            Some(Err(join_error)) => {
                Err(StorageError::new(StorageErrorKind::Other, CONTEXT).with_source(join_error))
            }
        }
    }

    /// Waits for every part, then completes the upload; aborts it on failure.
    async fn complete(&mut self) -> StorageResult<()> {
        let mut result = Ok(());
        while !self.parts_in_flight.is_empty() && result.is_ok() {
            result = self.join_next_part().await;
        }
        if result.is_ok() {
            result = self
                .upload()
                .complete()
                .await
                .map(|_| ())
                .map_err(|error| StorageError::from_object_store(error, CONTEXT, None));
        }
        match result {
            Ok(()) => {
                self.upload_opt = None;
                Ok(())
            }
            Err(error) => {
                self.abort().await;
                Err(error)
            }
        }
    }

    /// Cancels the parts in flight and aborts the upload, logging a failure to abort.
    async fn abort(&mut self) {
        self.parts_in_flight.shutdown().await;
        if let Some(mut upload) = self.upload_opt.take()
            && let Err(error) = upload.abort().await
        {
            warn!(%error, "failed to abort multipart upload");
        }
    }
}

impl Drop for PartWriter {
    fn drop(&mut self) {
        // Dropping `parts_in_flight` aborts the part uploads.
        let Some(mut upload) = self.upload_opt.take() else {
            return;
        };
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if let Err(error) = upload.abort().await {
                    warn!(%error, "failed to abort cancelled multipart upload");
                }
            });
        }
    }
}

/// The file being uploaded: its length when opened, and a running sha256 of what was read.
/// Reads run on the blocking pool.
struct SourceFile {
    file: File,
    path: PathBuf,
    len: u64,
    num_bytes_read: u64,
    hasher: Sha256,
}

impl SourceFile {
    async fn open(path: PathBuf) -> StorageResult<Self> {
        let context = format!("failed to open `{}` for upload to object", path.display());
        let opened = tokio::task::spawn_blocking(move || {
            let file = File::open(&path)?;
            let metadata = file.metadata()?;
            if !metadata.is_file() {
                return Err(std::io::Error::new(
                    ErrorKind::InvalidInput,
                    "not a regular file",
                ));
            }
            Ok(Self {
                file,
                path,
                len: metadata.len(),
                num_bytes_read: 0,
                hasher: Sha256::new(),
            })
        })
        .await
        .map_err(std::io::Error::other)
        .and_then(|result| result);
        opened.map_err(|error| StorageError::from_io(error, context))
    }

    fn remaining(&self) -> u64 {
        self.len - self.num_bytes_read
    }

    /// Reads the next `num_bytes`, failing with `Integrity` if the file ends early (it shrank
    /// after it was opened).
    async fn read_chunk(mut self, num_bytes: u64) -> StorageResult<(Self, Bytes)> {
        debug_assert!(num_bytes <= self.remaining());
        let read = tokio::task::spawn_blocking(move || {
            let mut buffer = vec![0u8; num_bytes as usize];
            let result = self.file.read_exact(&mut buffer);
            if result.is_ok() {
                self.hasher.update(&buffer);
                self.num_bytes_read += num_bytes;
            }
            (self, buffer, result)
        })
        .await;
        let (source, buffer, result) = read.map_err(|error| {
            StorageError::new(StorageErrorKind::Other, CONTEXT).with_source(error)
        })?;
        match result {
            Ok(()) => Ok((source, Bytes::from(buffer))),
            Err(error) if error.kind() == ErrorKind::UnexpectedEof => Err(StorageError::new(
                StorageErrorKind::Integrity,
                format!(
                    "{CONTEXT} (`{}` shrank while it was read)",
                    source.path.display()
                ),
            )
            .with_source(error)),
            Err(error) => Err(StorageError::from_io(
                error,
                format!(
                    "failed to read `{}` for upload to object",
                    source.path.display()
                ),
            )),
        }
    }

    fn finish_sha256(self) -> String {
        hex::encode(self.hasher.finalize())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_part_size_keeps_parts_under_the_limit() {
        assert_eq!(part_size_bytes(20 << 20), MIN_PART_BYTES);
        assert_eq!(part_size_bytes(8 << 30), MIN_PART_BYTES);
        let huge = 200u64 << 30;
        let part_size = part_size_bytes(huge);
        assert!(part_size > MIN_PART_BYTES);
        assert_eq!(part_size % (1 << 20), 0);
        assert!(huge.div_ceil(part_size) <= MAX_NUM_PARTS);
    }
}
