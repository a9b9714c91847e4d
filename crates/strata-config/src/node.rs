//! The node configuration tree and its loader.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

/// The default DICOMweb / HTTP listen address.
pub const DEFAULT_HTTP_ADDR: &str = "127.0.0.1:8080";

/// A configuration problem, reported before anything starts.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file or environment could not be read or has the wrong shape.
    #[error("invalid configuration: {0}")]
    Load(String),
    /// A value is present but not usable.
    #[error("invalid configuration value `{key}`: {reason}")]
    Invalid { key: &'static str, reason: String },
}

/// The whole configuration of one Strata process.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeConfig {
    /// Directory for embedded state: the SQLite catalog, local objects and the spool.
    pub data_dir: PathBuf,
    /// The roles this process plays (`--roles`); every role by default.
    pub roles: Vec<crate::Role>,
    /// On SIGTERM, how long in-flight HTTP requests and DIMSE associations may take to finish.
    pub drain_timeout_seconds: u64,
    pub http: HttpConfig,
    pub auth: AuthConfig,
    pub audit: AuditConfig,
    pub catalog: CatalogConfig,
    pub storage: StorageConfig,
    pub ingest: IngestConfig,
    pub dicomweb: DicomwebConfig,
    pub dimse: DimseConfig,
    pub search: crate::SearchConfig,
    pub tiering: crate::TieringConfig,
}

/// The HTTP listener.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Listen address, `HOST:PORT`. Port 0 picks a free port (logged at start-up).
    pub addr: String,
    /// PEM certificate chain: with `tls_key_file`, the listener speaks HTTPS only (TLS 1.2 and
    /// 1.3, rustls). Health probes and metrics are then served over HTTPS too.
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of `tls_cert_file`.
    pub tls_key_file: Option<PathBuf>,
}

/// Who may call the HTTP APIs (docs/security.md).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// The API tokens file: one token per line, `NAME SCOPES SHA256` (SCOPES a comma-separated
    /// subset of `read`, `write`, `delete`, `admin`; SHA256 the hex SHA-256 of the token, so
    /// the file holds no secret). `strata token new` makes a token and its line. Unset: HTTP
    /// requests are not authenticated (a warning at start-up when the listener is not on a
    /// loopback address).
    pub tokens_file: Option<PathBuf>,
}

/// The audit trail (docs/security.md): one record per HTTP request and DIMSE operation, always
/// logged on the `audit` target.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuditConfig {
    /// Also appends each record as a JSON line to this file.
    pub file: Option<PathBuf>,
}

/// The SQL catalog.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CatalogConfig {
    /// `sqlite://PATH` or `postgres://USER:PASSWORD@HOST:PORT/DB`. Empty means
    /// `sqlite://{data_dir}/catalog.db`.
    pub uri: String,
    /// Reads the PostgreSQL password from this file (a mounted secret) when set.
    pub password_file: Option<PathBuf>,
    pub max_connections: u32,
    /// Applies pending schema migrations at start-up. Set to false where `strata migrate` runs
    /// separately (a Helm pre-upgrade Job): the process then refuses to start on an outdated
    /// schema instead of racing other replicas.
    pub auto_migrate: bool,
}

/// The object store.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// `file://PATH`, `ram://` or `s3://BUCKET[/PREFIX]`. Empty means
    /// `file://{data_dir}/objects`.
    pub uri: String,
    pub s3: S3Config,
}

/// Settings of an S3-compatible store. Unset credentials fall back to the standard
/// `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` / `AWS_REGION` / `AWS_ENDPOINT_URL`
/// environment variables.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct S3Config {
    /// `http(s)://HOST:PORT`; empty for AWS itself.
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    /// Reads the secret access key from this file (a mounted secret) when set.
    pub secret_access_key_file: Option<PathBuf>,
    /// Path-style requests (`http://host/bucket/key`), which most self-hosted stores need.
    pub path_style: bool,
    /// Allows plain-HTTP endpoints.
    pub allow_http: bool,
}

