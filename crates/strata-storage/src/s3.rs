//! The S3-compatible backend: `AmazonS3Builder` from `S3Config` and the standard `AWS_*`
//! environment.

use std::sync::Arc;
use std::time::Duration;

use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey, AwsCredential};
use object_store::prefix::PrefixStore;
use object_store::{ClientConfigKey, ClientOptions, ObjectStore, StaticCredentialProvider};
use strata_config::S3Config;

use tracing::warn;

use crate::error::{StorageError, StorageErrorKind, StorageResult};
use crate::store::ObjectStoreBlobStore;

/// Region used when neither the configuration nor the environment names one.
pub const DEFAULT_S3_REGION: &str = "us-east-1";

/// Time allowed to connect to the store.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Time allowed for a request to be sent and answered, and then between two reads of a
/// response body. No overall timeout: a multi-GB download to a slow client may take long.
const READ_TIMEOUT: Duration = Duration::from_secs(120);

impl ObjectStoreBlobStore {
    /// Opens the S3-compatible bucket `bucket`, keeping objects under `prefix` (a path inside
    /// the bucket; empty for the whole bucket).
    ///
    /// Settings left unset in `config` fall back to the standard `AWS_*` environment variables
    /// (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_REGION`,
    /// `AWS_ENDPOINT_URL`, web identity and container credentials); the region defaults to
    /// `us-east-1`. See [`ObjectStoreBlobStore::s3_with_env`].
    pub fn s3(bucket: &str, prefix: &str, config: &S3Config) -> StorageResult<Self> {
        Self::s3_with_env(bucket, prefix, config, std::env::vars())
    }

