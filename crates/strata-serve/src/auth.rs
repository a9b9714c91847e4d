//! HTTP authentication and authorisation with API tokens, and the HTTP audit trail
//! (docs/security.md).
//!
//! A token is a random secret a client sends as `Authorization: Bearer <token>`. The tokens
//! file (`auth.tokens_file`) lists, per token, a name (what audit records show), its scopes
//! and the SHA-256 of the token, never the token itself. Scopes:
//!
//! | scope    | allows |
//! |----------|--------|
//! | `read`   | GET and HEAD everywhere: QIDO-RS, WADO-RS, WADO-URI, FHIR, search, tiering status |
//! | `write`  | STOW-RS (`POST /dicomweb/studies...`) |
//! | `delete` | DICOMweb `DELETE` |
//! | `admin`  | changing the tiering state: `POST`/`PUT` under `/api/` |
//!
//! Health probes (`/livez`, `/readyz`) and `/metrics` are outside authentication (they carry
//! no patient data and are scraped by the platform), and so are CORS preflights (`OPTIONS`,
//! which browsers send without credentials).
//!
//! Hand-written: the few lines of bearer parsing and scope mapping that tower-http's
//! `ValidateRequestHeaderLayer` would need anyway, plus the scope per route and the caller's
//! name for audit records, which it does not provide.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, Method, StatusCode, header};
use sha2::{Digest, Sha256};
use strata_telemetry::audit::{ANONYMOUS, AuditRecord};
use tokio_util::sync::CancellationToken;

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scope {
    Read,
    Write,
    Delete,
    Admin,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Write => "write",
            Scope::Delete => "delete",
            Scope::Admin => "admin",
        }
    }

    fn parse(text: &str) -> Option<Scope> {
        match text {
            "read" => Some(Scope::Read),
            "write" => Some(Scope::Write),
            "delete" => Some(Scope::Delete),
            "admin" => Some(Scope::Admin),
            _ => None,
        }
    }
}

/// One line of the tokens file.
#[derive(Debug, Clone, PartialEq, Eq)]
struct TokenEntry {
    name: Arc<str>,
    scopes: Vec<Scope>,
    sha256: [u8; 32],
}

/// The API tokens a node accepts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tokens {
    entries: Vec<TokenEntry>,
}

impl Tokens {
    /// Reads a tokens file (see the module documentation).
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("failed to read auth.tokens_file `{}`", path.display()))?;
        Self::parse(&text).with_context(|| format!("auth.tokens_file `{}`", path.display()))
    }

    /// Parses the lines `NAME SCOPES SHA256`; blank lines and `#` comments are skipped. An
    /// empty file is refused: it would lock every client out without saying why.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let mut entries: Vec<TokenEntry> = Vec::new();
        for (index, line) in text.lines().enumerate() {
            let line_number = index + 1;
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [name, scopes, sha256] = fields[..] else {
                anyhow::bail!("line {line_number}: expected `NAME SCOPES SHA256`");
            };
            let scopes = scopes
                .split(',')
                .map(|scope| {
                    Scope::parse(scope).with_context(|| {
                        format!(
                            "line {line_number}: unknown scope `{scope}` (read, write, delete, admin)"
                        )
                    })
                })
                .collect::<anyhow::Result<Vec<Scope>>>()?;
            let digest = hex::decode(sha256)
                .ok()
                .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
                .with_context(|| {
                    format!("line {line_number}: the third field is not a hex SHA-256 (64 digits)")
                })?;
            if entries.iter().any(|entry| *entry.name == *name) {
                anyhow::bail!("line {line_number}: the name `{name}` is used twice");
            }
            entries.push(TokenEntry {
                name: name.into(),
                scopes,
                sha256: digest,
            });
        }
        if entries.is_empty() {
            anyhow::bail!("no tokens: add a line `NAME SCOPES SHA256` (`strata token new`)");
        }
        Ok(Self { entries })
    }

    /// The entry whose token is `token`. Compares digests, every entry in full (no early
    /// exit that would time which entry matched).
    fn authenticate(&self, token: &str) -> Option<&TokenEntry> {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let mut found = None;
        for entry in &self.entries {
            let difference = entry
                .sha256
                .iter()
                .zip(digest.iter())
                .fold(0u8, |acc, (left, right)| acc | (left ^ right));
            if difference == 0 {
                found = Some(entry);
            }
        }
        found
    }
}

/// The tokens file, read at start-up and again whenever it changes (a rotated Kubernetes
/// Secret, an edited file): checked every [`RELOAD_INTERVAL`]. A file that no longer parses is
/// logged and ignored; the tokens read last stay in force.
pub struct TokenSource {
    path: PathBuf,
    current: RwLock<Arc<Tokens>>,
    /// Modification time and size of the file when it was read last.
    stamp: Mutex<Option<(SystemTime, u64)>>,
}