/// The ingest pipeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IngestConfig {
    /// Where received instances are spooled while they are validated. Empty means
    /// `{data_dir}/spool`.
    pub spool_dir: Option<PathBuf>,
    /// The largest single instance accepted, in bytes.
    pub max_instance_bytes: u64,
    /// Instances processed in parallel within one request.
    pub concurrency: usize,
}

/// The DICOMweb service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DicomwebConfig {
    /// Public base URL used in RetrieveURL and BulkDataURI, e.g.
    /// `https://pacs.example.org/dicomweb`. Empty means derived from the request's Host header.
    pub public_base_url: Option<String>,
    /// The largest STOW-RS request body accepted, in bytes.
    pub max_request_bytes: u64,
    /// The QIDO-RS result limit applied when the client gives none (and the most it may ask).
    pub max_query_results: u64,
    /// Origins allowed to call DICOMweb from a browser (CORS), e.g. `https://viewer.example.org`;
    /// `["*"]` allows any origin; empty (the default) sends no CORS headers.
    pub cors_allowed_origins: Vec<String>,
    /// Whether `DELETE` of studies, series and instances is allowed; when false (the default)
    /// it answers 405. Deletion removes rows and objects for good.
    pub allow_delete: bool,
}

/// The DIMSE listener (C-ECHO, C-STORE, C-FIND, C-MOVE, C-GET). See PS3.7 and PS3.8.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DimseConfig {
    /// Whether the node runs a DIMSE listener.
    pub enabled: bool,
    /// Listen address, `HOST:PORT`. Port 0 picks a free port (logged at start-up).
    pub addr: String,
    /// This node's AE title (at most 16 characters).
    pub ae_title: String,
    /// Calling AE titles allowed to associate; empty means any.
    pub accepted_calling_ae_titles: Vec<String>,
    /// The largest PDU this node receives, in bytes.
    pub max_pdu: u32,
    /// Associations served at the same time; more are refused (local limit exceeded).
    pub max_associations: usize,
    /// ARTIM timeout: how long a new connection may take to send its A-ASSOCIATE-RQ, seconds.
    pub artim_timeout_seconds: u64,
    /// How long an established association may stay silent before it is aborted, seconds.
    pub idle_timeout_seconds: u64,
    /// Known peers for C-MOVE destinations: AE title → `HOST:PORT`.
    pub peers: std::collections::BTreeMap<String, String>,
    /// DICOM TLS (PS3.15 Annex B, BCP 195): a PEM certificate chain; with `tls_key_file`, the
    /// listener accepts TLS connections only (docs/security.md).
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key of `tls_cert_file`.
    pub tls_key_file: Option<PathBuf>,
    /// PEM certificates of the authorities whose client certificates are accepted: with it,
    /// every peer must present a certificate they signed (mutual TLS).
    pub tls_client_ca_file: Option<PathBuf>,
    /// C-MOVE destinations (AE titles of `peers`) reached over DICOM TLS. Their certificates
    /// must be signed by an authority of `tls_peer_ca_file` and name the host of their
    /// address; this node presents `tls_cert_file` when it is set.
    pub tls_peers: Vec<String>,
    /// PEM certificates of the authorities trusted for `tls_peers`.
    pub tls_peer_ca_file: Option<PathBuf>,
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("./strata-data"),
            roles: crate::Role::ALL.to_vec(),
            drain_timeout_seconds: 30,
            http: HttpConfig::default(),
            auth: AuthConfig::default(),
            audit: AuditConfig::default(),
            catalog: CatalogConfig::default(),
            storage: StorageConfig::default(),
            ingest: IngestConfig::default(),
            dicomweb: DicomwebConfig::default(),
            dimse: DimseConfig::default(),
            search: crate::SearchConfig::default(),
            tiering: crate::TieringConfig::default(),
        }
    }
}

/// The default DIMSE listen address.
pub const DEFAULT_DIMSE_ADDR: &str = "127.0.0.1:11112";
/// The default DIMSE AE title.
pub const DEFAULT_AE_TITLE: &str = "STRATA";

