//! An archive started in-process on a chosen backend.

use std::sync::Arc;

use anyhow::Context;
use strata_config::{NodeConfig, StorageConfig};
use strata_serve::RunningNode;
use strata_storage::BlobStore;
use strata_storage::testsuite::InProcessS3;

/// Which catalog and object store the archive runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// SQLite catalog, local object directory: the embedded default.
    SqliteLocal,
    /// SQLite catalog, in-process S3 protocol server (s3s-fs).
    SqliteInProcessS3,
    /// PostgreSQL catalog and external S3-compatible store, from `STRATA_TEST_*` variables.
    PostgresS3,
}

impl Backend {
    /// The backends available in this environment.
    pub fn available() -> Vec<Backend> {
        let mut backends = vec![Backend::SqliteLocal, Backend::SqliteInProcessS3];
        if external_services().is_some() {
            backends.push(Backend::PostgresS3);
        } else {
            eprintln!(
                "PostgresS3 backend skipped: STRATA_TEST_POSTGRES_URI / STRATA_TEST_S3_* not set"
            );
        }
        backends
    }
}

struct ExternalServices {
    postgres_uri: String,
    s3_endpoint: String,
    s3_bucket: String,
    s3_access_key_id: String,
    s3_secret_access_key: String,
    s3_region: String,
}

fn external_services() -> Option<ExternalServices> {
    let var = |name: &str| std::env::var(name).ok().filter(|value| !value.is_empty());
    Some(ExternalServices {
        postgres_uri: var("STRATA_TEST_POSTGRES_URI")?,
        s3_endpoint: var("STRATA_TEST_S3_ENDPOINT")?,
        s3_bucket: var("STRATA_TEST_S3_BUCKET")?,
        s3_access_key_id: var("STRATA_TEST_S3_ACCESS_KEY_ID")?,
        s3_secret_access_key: var("STRATA_TEST_S3_SECRET_ACCESS_KEY")?,
        s3_region: var("STRATA_TEST_S3_REGION").unwrap_or_else(|| "garage".to_owned()),
    })
}

/// A running archive and what is needed to look behind its API.
pub struct TestArchive {
    pub backend: Backend,
    /// `http://127.0.0.1:PORT/dicomweb`.
    pub base_url: String,
    pub client: reqwest::Client,
    /// The object store the archive writes to, for checking what is in the bucket.
    pub store: Arc<dyn BlobStore>,
    pub config: NodeConfig,
    node: Option<RunningNode>,
    _data_dir: tempfile::TempDir,
    _s3: Option<InProcessS3>,
    _postgres_database: Option<String>,
}

impl TestArchive {
    /// Starts an archive with a fresh, empty catalog and store.
    pub async fn start(backend: Backend) -> anyhow::Result<Self> {
        init_test_logging();
        let data_dir = tempfile::tempdir()?;
        let mut config = NodeConfig {
            data_dir: data_dir.path().to_owned(),
            ..NodeConfig::default()
        };
        config.http.addr = "127.0.0.1:0".to_owned();
        config.dimse.addr = "127.0.0.1:0".to_owned();
        let mut s3 = None;
        let mut postgres_database = None;
        let unique = uuid::Uuid::new_v4().simple().to_string();
        match backend {
            Backend::SqliteLocal => {}
            Backend::SqliteInProcessS3 => {
                let server = InProcessS3::start().await.context("in-process s3")?;
                config.storage = server.storage_config(&format!("archive-{unique}"));
                s3 = Some(server);
            }
            Backend::PostgresS3 => {
                let services = external_services().context("external services not configured")?;
                let database = format!("strata_e2e_{unique}");
                create_database(&services.postgres_uri, &database).await?;
                config.catalog.uri = with_database(&services.postgres_uri, &database)?;
                config.storage = StorageConfig {
                    uri: format!("s3://{}/e2e-{unique}", services.s3_bucket),
                    s3: strata_config::S3Config {
                        endpoint: Some(services.s3_endpoint.clone()),
                        region: Some(services.s3_region.clone()),
                        access_key_id: Some(services.s3_access_key_id.clone()),
                        secret_access_key: Some(services.s3_secret_access_key.clone()),
                        secret_access_key_file: None,
                        path_style: true,
                        allow_http: true,
                    },
                };
                postgres_database = Some(database);
            }
        }
        let config = config.resolved()?;
        let store = strata_storage::open_blob_store(&config.storage)?;
        let node = strata_serve::start_node(config.clone()).await?;
        let base_url = format!("http://{}/dicomweb", node.http_addr);
        Ok(Self {
            backend,
            base_url,
            client: reqwest::Client::new(),
            store,
            config,
            node: Some(node),
            _data_dir: data_dir,
            _s3: s3,
            _postgres_database: postgres_database,
        })
    }