/// How often the tokens file is checked for changes.
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(5);

impl TokenSource {
    /// Reads the tokens file; fails when it cannot be read or parsed.
    pub fn load(path: &Path) -> anyhow::Result<Arc<Self>> {
        let stamp = file_stamp(path);
        let tokens = Tokens::load(path)?;
        Ok(Arc::new(Self {
            path: path.to_owned(),
            current: RwLock::new(Arc::new(tokens)),
            stamp: Mutex::new(stamp),
        }))
    }

    /// The tokens in force.
    pub fn current(&self) -> Arc<Tokens> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Reads the file again if its modification time or size changed.
    fn reload_if_changed(&self) {
        let stamp = file_stamp(&self.path);
        {
            let mut last = self.stamp.lock().unwrap_or_else(PoisonError::into_inner);
            if stamp.is_none() || *last == stamp {
                return;
            }
            *last = stamp;
        }
        match Tokens::load(&self.path) {
            Ok(tokens) => {
                let num_tokens = tokens.entries.len();
                *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(tokens);
                tracing::info!(num_tokens, "auth.tokens_file changed: tokens reloaded");
            }
            Err(error) => tracing::error!(
                error = %format!("{error:#}"),
                "auth.tokens_file changed but cannot be used; the previous tokens stay in force"
            ),
        }
    }

    /// Checks the file every [`RELOAD_INTERVAL`] until `shutdown`.
    pub fn watch(self: Arc<Self>, shutdown: CancellationToken) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(RELOAD_INTERVAL) => {}
                }
                let source = self.clone();
                // Reading a file: off the async threads.
                let _ = tokio::task::spawn_blocking(move || source.reload_if_changed()).await;
            }
        })
    }
}

fn file_stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let metadata = std::fs::metadata(path).ok()?;
    Some((metadata.modified().ok()?, metadata.len()))
}

/// A new random token (two UUIDv4 from the operating system's generator: 244 random bits,
/// hex-encoded with a `strata_` prefix) and its tokens-file line.
pub fn new_token(name: &str, scopes: &[Scope]) -> (String, String) {
    let mut random = Vec::with_capacity(32);
    random.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
    random.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
    let token = format!("strata_{}", hex::encode(random));
    let scopes: Vec<&str> = scopes.iter().map(|scope| scope.as_str()).collect();
    let line = format!(
        "{name} {} {}",
        scopes.join(","),
        hex::encode(Sha256::digest(token.as_bytes()))
    );
    (token, line)
}

/// The scope a request needs; `None` when it needs none (CORS preflight).
pub fn required_scope(method: &Method, path: &str) -> Option<Scope> {
    match *method {
        Method::OPTIONS => None,
        Method::GET | Method::HEAD => Some(Scope::Read),
        Method::DELETE => Some(Scope::Delete),
        _ if path.starts_with("/api/") => Some(Scope::Admin),
        _ => Some(Scope::Write),
    }
}

/// The caller, as audit records name it.
#[derive(Debug, Clone)]
pub struct Principal(pub Arc<str>);

tokio::task_local! {
    /// The `Authorization` header of the request being served, for calls this node makes on
    /// the caller's behalf (a gateway forwarding a search to the search service).
    pub static CALLER_AUTHORIZATION: Option<HeaderValue>;
}

/// Authenticates and authorises each request against `tokens` (see the module
/// documentation): 401 with `WWW-Authenticate: Bearer` without a valid token, 403 when the
/// token lacks the scope.
pub async fn authorize(
    State(source): State<Arc<TokenSource>>,
    mut request: Request,
    next: Next,
) -> Response {
    let tokens = source.current();
    let Some(scope) = required_scope(request.method(), request.uri().path()) else {
        return next.run(request).await;
    };
    let authorization = request.headers().get(header::AUTHORIZATION).cloned();
    let bearer = authorization
        .as_ref()
        .and_then(|value| value.to_str().ok())
        .and_then(|value| {
            let (kind, token) = value.trim().split_once(' ')?;
            kind.eq_ignore_ascii_case("bearer").then(|| token.trim())
        });
    let Some(entry) = bearer.and_then(|token| tokens.authenticate(token)) else {
        let detail = if bearer.is_some() {
            "the bearer token is not valid"
        } else {
            "this archive requires a bearer token (Authorization: Bearer <token>)"
        };
        let mut response = problem(StatusCode::UNAUTHORIZED, detail);
        let challenge = if bearer.is_some() {
            r#"Bearer realm="strata", error="invalid_token""#
        } else {
            r#"Bearer realm="strata""#
        };
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static(challenge),
        );
        return response;
    };
    let principal = Principal(entry.name.clone());
    if !entry.scopes.contains(&scope) {
        let mut response = problem(
            StatusCode::FORBIDDEN,
            &format!(
                "the token `{}` lacks the `{}` scope this request needs",
                entry.name,
                scope.as_str()
            ),
        );
        response.extensions_mut().insert(principal);
        return response;
    }
    request.extensions_mut().insert(principal.clone());
    let mut response = CALLER_AUTHORIZATION
        .scope(authorization, next.run(request))
        .await;
    response.extensions_mut().insert(principal);
    response
}