impl Default for DimseConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            addr: DEFAULT_DIMSE_ADDR.to_owned(),
            ae_title: DEFAULT_AE_TITLE.to_owned(),
            accepted_calling_ae_titles: Vec::new(),
            max_pdu: 65536,
            max_associations: 64,
            artim_timeout_seconds: 30,
            idle_timeout_seconds: 300,
            peers: std::collections::BTreeMap::new(),
            tls_cert_file: None,
            tls_key_file: None,
            tls_client_ca_file: None,
            tls_peers: Vec::new(),
            tls_peer_ca_file: None,
        }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            addr: DEFAULT_HTTP_ADDR.to_owned(),
            tls_cert_file: None,
            tls_key_file: None,
        }
    }
}

impl Default for CatalogConfig {
    fn default() -> Self {
        Self {
            uri: String::new(),
            password_file: None,
            max_connections: 16,
            auto_migrate: true,
        }
    }
}

impl Default for S3Config {
    fn default() -> Self {
        Self {
            endpoint: None,
            region: None,
            access_key_id: None,
            secret_access_key: None,
            secret_access_key_file: None,
            path_style: true,
            allow_http: false,
        }
    }
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            spool_dir: None,
            max_instance_bytes: 8 << 30,
            concurrency: 4,
        }
    }
}

impl Default for DicomwebConfig {
    fn default() -> Self {
        Self {
            public_base_url: None,
            max_request_bytes: 64 << 30,
            max_query_results: 1000,
            cors_allowed_origins: Vec::new(),
            allow_delete: false,
        }
    }
}

