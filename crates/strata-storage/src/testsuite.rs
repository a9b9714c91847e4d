//! Test helpers for this crate and for end-to-end tests elsewhere (feature `testsuite`):
//! an in-process S3 server.

use std::io;
use std::path::Path;

use hyper_util::rt::TokioIo;
use s3s::auth::SimpleAuth;
use s3s::service::S3ServiceBuilder;
use strata_config::{S3Config, StorageConfig};
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};

use crate::error::StorageResult;
use crate::store::ObjectStoreBlobStore;

/// A real S3 protocol server (s3s-fs, objects kept in a temporary directory) listening on
/// `127.0.0.1` on a free port, with one bucket and static credentials. It runs as a task on
/// the current tokio runtime and stops when dropped.
///
/// ```no_run
/// # async fn example() {
/// use strata_storage::testsuite::InProcessS3;
/// let s3 = InProcessS3::start().await.unwrap();
/// let store = s3.blob_store("some/prefix").unwrap();
/// # }
/// ```
pub struct InProcessS3 {
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    /// The bucket created at start.
    pub bucket: String,
    /// The access key id the server accepts.
    pub access_key_id: String,
    /// The secret access key the server accepts.
    pub secret_access_key: String,
    /// The region clients sign with.
    pub region: String,
    data_dir: tempfile::TempDir,
    server: JoinHandle<()>,
}

impl InProcessS3 {
    /// Starts the server and creates the bucket `strata-test`.
    pub async fn start() -> io::Result<Self> {
        let bucket = "strata-test".to_owned();
        let access_key_id = "strata-test-access-key".to_owned();
        let secret_access_key = "strata-test-secret-key".to_owned();
        let data_dir = tempfile::tempdir()?;
        // s3s-fs maps each bucket to a directory under its root.
        tokio::fs::create_dir(data_dir.path().join(&bucket)).await?;
        let file_system = s3s_fs::FileSystem::new(data_dir.path())
            .map_err(|error| io::Error::other(format!("{error:?}")))?;
        let mut service_builder = S3ServiceBuilder::new(file_system);
        service_builder.set_auth(SimpleAuth::from_single(
            access_key_id.clone(),
            secret_access_key.clone(),
        ));
        let service = service_builder.build();

        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let endpoint = format!("http://{}", listener.local_addr()?);
        let server = tokio::spawn(async move {
            // Dropping the set (when this task is aborted) aborts every connection.
            let mut connections = JoinSet::new();
            loop {
                let socket = match listener.accept().await {
                    Ok((socket, _)) => socket,
                    Err(error) => {
                        tracing::warn!(%error, "in-process s3 failed to accept a connection");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let connection_service = service.clone();
                connections.spawn(async move {
                    let connection = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(socket), connection_service);
                    if let Err(error) = connection.await {
                        tracing::debug!(%error, "in-process s3 connection ended with an error");
                    }
                });
                while connections.try_join_next().is_some() {}
            }
        });
        Ok(Self {
            endpoint,
            bucket,
            access_key_id,
            secret_access_key,
            region: "us-east-1".to_owned(),
            data_dir,
            server,
        })
    }

    /// Returns the client settings for this server: its endpoint, credentials, path-style
    /// requests and plain HTTP.
    pub fn s3_config(&self) -> S3Config {
        S3Config {
            endpoint: Some(self.endpoint.clone()),
            region: Some(self.region.clone()),
            access_key_id: Some(self.access_key_id.clone()),
            secret_access_key: Some(self.secret_access_key.clone()),
            secret_access_key_file: None,
            path_style: true,
            allow_http: true,
        }
    }

    /// Returns a storage configuration for `s3://BUCKET/PREFIX` on this server (`prefix` may
    /// be empty), for [`crate::open_blob_store`] or a node configuration.
    pub fn storage_config(&self, prefix: &str) -> StorageConfig {
        let trimmed_prefix = prefix.trim_matches('/');
        let uri = if trimmed_prefix.is_empty() {
            format!("s3://{}", self.bucket)
        } else {
            format!("s3://{}/{trimmed_prefix}", self.bucket)
        };
        StorageConfig {
            uri,
            s3: self.s3_config(),
        }
    }

    /// Opens a store on this server's bucket under `prefix`, ignoring `AWS_*` variables.
    pub fn blob_store(&self, prefix: &str) -> StorageResult<ObjectStoreBlobStore> {
        ObjectStoreBlobStore::s3_with_env(&self.bucket, prefix, &self.s3_config(), Vec::new())
    }

    /// Returns the directory where the server keeps its buckets (one directory each).
    pub fn data_dir(&self) -> &Path {
        self.data_dir.path()
    }
}

impl Drop for InProcessS3 {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl std::fmt::Debug for InProcessS3 {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("InProcessS3")
            .field("endpoint", &self.endpoint)
            .field("bucket", &self.bucket)
            .finish_non_exhaustive()
    }
}