/// Writes one audit record per request once its response starts: method, path (never the
/// query string), caller, peer, status and time to the response head.
pub async fn audit(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let action = request.method().to_string();
    let resource: String = request.uri().path().chars().take(512).collect();
    let remote_addr = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.to_string());
    let response = next.run(request).await;
    let principal = response
        .extensions()
        .get::<Principal>()
        .map_or_else(|| ANONYMOUS.to_owned(), |principal| principal.0.to_string());
    strata_telemetry::audit::record(AuditRecord {
        protocol: "http",
        action,
        resource,
        principal,
        remote_addr,
        outcome: response.status().as_u16().to_string(),
        duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
    });
    response
}

/// A problem+json answer, as every other error of the HTTP APIs.
fn problem(status: StatusCode, detail: &str) -> Response {
    strata_dicomweb::Problem {
        status,
        detail: detail.to_owned(),
        retry_after_seconds: None,
    }
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_tokens_file_lines_and_errors() {
        let (token, line) = new_token("viewer", &[Scope::Read]);
        let (other_token, other_line) = new_token("modality", &[Scope::Read, Scope::Write]);
        let tokens = Tokens::parse(&format!("# comment\n\n{line}\n  {other_line}  \n")).unwrap();
        assert_eq!(&*tokens.authenticate(&token).unwrap().name, "viewer");
        let modality = tokens.authenticate(&other_token).unwrap();
        assert_eq!(modality.scopes, vec![Scope::Read, Scope::Write]);
        assert!(tokens.authenticate("strata_guess").is_none());
        assert!(tokens.authenticate("").is_none());
        assert!(
            token.starts_with("strata_") && token.len() == 7 + 64,
            "{token}"
        );
        assert_ne!(token, other_token);

        let error = |text: &str| format!("{:#}", Tokens::parse(text).unwrap_err());
        assert!(error("").contains("no tokens"));
        assert!(error("a read").contains("line 1"));
        assert!(error(&format!("a root {}", "0".repeat(64))).contains("unknown scope `root`"));
        assert!(error("a read 1234").contains("not a hex SHA-256"));
        let twice = format!("{line}\n{line}");
        assert!(error(&twice).contains("line 2: the name `viewer` is used twice"));
        // The token itself never appears in an error.
        assert!(!error(&format!("x read {token}")).contains(&token));
    }

    #[test]
    fn test_a_changed_tokens_file_is_read_again_and_a_broken_one_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens");
        let (first, first_line) = new_token("first", &[Scope::Read]);
        let (second, second_line) = new_token("second", &[Scope::Read]);
        std::fs::write(&path, format!("{first_line}\n")).unwrap();
        let source = TokenSource::load(&path).unwrap();
        assert!(source.current().authenticate(&first).is_some());
        assert!(source.current().authenticate(&second).is_none());

        std::fs::write(&path, format!("{second_line}\n")).unwrap();
        source.reload_if_changed();
        assert!(source.current().authenticate(&first).is_none());
        assert!(source.current().authenticate(&second).is_some());

        std::fs::write(&path, "second read not-a-digest\n").unwrap();
        source.reload_if_changed();
        assert!(source.current().authenticate(&second).is_some(), "kept");
    }

    #[test]
    fn test_scopes_per_request() {
        assert_eq!(
            required_scope(&Method::GET, "/dicomweb/studies"),
            Some(Scope::Read)
        );
        assert_eq!(
            required_scope(&Method::HEAD, "/fhir/metadata"),
            Some(Scope::Read)
        );
        assert_eq!(
            required_scope(&Method::POST, "/dicomweb/studies"),
            Some(Scope::Write)
        );
        assert_eq!(
            required_scope(&Method::DELETE, "/dicomweb/studies/1.2"),
            Some(Scope::Delete)
        );
        assert_eq!(
            required_scope(&Method::PUT, "/api/tiering/studies/1.2/retention"),
            Some(Scope::Admin)
        );
        assert_eq!(
            required_scope(&Method::POST, "/api/tiering/apply"),
            Some(Scope::Admin)
        );
        assert_eq!(required_scope(&Method::OPTIONS, "/dicomweb/studies"), None);
    }
}