impl NodeConfig {
    /// Loads defaults, then `config_file` (if given), then the `STRATA__*` entries of `env`,
    /// and resolves and validates the result. Tests pass `env` as a map; the binary passes
    /// `std::env::vars()`.
    pub fn load(
        config_file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(NodeConfig::default()));
        if let Some(path) = config_file {
            if !path.is_file() {
                return Err(ConfigError::Load(format!(
                    "config file `{}` does not exist or is not a file",
                    path.display()
                )));
            }
            figment = figment.merge(Toml::file_exact(path));
        }
        let env_map: HashMap<String, String> = env
            .into_iter()
            .filter(|(key, _)| key.starts_with("STRATA__"))
            .collect();
        // figment's `Env` provider reads the process environment; the map is turned into
        // dotted keys by hand instead, so tests stay hermetic.
        let mut env_figment = Figment::new();
        for (key, value) in &env_map {
            let path = key["STRATA__".len()..].to_lowercase().replace("__", ".");
            env_figment =
                env_figment.merge(Serialized::global(&path, parse_env_value(&path, value)));
        }
        // Lossy: environment strings become numbers and booleans where the field wants one,
        // and stay strings where it wants a string (an all-digit S3 access key id).
        let config: NodeConfig = figment
            .merge(env_figment)
            .extract_lossy()
            .map_err(|error| ConfigError::Load(error.to_string()))?;
        config.resolved()
    }

    /// Fills derived defaults (catalog, storage and spool under `data_dir`) and validates.
    pub fn resolved(mut self) -> Result<Self, ConfigError> {
        if self.catalog.uri.trim().is_empty() {
            self.catalog.uri = format!("sqlite://{}", self.data_dir.join("catalog.db").display());
        }
        if self.storage.uri.trim().is_empty() {
            self.storage.uri = format!("file://{}", self.data_dir.join("objects").display());
        }
        if self.ingest.spool_dir.is_none() {
            self.ingest.spool_dir = Some(self.data_dir.join("spool"));
        }
        if self.search.index_dir.is_none() {
            self.search.index_dir = Some(self.data_dir.join("search"));
        }
        self.validate()?;
        Ok(self)
    }

    /// Returns the spool directory (resolved).
    pub fn spool_dir(&self) -> PathBuf {
        self.ingest
            .spool_dir
            .clone()
            .unwrap_or_else(|| self.data_dir.join("spool"))
    }

    /// Returns the DIMSE listen address, parsed.
    pub fn dimse_socket_addr(&self) -> Result<SocketAddr, ConfigError> {
        parse_socket_addr(&self.dimse.addr).map_err(|_| ConfigError::Invalid {
            key: "dimse.addr",
            reason: format!("`{}` is not a HOST:PORT address", self.dimse.addr),
        })
    }

    /// Returns the HTTP listen address, parsed.
    pub fn http_socket_addr(&self) -> Result<SocketAddr, ConfigError> {
        parse_socket_addr(&self.http.addr)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.roles.is_empty() {
            return Err(ConfigError::Invalid {
                key: "roles",
                reason: "name at least one of ingest, gateway, search, tiering".to_owned(),
            });
        }
        parse_socket_addr(&self.http.addr)?;
        if self.http.tls_cert_file.is_some() != self.http.tls_key_file.is_some() {
            return Err(ConfigError::Invalid {
                key: "http.tls_cert_file",
                reason: "set both http.tls_cert_file and http.tls_key_file, or neither".to_owned(),
            });
        }
        let catalog_uri = self.catalog.uri.as_str();
        if !(catalog_uri.starts_with("sqlite:")
            || catalog_uri.starts_with("postgres://")
            || catalog_uri.starts_with("postgresql://"))
        {
            return Err(ConfigError::Invalid {
                key: "catalog.uri",
                reason: format!(
                    "`{catalog_uri}` is neither `sqlite://PATH` nor `postgres://USER@HOST/DB`"
                ),
            });
        }
        if self.catalog.max_connections == 0 {
            return Err(ConfigError::Invalid {
                key: "catalog.max_connections",
                reason: "must be at least 1".to_owned(),
            });
        }
        let storage_uri = self.storage.uri.as_str();
        if let Some(bucket_and_prefix) = storage_uri.strip_prefix("s3://") {
            let bucket = bucket_and_prefix.split('/').next().unwrap_or_default();
            if bucket.is_empty() {
                return Err(ConfigError::Invalid {
                    key: "storage.uri",
                    reason: "an s3:// URI needs a bucket: `s3://BUCKET[/PREFIX]`".to_owned(),
                });
            }
            if let Some(endpoint) = &self.storage.s3.endpoint
                && endpoint.starts_with("http://")
                && !self.storage.s3.allow_http
            {
                return Err(ConfigError::Invalid {
                    key: "storage.s3.allow_http",
                    reason: format!(
                        "endpoint `{endpoint}` is plain HTTP: set storage.s3.allow_http = true \
                         to allow it"
                    ),
                });
            }
        } else if !(storage_uri.starts_with("file://") || storage_uri == "ram://") {
            return Err(ConfigError::Invalid {
                key: "storage.uri",
                reason: format!(
                    "`{storage_uri}` is not one of `file://PATH`, `ram://`, `s3://BUCKET[/PREFIX]`"
                ),
            });
        }
        if self.ingest.concurrency == 0 {
            return Err(ConfigError::Invalid {
                key: "ingest.concurrency",
                reason: "must be at least 1".to_owned(),
            });
        }
        if self.dimse.enabled {
            self.validate_dimse()?;
        }
        self.search.validate()?;
        self.tiering.validate(&self.storage.uri)?;
        if self.dicomweb.max_query_results == 0 {
            return Err(ConfigError::Invalid {
                key: "dicomweb.max_query_results",
                reason: "must be at least 1".to_owned(),
            });
        }
        for origin in &self.dicomweb.cors_allowed_origins {
            let well_formed = origin == "*"
                || ((origin.starts_with("http://") || origin.starts_with("https://"))
                    && !origin.trim_end_matches('/').contains(['?', '#', ' '])
                    && origin.split("://").nth(1).is_some_and(|rest| {
                        !rest.is_empty() && !rest.trim_end_matches('/').contains('/')
                    }));
            if !well_formed {
                return Err(ConfigError::Invalid {
                    key: "dicomweb.cors_allowed_origins",
                    reason: format!(
                        "`{origin}` is not an origin: use `*` or `scheme://host[:port]`"
                    ),
                });
            }
        }
        Ok(())
    }
}