    /// Like [`ObjectStoreBlobStore::s3`], reading `AWS_*` variables from `env` instead of the
    /// process environment (tests pass an empty map).
    ///
    /// Credentials in `config` (`access_key_id`, and `secret_access_key_file`, whose content
    /// is trimmed, or else `secret_access_key`) replace the environment's credential chain,
    /// session token included; a half set in `config` is completed from
    /// `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY`. `path_style` picks path-style requests
    /// (`http://host/bucket/key`); otherwise the bucket is prepended to the endpoint's host.
    /// Plain-HTTP endpoints need `allow_http` (or `AWS_ALLOW_HTTP=true`). Uploads never rely on
    /// conditional PUT, which some S3-compatible stores ignore.
    pub fn s3_with_env(
        bucket: &str,
        prefix: &str,
        config: &S3Config,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> StorageResult<Self> {
        let config_error = |reason: String| StorageError::new(StorageErrorKind::Config, reason);
        if bucket.is_empty() || bucket.contains('/') {
            return Err(config_error(format!("invalid s3 bucket name `{bucket}`")));
        }
        let trimmed_prefix = prefix.trim_matches('/');
        let prefix_path_opt = if trimmed_prefix.is_empty() {
            None
        } else {
            let prefix_path = object_store::path::Path::parse(trimmed_prefix).map_err(|error| {
                config_error(format!("invalid s3 key prefix `{trimmed_prefix}`")).with_source(error)
            })?;
            Some(prefix_path)
        };

        let mut builder = AmazonS3Builder::new();
        let mut client_options = ClientOptions::new()
            .with_connect_timeout(CONNECT_TIMEOUT)
            .with_timeout_disabled()
            .with_read_timeout(READ_TIMEOUT);
        // What `AmazonS3Builder::from_env` does, on the given map.
        for (name, value) in env {
            if !name.starts_with("AWS_") {
                continue;
            }
            match name.to_ascii_lowercase().parse::<AmazonS3ConfigKey>() {
                Ok(AmazonS3ConfigKey::Client(client_key)) => {
                    client_options = client_options.with_config(client_key, value);
                }
                Ok(config_key) => builder = builder.with_config(config_key, value),
                Err(_) => {}
            }
        }
        if config.allow_http {
            client_options = client_options.with_allow_http(true);
        }
        let allow_http = client_options
            .get_config_value(&ClientConfigKey::AllowHttp)
            .is_some_and(|value| {
                matches!(
                    value.to_ascii_lowercase().as_str(),
                    "1" | "true" | "on" | "yes" | "y"
                )
            });
        builder = builder.with_client_options(client_options);

        let region = config
            .region
            .clone()
            .filter(|region| !region.trim().is_empty())
            .or_else(|| builder.get_config_value(&AmazonS3ConfigKey::Region))
            .unwrap_or_else(|| DEFAULT_S3_REGION.to_owned());
        builder = builder
            .with_bucket_name(bucket)
            .with_region(&region)
            .with_virtual_hosted_style_request(!config.path_style);

        // `AWS_ENDPOINT_URL_S3` outranks `AWS_ENDPOINT_URL` in the builder; the config outranks
        // both, so both keys get the chosen endpoint.
        let endpoint_opt = config
            .endpoint
            .clone()
            .filter(|endpoint| !endpoint.trim().is_empty())
            .or_else(|| builder.get_config_value(&AmazonS3ConfigKey::S3Endpoint))
            .or_else(|| builder.get_config_value(&AmazonS3ConfigKey::Endpoint));
        if let Some(endpoint) = &endpoint_opt {
            if endpoint.starts_with("http://") && !allow_http {
                return Err(config_error(format!(
                    "s3 endpoint `{}` is plain http: set storage.s3.allow_http = true to allow it",
                    redact_url(endpoint)
                )));
            }
            let request_endpoint = if config.path_style {
                endpoint.trim_end_matches('/').to_owned()
            } else {
                virtual_hosted_endpoint(endpoint, bucket)?
            };
            builder = builder
                .with_config(AmazonS3ConfigKey::Endpoint, request_endpoint.clone())
                .with_config(AmazonS3ConfigKey::S3Endpoint, request_endpoint);
        }

        if let Some(credential) = credential_from_config(config, &builder)? {
            builder = builder.with_credentials(Arc::new(StaticCredentialProvider::new(credential)));
        }

        // A failure to build is always a configuration problem, whatever `object_store` calls it.
        let s3 = builder.build().map_err(|error| {
            config_error("failed to configure s3 client".to_owned()).with_source(error)
        })?;
        let store: Arc<dyn ObjectStore> = match &prefix_path_opt {
            Some(prefix_path) => Arc::new(PrefixStore::new(s3, prefix_path.clone())),
            None => Arc::new(s3),
        };
        let location = match &prefix_path_opt {
            Some(prefix_path) => format!("s3://{bucket}/{prefix_path}"),
            None => format!("s3://{bucket}"),
        };
        let description = match &endpoint_opt {
            Some(endpoint) => format!("{location} at {} (region {region})", redact_url(endpoint)),
            None => format!("{location} (region {region})"),
        };
        Ok(Self::from_object_store(store, true, description))
    }
}

/// Returns the static credential when `config` sets any part of one; a part it leaves unset
/// comes from `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` (already in `builder`). The
/// secret file, when set, wins over an inline secret. `None` leaves the environment's
/// credential chain (session token, web identity, container, instance) to the builder.
fn credential_from_config(
    config: &S3Config,
    builder: &AmazonS3Builder,
) -> StorageResult<Option<AwsCredential>> {
    let non_empty = |value: &str| Some(value.trim().to_owned()).filter(|value| !value.is_empty());
    let config_secret_opt = match &config.secret_access_key_file {
        Some(secret_path) => {
            if config.secret_access_key.is_some() {
                warn!(
                    "storage.s3.secret_access_key_file is set: ignoring storage.s3.secret_access_key"
                );
            }
            let secret = std::fs::read_to_string(secret_path).map_err(|error| {
                StorageError::new(
                    StorageErrorKind::Config,
                    format!(
                        "failed to read storage.s3.secret_access_key_file `{}`",
                        secret_path.display()
                    ),
                )
                .with_source(error)
            })?;
            let Some(secret) = non_empty(&secret) else {
                return Err(StorageError::new(
                    StorageErrorKind::Config,
                    format!(
                        "storage.s3.secret_access_key_file `{}` is empty",
                        secret_path.display()
                    ),
                ));
            };
            Some(secret)
        }
        None => config.secret_access_key.as_deref().and_then(non_empty),
    };
    let config_key_id_opt = config.access_key_id.as_deref().and_then(non_empty);
    if config_key_id_opt.is_none() && config_secret_opt.is_none() {
        return Ok(None);
    }
    let key_id_opt = config_key_id_opt.or_else(|| {
        builder
            .get_config_value(&AmazonS3ConfigKey::AccessKeyId)
            .as_deref()
            .and_then(non_empty)
    });
    let secret_opt = config_secret_opt.or_else(|| {
        builder
            .get_config_value(&AmazonS3ConfigKey::SecretAccessKey)
            .as_deref()
            .and_then(non_empty)
    });
    match (key_id_opt, secret_opt) {
        (Some(key_id), Some(secret_key)) => Ok(Some(AwsCredential {
            key_id,
            secret_key,
            token: None,
        })),
        (Some(_), None) => Err(StorageError::new(
            StorageErrorKind::Config,
            "storage.s3.access_key_id is set but no secret access key is configured",
        )),
        (None, _) => Err(StorageError::new(
            StorageErrorKind::Config,
            "a secret access key is set but no storage.s3.access_key_id is configured",
        )),
    }
}

/// Returns `endpoint` with `bucket.` prepended to its host, for virtual-hosted-style requests
/// (`object_store` expects the bucket already in a custom endpoint in that mode).
fn virtual_hosted_endpoint(endpoint: &str, bucket: &str) -> StorageResult<String> {
    let invalid = || {
        StorageError::new(
            StorageErrorKind::Config,
            format!("invalid s3 endpoint `{endpoint}`"),
        )
    };
    let mut url = url::Url::parse(endpoint).map_err(|error| invalid().with_source(error))?;
    let host = url.host_str().ok_or_else(invalid)?.to_owned();
    if !host.starts_with(&format!("{bucket}.")) {
        url.set_host(Some(&format!("{bucket}.{host}")))
            .map_err(|error| invalid().with_source(error))?;
    }
    Ok(url.as_str().trim_end_matches('/').to_owned())
}

/// Drops any user information from an endpoint shown in logs.
fn redact_url(endpoint: &str) -> String {
    match url::Url::parse(endpoint) {
        Ok(mut url) => {
            let _ = url.set_username("");
            let _ = url.set_password(None);
            url.as_str().trim_end_matches('/').to_owned()
        }
        Err(_) => "(unparsable endpoint)".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config_with_keys() -> S3Config {
        S3Config {
            endpoint: Some("http://127.0.0.1:3900".to_owned()),
            region: Some("garage".to_owned()),
            access_key_id: Some("GK123".to_owned()),
            secret_access_key: Some("very-secret".to_owned()),
            secret_access_key_file: None,
            path_style: true,
            allow_http: true,
        }
    }

    #[test]
    fn test_describe_has_no_secret() {
        let store = ObjectStoreBlobStore::s3_with_env(
            "bucket",
            "/strata/objects/",
            &config_with_keys(),
            Vec::new(),
        )
        .unwrap();
        let description = crate::BlobStore::describe(&store);
        assert_eq!(
            description,
            "s3://bucket/strata/objects at http://127.0.0.1:3900 (region garage)"
        );
        assert!(!description.contains("very-secret"));
        assert!(!description.contains("GK123"));
    }

    #[test]
    fn test_region_and_endpoint_fall_back_to_env() {
        let config = S3Config {
            access_key_id: None,
            secret_access_key: None,
            ..S3Config::default()
        };
        let env = vec![
            ("AWS_REGION".to_owned(), "eu-west-3".to_owned()),
            (
                "AWS_ENDPOINT_URL".to_owned(),
                "https://s3.example.org".to_owned(),
            ),
            ("AWS_ACCESS_KEY_ID".to_owned(), "AKIA".to_owned()),
            ("AWS_SECRET_ACCESS_KEY".to_owned(), "secret".to_owned()),
            ("HOME".to_owned(), "/root".to_owned()),
        ];
        let store = ObjectStoreBlobStore::s3_with_env("b", "", &config, env).unwrap();
        assert_eq!(
            crate::BlobStore::describe(&store),
            "s3://b at https://s3.example.org (region eu-west-3)"
        );
        let store = ObjectStoreBlobStore::s3_with_env("b", "", &config, Vec::new()).unwrap();
        assert_eq!(
            crate::BlobStore::describe(&store),
            "s3://b (region us-east-1)"
        );
    }

    #[test]
    fn test_plain_http_needs_allow_http() {
        let config = S3Config {
            allow_http: false,
            ..config_with_keys()
        };
        let error = ObjectStoreBlobStore::s3_with_env("b", "", &config, Vec::new()).unwrap_err();
        assert_eq!(error.kind, StorageErrorKind::Config);
        assert!(error.to_string().contains("allow_http"), "{error}");
        let env = vec![("AWS_ALLOW_HTTP".to_owned(), "true".to_owned())];
        ObjectStoreBlobStore::s3_with_env("b", "", &config, env).unwrap();
    }

    #[test]
    fn test_half_credentials_are_completed_from_env_or_refused() {
        let config = S3Config {
            secret_access_key: None,
            ..config_with_keys()
        };
        let error = ObjectStoreBlobStore::s3_with_env("b", "", &config, Vec::new()).unwrap_err();
        assert_eq!(error.kind, StorageErrorKind::Config);
        let env = vec![("AWS_SECRET_ACCESS_KEY".to_owned(), "from-env".to_owned())];
        ObjectStoreBlobStore::s3_with_env("b", "", &config, env).unwrap();

        let config = S3Config {
            access_key_id: None,
            ..config_with_keys()
        };
        let error = ObjectStoreBlobStore::s3_with_env("b", "", &config, Vec::new()).unwrap_err();
        assert_eq!(error.kind, StorageErrorKind::Config);
        assert!(!error.to_string().contains("very-secret"), "{error}");

        let config = S3Config {
            secret_access_key_file: Some("/nonexistent/strata/secret".into()),
            ..config_with_keys()
        };
        let error = ObjectStoreBlobStore::s3_with_env("b", "", &config, Vec::new()).unwrap_err();
        assert_eq!(error.kind, StorageErrorKind::Config);
        assert!(
            error.to_string().contains("secret_access_key_file"),
            "{error}"
        );
    }

    #[test]
    fn test_virtual_hosted_endpoint_gets_the_bucket() {
        assert_eq!(
            virtual_hosted_endpoint("https://s3.example.org:9000/", "bucket").unwrap(),
            "https://bucket.s3.example.org:9000"
        );
        assert_eq!(
            virtual_hosted_endpoint("https://bucket.s3.example.org", "bucket").unwrap(),
            "https://bucket.s3.example.org"
        );
        assert_eq!(
            redact_url("https://user:pw@s3.example.org/"),
            "https://s3.example.org"
        );
    }
}
