//! `ArchiveClient`: the S3 operations `object_store` lacks, on `aws-sdk-s3`: a PUT with a
//! storage class and a SHA-256 checked by the server, RestoreObject, and the restore status
//! and storage class of HeadObject.

use std::path::Path;

use aws_sdk_s3::Client;
use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::error::ProvideErrorMetadata;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{GlacierJobParameters, RestoreRequest, StorageClass, Tier};
use base64::Engine as _;
use strata_config::S3Config;
use strata_storage::{SHA256_METADATA_NAME, StorageError, StorageErrorKind, StorageResult};
use strata_types::ObjectKey;

/// The largest object written with one PUT (S3's limit); larger objects cannot go to a tier with
/// a storage class (see docs/tiering.md).
pub const ARCHIVE_PUT_MAX_BYTES: u64 = 5 * 1024 * 1024 * 1024;

/// What HeadObject says about an object's readability.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RestoreStatus {
    /// The object is not in an archive class, or is restored: it can be read.
    Readable,
    /// The object is archived and no restore is running.
    Archived,
    /// A restore is running.
    InProgress,
    /// The object does not exist.
    Missing,
}

/// What HeadObject returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveHead {
    pub size_bytes: u64,
    pub sha256_opt: Option<String>,
    pub storage_class_opt: Option<String>,
    pub status: RestoreStatus,
}

/// An `aws-sdk-s3` client on one bucket and key prefix.
#[derive(Debug, Clone)]
pub struct ArchiveClient {
    client: Client,
    bucket: String,
    prefix: String,
}