impl NodeConfig {
    fn validate_dimse(&self) -> Result<(), ConfigError> {
        self.dimse_socket_addr()?;
        let valid_ae_title =
            |title: &str| !title.trim().is_empty() && title.len() <= 16 && title.is_ascii();
        if !valid_ae_title(&self.dimse.ae_title) {
            return Err(ConfigError::Invalid {
                key: "dimse.ae_title",
                reason: "must be 1 to 16 ASCII characters".to_owned(),
            });
        }
        if self.dimse.max_pdu < 4096 {
            return Err(ConfigError::Invalid {
                key: "dimse.max_pdu",
                reason: "must be at least 4096".to_owned(),
            });
        }
        if self.dimse.max_associations == 0 {
            return Err(ConfigError::Invalid {
                key: "dimse.max_associations",
                reason: "must be at least 1".to_owned(),
            });
        }
        if self.dimse.tls_cert_file.is_some() != self.dimse.tls_key_file.is_some() {
            return Err(ConfigError::Invalid {
                key: "dimse.tls_cert_file",
                reason: "set both dimse.tls_cert_file and dimse.tls_key_file, or neither"
                    .to_owned(),
            });
        }
        if self.dimse.tls_client_ca_file.is_some() && self.dimse.tls_cert_file.is_none() {
            return Err(ConfigError::Invalid {
                key: "dimse.tls_client_ca_file",
                reason: "client certificates need TLS: set dimse.tls_cert_file and \
                         dimse.tls_key_file too"
                    .to_owned(),
            });
        }
        for ae_title in &self.dimse.tls_peers {
            if !self
                .dimse
                .peers
                .keys()
                .any(|peer| peer.eq_ignore_ascii_case(ae_title))
            {
                return Err(ConfigError::Invalid {
                    key: "dimse.tls_peers",
                    reason: format!("`{ae_title}` is not one of dimse.peers"),
                });
            }
        }
        if !self.dimse.tls_peers.is_empty() && self.dimse.tls_peer_ca_file.is_none() {
            return Err(ConfigError::Invalid {
                key: "dimse.tls_peer_ca_file",
                reason: "dimse.tls_peers needs the authorities their certificates are checked \
                         against"
                    .to_owned(),
            });
        }
        for (ae_title, address) in &self.dimse.peers {
            // Syntax only: a peer's host name is resolved when a C-MOVE uses it, so one that
            // does not resolve yet (a Kubernetes Service created later) cannot stop start-up.
            if !valid_ae_title(ae_title) || !is_host_port(address) {
                return Err(ConfigError::Invalid {
                    key: "dimse.peers",
                    reason: format!("`{ae_title}` = `{address}` is not AE_TITLE = \"HOST:PORT\""),
                });
            }
        }
        Ok(())
    }
}

fn parse_socket_addr(value: &str) -> Result<SocketAddr, ConfigError> {
    use std::net::ToSocketAddrs;
    value
        .to_socket_addrs()
        .ok()
        .and_then(|mut addrs| addrs.next())
        .ok_or_else(|| ConfigError::Invalid {
            key: "http.addr",
            reason: format!("`{value}` is not a HOST:PORT address"),
        })
}

/// Whether `value` is `HOST:PORT` (a name, an IPv4 address or a bracketed IPv6 address, and a
/// port number), without resolving the host.
fn is_host_port(value: &str) -> bool {
    let Some((host, port)) = value.rsplit_once(':') else {
        return false;
    };
    let host = host
        .strip_prefix('[')
        .and_then(|inner| inner.strip_suffix(']'))
        .unwrap_or(host);
    !host.is_empty()
        && !host.contains(char::is_whitespace)
        && port.parse::<u16>().is_ok_and(|port| port > 0)
}

/// The keys whose environment value is a comma-separated list (`STRATA__ROLES=ingest,gateway`,
/// `STRATA__DIMSE__TLS_PEERS=VIEWER,PACS`).
const LIST_KEYS: &[&str] = &[
    "roles",
    "dimse.accepted_calling_ae_titles",
    "dimse.tls_peers",
    "dicomweb.cors_allowed_origins",
];