    /// Stops the archive and starts it again on the same catalog and store.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        if let Some(node) = self.node.take() {
            node.shutdown.cancel();
            node.task.await??;
        }
        let node = strata_serve::start_node(self.config.clone()).await?;
        self.base_url = format!("http://{}/dicomweb", node.http_addr);
        self.node = Some(node);
        Ok(())
    }

    /// `GET {base}{path}`.
    pub async fn get(&self, path: &str) -> anyhow::Result<reqwest::Response> {
        Ok(self
            .client
            .get(format!("{}{path}", self.base_url))
            .send()
            .await?)
    }

    /// `GET {base}{path}` expecting 200 and a JSON body.
    pub async fn get_json(&self, path: &str) -> anyhow::Result<serde_json::Value> {
        let response = self.get(path).await?;
        let status = response.status();
        let text = response.text().await?;
        anyhow::ensure!(status == 200, "GET {path}: {status}: {text}");
        Ok(serde_json::from_str(&text)?)
    }

    /// STOW-RS of the given objects in one request to `path` (`/studies` or
    /// `/studies/{uid}`); returns the status and the response body.
    pub async fn stow(
        &self,
        path: &str,
        objects: &[Vec<u8>],
    ) -> anyhow::Result<(u16, serde_json::Value)> {
        let (content_type, body) = crate::multipart::related_body(objects);
        let response = self
            .client
            .post(format!("{}{path}", self.base_url))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await?;
        let status = response.status().as_u16();
        let text = response.text().await?;
        let json = serde_json::from_str(&text).unwrap_or(serde_json::Value::Null);
        Ok((status, json))
    }

    /// The URL of `/api{path_and_query}` (the search API sits beside `/dicomweb`).
    pub fn api_url(&self, path_and_query: &str) -> String {
        let root = self.base_url.trim_end_matches("/dicomweb");
        format!("{root}/api{path_and_query}")
    }

    /// `GET /api/search?{query}` expecting 200; returns the JSON body.
    pub async fn search(&self, query: &str) -> serde_json::Value {
        let response = self
            .client
            .get(self.api_url(&format!("/search?{query}")))
            .send()
            .await
            .expect("search request");
        assert_eq!(response.status(), 200, "{query}");
        response.json().await.expect("json")
    }

    /// WADO-RS retrieval of `path`; returns the parts' bodies.
    pub async fn retrieve(&self, path: &str) -> anyhow::Result<Vec<Vec<u8>>> {
        let response = self.get(path).await?;
        Self::multipart_parts(path, response).await
    }

    /// `GET {base}{path}` of instances in any transfer syntax: as stored (except the syntaxes
    /// the web never serves, PS3.18 §8.7.3), not the default Explicit VR Little Endian.
    pub async fn retrieve_as_stored(&self, path: &str) -> anyhow::Result<Vec<Vec<u8>>> {
        let response = self
            .client
            .get(format!("{}{path}", self.base_url))
            .header(
                "accept",
                "multipart/related; type=\"application/dicom\"; transfer-syntax=*",
            )
            .send()
            .await?;
        Self::multipart_parts(path, response).await
    }

    async fn multipart_parts(
        path: &str,
        response: reqwest::Response,
    ) -> anyhow::Result<Vec<Vec<u8>>> {
        anyhow::ensure!(
            response.status() == 200,
            "GET {path}: {}",
            response.status()
        );
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let body = response.bytes().await?;
        crate::multipart::parse_related(&content_type, &body)
    }
}

impl Drop for TestArchive {
    fn drop(&mut self) {
        if let Some(node) = self.node.take() {
            node.shutdown.cancel();
        }
    }
}

/// For black-box tests of the binary: creates a fresh PostgreSQL database and returns the
/// `STRATA__*` variables that point an archive at it and at a fresh prefix of the external S3
/// bucket. `None` when the external services are not configured.
pub async fn external_backend_env() -> anyhow::Result<Option<Vec<(String, String)>>> {
    let Some(services) = external_services() else {
        return Ok(None);
    };
    let unique = uuid::Uuid::new_v4().simple().to_string();
    let database = format!("strata_bb_{unique}");
    create_database(&services.postgres_uri, &database).await?;
    Ok(Some(vec![
        (
            "STRATA__CATALOG__URI".to_owned(),
            with_database(&services.postgres_uri, &database)?,
        ),
        (
            "STRATA__STORAGE__URI".to_owned(),
            format!("s3://{}/bb-{unique}", services.s3_bucket),
        ),
        (
            "STRATA__STORAGE__S3__ENDPOINT".to_owned(),
            services.s3_endpoint,
        ),
        ("STRATA__STORAGE__S3__REGION".to_owned(), services.s3_region),
        (
            "STRATA__STORAGE__S3__ACCESS_KEY_ID".to_owned(),
            services.s3_access_key_id,
        ),
        (
            "STRATA__STORAGE__S3__SECRET_ACCESS_KEY".to_owned(),
            services.s3_secret_access_key,
        ),
        (
            "STRATA__STORAGE__S3__ALLOW_HTTP".to_owned(),
            "true".to_owned(),
        ),
    ]))
}

fn with_database(admin_uri: &str, database: &str) -> anyhow::Result<String> {
    let mut uri = url::Url::parse(admin_uri)?;
    uri.set_path(&format!("/{database}"));
    Ok(uri.to_string())
}

async fn create_database(admin_uri: &str, database: &str) -> anyhow::Result<()> {
    use sqlx::Connection;
    let mut connection = sqlx::PgConnection::connect(admin_uri)
        .await
        .context("connect to STRATA_TEST_POSTGRES_URI")?;
    // The name is generated here (hex only), so formatting it into the statement is safe.
    sqlx::query(&format!("CREATE DATABASE {database}"))
        .execute(&mut connection)
        .await?;
    Ok(())
}

/// Sends the archive's logs to the test output (shown for failing tests); `RUST_LOG` filters.
fn init_test_logging() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_test_writer()
            .try_init();
    });
}
