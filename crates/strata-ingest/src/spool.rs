//! Spooling received bytes to disk while hashing them.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use futures::{Stream, StreamExt};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use crate::IngestError;

/// A received object on local disk, with its size and SHA-256. The file is removed when the
/// value is dropped.
#[derive(Debug)]
pub struct SpooledObject {
    file: tempfile::TempPath,
    pub size_bytes: u64,
    pub sha256: String,
}

impl SpooledObject {
    /// Returns the path of the spooled file.
    pub fn path(&self) -> &Path {
        &self.file
    }

    /// Streams `body` into a new file under `spool_dir`, refusing more than `max_bytes`.
    pub async fn from_stream<S, E>(
        spool_dir: &Path,
        body: S,
        max_bytes: u64,
    ) -> Result<Self, IngestError>
    where
        S: Stream<Item = Result<Bytes, E>>,
        E: std::fmt::Display,
    {
        let temp_path = new_spool_path(spool_dir).await?;
        let file = tokio::fs::File::create(&temp_path)
            .await
            .map_err(IngestError::Spool)?;
        let mut writer = tokio::io::BufWriter::with_capacity(SPOOL_BUFFER_BYTES, file);
        let mut hasher = Sha256::new();
        let mut size_bytes = 0u64;
        let mut body = std::pin::pin!(body);
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|error| IngestError::Body(error.to_string()))?;
            size_bytes += chunk.len() as u64;
            if size_bytes > max_bytes {
                return Err(IngestError::TooLarge { limit: max_bytes });
            }
            hasher.update(&chunk);
            writer.write_all(&chunk).await.map_err(IngestError::Spool)?;
        }
        writer.flush().await.map_err(IngestError::Spool)?;
        Ok(Self {
            file: temp_path,
            size_bytes,
            sha256: hex::encode(hasher.finalize()),
        })
    }

    /// Copies a local file into the spool (bulk import), hashing it.
    pub async fn from_file(
        spool_dir: &Path,
        source: &Path,
        max_bytes: u64,
    ) -> Result<Self, IngestError> {
        let file = tokio::fs::File::open(source)
            .await
            .map_err(IngestError::Spool)?;
        let stream = tokio_util::io::ReaderStream::with_capacity(file, 256 * 1024);
        Self::from_stream(spool_dir, stream, max_bytes).await
    }

    /// Wraps an already written spool file (used when a Part 10 header is added).
    pub(crate) fn from_parts(file: tempfile::TempPath, size_bytes: u64, sha256: String) -> Self {
        Self {
            file,
            size_bytes,
            sha256,
        }
    }
}

/// Writes a received object into the spool from a blocking thread, hashing it as it goes:
/// the DIMSE listener, whose association threads already block, writes each received
/// fragment directly instead of handing it to the async runtime.
pub struct SpoolWriter {
    writer: std::io::BufWriter<std::fs::File>,
    file: tempfile::TempPath,
    hasher: Sha256,
    size_bytes: u64,
    max_bytes: u64,
}

impl SpoolWriter {
    /// Creates a new spool file under `spool_dir` that refuses more than `max_bytes`.
    pub fn create(spool_dir: &Path, max_bytes: u64) -> Result<Self, IngestError> {
        std::fs::create_dir_all(spool_dir).map_err(IngestError::Spool)?;
        let (file, path) = tempfile::Builder::new()
            .prefix("recv-")
            .suffix(".dcm")
            .tempfile_in(spool_dir)
            .map_err(IngestError::Spool)?
            .into_parts();
        Ok(Self {
            writer: std::io::BufWriter::with_capacity(FRAGMENT_BUFFER_BYTES, file),
            file: path,
            hasher: Sha256::new(),
            size_bytes: 0,
            max_bytes,
        })
    }

    /// Appends `bytes`; fails with `TooLarge` once the object exceeds the limit.
    pub fn write(&mut self, bytes: &[u8]) -> Result<(), IngestError> {
        use std::io::Write;
        self.size_bytes += bytes.len() as u64;
        if self.size_bytes > self.max_bytes {
            return Err(IngestError::TooLarge {
                limit: self.max_bytes,
            });
        }
        self.hasher.update(bytes);
        self.writer.write_all(bytes).map_err(IngestError::Spool)
    }

    /// Flushes the file and returns the spooled object.
    pub fn finish(self) -> Result<SpooledObject, IngestError> {
        use std::io::Write;
        let mut writer = self.writer;
        writer.flush().map_err(IngestError::Spool)?;
        Ok(SpooledObject {
            file: self.file,
            size_bytes: self.size_bytes,
            sha256: hex::encode(self.hasher.finalize()),
        })
    }
}

/// Write buffer of a spool file: large writes, few system calls.
const SPOOL_BUFFER_BYTES: usize = 256 * 1024;

/// Write buffer of a spool file written in fragments (DIMSE PDVs): small fragments are
/// gathered, fragments at least this large (a 64 KiB PDU's) go to the file without a copy.
const FRAGMENT_BUFFER_BYTES: usize = 32 * 1024;

/// Reserves a new unique path in the spool directory; the file is deleted on drop.
pub(crate) async fn new_spool_path(spool_dir: &Path) -> Result<tempfile::TempPath, IngestError> {
    let spool_dir: PathBuf = spool_dir.to_owned();
    tokio::task::spawn_blocking(move || {
        std::fs::create_dir_all(&spool_dir)?;
        Ok::<_, std::io::Error>(
            tempfile::Builder::new()
                .prefix("recv-")
                .suffix(".dcm")
                .tempfile_in(&spool_dir)?
                .into_temp_path(),
        )
    })
    .await
    .map_err(|error| IngestError::Spool(std::io::Error::other(error)))?
    .map_err(IngestError::Spool)
}