/// Environment values stay strings (the lossy extraction turns `4` and `true` into numbers and
/// booleans where a field wants them), except the comma-separated lists of [`LIST_KEYS`].
fn parse_env_value(path: &str, value: &str) -> figment::value::Value {
    if LIST_KEYS.contains(&path) {
        let roles: Vec<String> = value
            .split(',')
            .map(str::trim)
            .filter(|role| !role.is_empty())
            .map(str::to_owned)
            .collect();
        return figment::value::Value::from(roles);
    }
    figment::value::Value::from(value.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(key, value)| (key.to_string(), value.to_string()))
            .collect()
    }

    #[test]
    fn test_defaults_live_under_data_dir() {
        let config = NodeConfig::load(None, env(&[])).unwrap();
        assert_eq!(config.catalog.uri, "sqlite://./strata-data/catalog.db");
        assert_eq!(config.storage.uri, "file://./strata-data/objects");
        assert_eq!(config.http.addr, DEFAULT_HTTP_ADDR);
    }

    #[test]
    fn test_env_overrides_file_and_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("strata.toml");
        std::fs::write(
            &file,
            "[catalog]\nuri = \"sqlite:///tmp/a.db\"\nmax_connections = 2\n",
        )
        .unwrap();
        let config = NodeConfig::load(
            Some(&file),
            env(&[
                ("STRATA__CATALOG__URI", "postgres://u@localhost/db"),
                ("STRATA__INGEST__CONCURRENCY", "7"),
                ("STRATA__STORAGE__S3__PATH_STYLE", "false"),
                ("UNRELATED", "x"),
            ]),
        )
        .unwrap();
        assert_eq!(config.catalog.uri, "postgres://u@localhost/db");
        assert_eq!(config.catalog.max_connections, 2);
        assert_eq!(config.ingest.concurrency, 7);
        assert!(!config.storage.s3.path_style);
    }

    #[test]
    fn test_bad_values_name_the_key() {
        let error =
            NodeConfig::load(None, env(&[("STRATA__STORAGE__URI", "ftp://x")])).unwrap_err();
        assert!(error.to_string().contains("storage.uri"), "{error}");
        let error = NodeConfig::load(None, env(&[("STRATA__HTTP__ADDR", "nonsense")])).unwrap_err();
        assert!(error.to_string().contains("http.addr"), "{error}");
        let error =
            NodeConfig::load(None, env(&[("STRATA__CATALOG__URI", "mysql://x")])).unwrap_err();
        assert!(error.to_string().contains("catalog.uri"), "{error}");
    }

    #[test]
    fn test_unknown_keys_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("strata.toml");
        std::fs::write(&file, "[catalog]\nurl = \"sqlite:///tmp/a.db\"\n").unwrap();
        let error = NodeConfig::load(Some(&file), env(&[])).unwrap_err();
        assert!(error.to_string().contains("url"), "{error}");
    }

    #[test]
    fn test_missing_file_is_reported() {
        let error =
            NodeConfig::load(Some(Path::new("/nonexistent/strata.toml")), env(&[])).unwrap_err();
        assert!(
            error.to_string().contains("/nonexistent/strata.toml"),
            "{error}"
        );
    }

    #[test]
    fn test_plain_http_s3_needs_opt_in() {
        let error = NodeConfig::load(
            None,
            env(&[
                ("STRATA__STORAGE__URI", "s3://bucket/prefix"),
                ("STRATA__STORAGE__S3__ENDPOINT", "http://127.0.0.1:3900"),
            ]),
        )
        .unwrap_err();
        assert!(error.to_string().contains("allow_http"), "{error}");
    }
}

