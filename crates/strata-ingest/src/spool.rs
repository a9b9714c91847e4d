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
        let mut writer = tokio::io::BufWriter::with_capacity(256 * 1024, file);
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