impl ArchiveClient {
    /// Builds a client for `s3://bucket/prefix` with the settings of `config`; unset
    /// credentials and region fall back to `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
    /// `AWS_REGION` and `AWS_ENDPOINT_URL`.
    pub fn new(bucket: &str, prefix: &str, config: &S3Config) -> StorageResult<Self> {
        let env = |name: &str| std::env::var(name).ok().filter(|value| !value.is_empty());
        let secret_opt = match &config.secret_access_key_file {
            Some(path) => Some(
                std::fs::read_to_string(path)
                    .map_err(|error| {
                        StorageError::new(
                            StorageErrorKind::Config,
                            format!("failed to read the s3 secret file `{}`", path.display()),
                        )
                        .with_source(error)
                    })?
                    .trim()
                    .to_owned(),
            ),
            None => config.secret_access_key.clone(),
        };
        let access_key_opt = config
            .access_key_id
            .clone()
            .or_else(|| env("AWS_ACCESS_KEY_ID"));
        let secret_opt = secret_opt.or_else(|| env("AWS_SECRET_ACCESS_KEY"));
        let (Some(access_key_id), Some(secret_access_key)) = (access_key_opt, secret_opt) else {
            return Err(StorageError::new(
                StorageErrorKind::Config,
                format!("s3 tier `s3://{bucket}/{prefix}` needs credentials"),
            ));
        };
        let region = config
            .region
            .clone()
            .or_else(|| env("AWS_REGION"))
            .unwrap_or_else(|| strata_storage::DEFAULT_S3_REGION.to_owned());
        let mut builder = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(region))
            .credentials_provider(Credentials::new(
                access_key_id,
                secret_access_key,
                None,
                None,
                "strata-config",
            ))
            .force_path_style(config.path_style)
            // Self-hosted stores do not all accept the newer default CRC headers.
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
        if let Some(endpoint) = config.endpoint.clone().or_else(|| env("AWS_ENDPOINT_URL")) {
            builder = builder.endpoint_url(endpoint);
        }
        Ok(Self {
            client: Client::from_conf(builder.build()),
            bucket: bucket.to_owned(),
            prefix: prefix.trim_matches('/').to_owned(),
        })
    }

    fn full_key(&self, key: &ObjectKey) -> String {
        if self.prefix.is_empty() {
            key.as_str().to_owned()
        } else {
            format!("{}/{}", self.prefix, key.as_str())
        }
    }

    /// Uploads the file at `path` with one PUT, in `storage_class_opt`, with the SHA-256 as
    /// user metadata and as the request checksum the server verifies before storing.
    pub async fn put_file(
        &self,
        key: &ObjectKey,
        path: &Path,
        sha256_hex: &str,
        num_bytes: u64,
        storage_class_opt: Option<&str>,
    ) -> StorageResult<()> {
        const CONTEXT: &str = "failed to write archived object";
        if num_bytes > ARCHIVE_PUT_MAX_BYTES {
            return Err(StorageError::new(
                StorageErrorKind::Other,
                format!("{CONTEXT} (larger than the 5 GiB single PUT limit)"),
            )
            .with_key(key));
        }
        let digest = hex::decode(sha256_hex).map_err(|error| {
            StorageError::new(StorageErrorKind::Integrity, CONTEXT)
                .with_key(key)
                .with_source(error)
        })?;
        let body = ByteStream::from_path(path).await.map_err(|error| {
            StorageError::new(StorageErrorKind::Io, CONTEXT)
                .with_key(key)
                .with_source(error)
        })?;
        let mut request = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(self.full_key(key))
            .body(body)
            .content_length(i64::try_from(num_bytes).unwrap_or(i64::MAX))
            .metadata(SHA256_METADATA_NAME, sha256_hex)
            .checksum_sha256(base64::engine::general_purpose::STANDARD.encode(digest));
        if let Some(storage_class) = storage_class_opt {
            request = request.storage_class(StorageClass::from(storage_class));
        }
        request
            .send()
            .await
            .map_err(|error| sdk_error(error, CONTEXT, key))?;
        Ok(())
    }

    /// Returns the object's size, checksum metadata, storage class and restore status.
    pub async fn head(&self, key: &ObjectKey) -> StorageResult<ArchiveHead> {
        let result = self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(self.full_key(key))
            .send()
            .await;
        let output = match result {
            Ok(output) => output,
            Err(error) => {
                let not_found = error
                    .as_service_error()
                    .is_some_and(|service_error| service_error.is_not_found());
                if not_found {
                    return Ok(ArchiveHead {
                        size_bytes: 0,
                        sha256_opt: None,
                        storage_class_opt: None,
                        status: RestoreStatus::Missing,
                    });
                }
                return Err(sdk_error(error, "failed to read metadata of object", key));
            }
        };
        let storage_class_opt = output
            .storage_class()
            .map(|class| class.as_str().to_owned());
        let archived = storage_class_opt
            .as_deref()
            .is_some_and(|class| ["GLACIER", "DEEP_ARCHIVE"].contains(&class));
        let status = match output.restore() {
            Some(restore) if restore.contains("ongoing-request=\"true\"") => {
                RestoreStatus::InProgress
            }
            Some(_) => RestoreStatus::Readable,
            None if archived => RestoreStatus::Archived,
            None => RestoreStatus::Readable,
        };
        Ok(ArchiveHead {
            size_bytes: output
                .content_length()
                .and_then(|length| u64::try_from(length).ok())
                .unwrap_or(0),
            sha256_opt: output
                .metadata()
                .and_then(|metadata| metadata.get(SHA256_METADATA_NAME))
                .cloned(),
            storage_class_opt,
            status,
        })
    }

    /// Starts a restore of an archived object for `days` days with the retrieval tier
    /// `retrieval_tier` (`Standard`, `Bulk`, `Expedited`). A restore already running is not
    /// an error.
    pub async fn restore(
        &self,
        key: &ObjectKey,
        days: u32,
        retrieval_tier: &str,
    ) -> StorageResult<()> {
        const CONTEXT: &str = "failed to restore object";
        let job = GlacierJobParameters::builder()
            .tier(Tier::from(retrieval_tier))
            .build()
            .map_err(|error| {
                StorageError::new(StorageErrorKind::Config, CONTEXT)
                    .with_key(key)
                    .with_source(error)
            })?;
        let request = RestoreRequest::builder()
            .days(i32::try_from(days).unwrap_or(i32::MAX))
            .glacier_job_parameters(job)
            .build();
        match self
            .client
            .restore_object()
            .bucket(&self.bucket)
            .key(self.full_key(key))
            .restore_request(request)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(error) if error.code() == Some("RestoreAlreadyInProgress") => Ok(()),
            Err(error) => Err(sdk_error(error, CONTEXT, key)),
        }
    }
}

fn sdk_error<E, R>(
    error: aws_sdk_s3::error::SdkError<E, R>,
    context: &str,
    key: &ObjectKey,
) -> StorageError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    use aws_sdk_s3::error::SdkError;
    let kind = match &error {
        SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) => StorageErrorKind::Unavailable,
        SdkError::ServiceError(service_error) => match service_error.err().code() {
            Some("NoSuchKey" | "NotFound") => StorageErrorKind::NotFound,
            Some("AccessDenied" | "InvalidAccessKeyId" | "SignatureDoesNotMatch") => {
                StorageErrorKind::PermissionDenied
            }
            Some("BadDigest" | "XAmzContentSHA256Mismatch" | "InvalidDigest") => {
                StorageErrorKind::Integrity
            }
            Some("SlowDown" | "ServiceUnavailable" | "InternalError") => {
                StorageErrorKind::Unavailable
            }
            _ => StorageErrorKind::Other,
        },
        _ => StorageErrorKind::Other,
    };
    let detail = error.code().unwrap_or("no error code").to_owned();
    StorageError::new(kind, format!("{context} ({detail})"))
        .with_key(key)
        .with_source(error)
}