#[cfg(test)]
mod dimse_tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(key, value)| (key.to_string(), value.to_string()))
            .collect()
    }

    #[test]
    fn test_list_keys_take_comma_separated_environment_values() {
        let config = NodeConfig::load(
            None,
            env(&[
                ("STRATA__DIMSE__PEERS__VIEWER", "viewer.example.org:2762"),
                ("STRATA__DIMSE__PEERS__PACS", "10.0.0.5:104"),
                ("STRATA__DIMSE__TLS_PEERS", "VIEWER, PACS"),
                ("STRATA__DIMSE__TLS_PEER_CA_FILE", "/etc/ca.pem"),
                ("STRATA__DIMSE__ACCEPTED_CALLING_AE_TITLES", "CT01,MR02"),
                (
                    "STRATA__DICOMWEB__CORS_ALLOWED_ORIGINS",
                    "https://viewer.example.org",
                ),
            ]),
        )
        .unwrap();
        assert_eq!(config.dimse.tls_peers, ["VIEWER", "PACS"]);
        assert_eq!(config.dimse.accepted_calling_ae_titles, ["CT01", "MR02"]);
        assert_eq!(
            config.dicomweb.cors_allowed_origins,
            ["https://viewer.example.org"]
        );
        let error =
            NodeConfig::load(None, env(&[("STRATA__DIMSE__TLS_PEERS", "NOWHERE")])).unwrap_err();
        assert!(
            error.to_string().contains("not one of dimse.peers"),
            "{error}"
        );
    }

    #[test]
    fn test_dimse_defaults_and_env_peers() {
        let config = NodeConfig::load(
            None,
            env(&[
                ("STRATA__DIMSE__AE_TITLE", "ARCHIVE"),
                ("STRATA__DIMSE__PEERS__PACS", "10.0.0.5:104"),
            ]),
        )
        .unwrap();
        assert_eq!(config.dimse.addr, DEFAULT_DIMSE_ADDR);
        assert_eq!(config.dimse.ae_title, "ARCHIVE");
        // Environment keys are lowercased; C-MOVE matches peer AE titles case-insensitively.
        assert_eq!(config.dimse.peers["pacs"], "10.0.0.5:104");
    }

    #[test]
    fn test_bad_dimse_values_name_the_key() {
        let error = NodeConfig::load(
            None,
            env(&[("STRATA__DIMSE__AE_TITLE", "A_TITLE_LONGER_THAN_16")]),
        )
        .unwrap_err();
        assert!(error.to_string().contains("dimse.ae_title"), "{error}");
        let error =
            NodeConfig::load(None, env(&[("STRATA__DIMSE__ADDR", "nonsense")])).unwrap_err();
        assert!(error.to_string().contains("dimse.addr"), "{error}");
        let error =
            NodeConfig::load(None, env(&[("STRATA__DIMSE__PEERS__PACS", "no-port")])).unwrap_err();
        assert!(error.to_string().contains("dimse.peers"), "{error}");
    }

    #[test]
    fn test_env_strings_stay_strings_and_roles_are_lists() {
        let config = NodeConfig::load(
            None,
            env(&[
                ("STRATA__STORAGE__S3__ACCESS_KEY_ID", "0123456789"),
                ("STRATA__CATALOG__MAX_CONNECTIONS", "4"),
                ("STRATA__CATALOG__AUTO_MIGRATE", "false"),
                ("STRATA__ROLES", "gateway, search"),
                // Resolved when used, not at load: a Service that does not exist yet is fine.
                (
                    "STRATA__DIMSE__PEERS__VIEWER",
                    "viewer.cluster.invalid:11112",
                ),
            ]),
        )
        .unwrap();
        assert_eq!(
            config.storage.s3.access_key_id.as_deref(),
            Some("0123456789")
        );
        assert_eq!(config.catalog.max_connections, 4);
        assert!(!config.catalog.auto_migrate);
        assert_eq!(
            config.roles,
            vec![crate::Role::Gateway, crate::Role::Search]
        );
        let error =
            NodeConfig::load(None, env(&[("STRATA__ROLES", "gateway,indexer")])).unwrap_err();
        assert!(error.to_string().contains("indexer"), "{error}");
    }
}

#[cfg(test)]
mod example_tests {
    use super::*;

    /// The documented example configuration stays loadable and equal to the defaults.
    #[test]
    fn test_deploy_example_config_loads_as_the_defaults() {
        let example =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/strata.example.toml");
        let loaded = NodeConfig::load(Some(&example), Vec::new()).unwrap();
        assert_eq!(loaded, NodeConfig::load(None, Vec::new()).unwrap());
    }
}
