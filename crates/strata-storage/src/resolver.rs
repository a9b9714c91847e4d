//! Opens the `BlobStore` named by `storage.uri`.

use std::sync::Arc;

use strata_config::StorageConfig;

use crate::blob_store::BlobStore;
use crate::error::{StorageError, StorageErrorKind, StorageResult};
use crate::store::ObjectStoreBlobStore;

/// Opens the store named by `config.uri`:
///
/// - `file://PATH`: a local directory, created if missing; `PATH` may be relative
///   (`file://./strata-data/objects`) or absolute (`file:///var/lib/strata/objects`);
/// - `ram://`: a new, empty in-memory store (each call returns a separate one);
/// - `s3://BUCKET[/PREFIX]`: an S3-compatible bucket configured by `config.s3`, see
///   [`ObjectStoreBlobStore::s3`].
///
/// Any other scheme is a `Config` error naming it. Runs blocking file-system calls (creating
/// the directory, reading a secret file): call it at start-up, not per request.
pub fn open_blob_store(config: &StorageConfig) -> StorageResult<Arc<dyn BlobStore>> {
    let uri = config.uri.trim();
    let config_error = |reason: String| StorageError::new(StorageErrorKind::Config, reason);
    let Some((scheme, rest)) = uri.split_once("://") else {
        return Err(config_error(format!(
            "storage uri `{uri}` has no scheme: expected `file://PATH`, `ram://` or \
             `s3://BUCKET[/PREFIX]`"
        )));
    };
    let store = match scheme {
        "file" => {
            if rest.is_empty() {
                return Err(config_error(
                    "storage uri `file://` needs a path".to_owned(),
                ));
            }
            ObjectStoreBlobStore::local(rest)?
        }
        "ram" => {
            if !rest.is_empty() {
                return Err(config_error(format!(
                    "storage uri `{uri}`: `ram://` takes no path"
                )));
            }
            ObjectStoreBlobStore::ram()
        }
        "s3" => {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(config_error(format!(
                    "storage uri `{uri}` needs a bucket: `s3://BUCKET[/PREFIX]`"
                )));
            }
            ObjectStoreBlobStore::s3(bucket, prefix, &config.s3)?
        }
        other => {
            return Err(config_error(format!(
                "unsupported storage uri scheme `{other}`: expected `file`, `ram` or `s3`"
            )));
        }
    };
    tracing::info!(store = %store.describe(), "object store opened");
    Ok(Arc::new(store))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn storage_config(uri: &str) -> StorageConfig {
        StorageConfig {
            uri: uri.to_owned(),
            ..StorageConfig::default()
        }
    }

    #[test]
    fn test_unknown_scheme_is_named() {
        let error = open_blob_store(&storage_config("ftp://host/dir"))
            .err()
            .unwrap();
        assert_eq!(error.kind, StorageErrorKind::Config);
        assert!(error.to_string().contains("`ftp`"), "{error}");
        let error = open_blob_store(&storage_config("/just/a/path"))
            .err()
            .unwrap();
        assert_eq!(error.kind, StorageErrorKind::Config);
    }

    #[test]
    fn test_ram_and_bad_s3_uris() {
        assert_eq!(
            open_blob_store(&storage_config("ram://"))
                .unwrap()
                .describe(),
            "ram://"
        );
        let error = open_blob_store(&storage_config("ram://x")).err().unwrap();
        assert_eq!(error.kind, StorageErrorKind::Config);
        let error = open_blob_store(&storage_config("s3:///prefix"))
            .err()
            .unwrap();
        assert_eq!(error.kind, StorageErrorKind::Config);
        let error = open_blob_store(&storage_config("s3://bucket/a//b"))
            .err()
            .unwrap();
        assert_eq!(error.kind, StorageErrorKind::Config);
    }
}
