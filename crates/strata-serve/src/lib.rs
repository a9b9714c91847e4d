//! Starts a Strata node: opens the catalog and the object store named by the configuration,
//! wires the ingest pipeline and the protocol adapters, serves HTTP, and shuts down in order.
//!
//! The only crate that knows every service; the `strata` binary calls [`serve_node`].

use std::future::IntoFuture;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::extract::State;
use axum::response::IntoResponse;
use axum::routing::get;
use strata_catalog::Catalog;
use strata_config::NodeConfig;
use strata_dicomweb::{DicomwebSettings, DicomwebState};
use strata_ingest::{IngestPipeline, IngestSettings};
use strata_storage::BlobStore;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

mod auth;
mod roles;
mod search;
mod tls;

pub use auth::{Scope, TokenSource, Tokens, new_token};
pub use roles::RoleSet;
pub use strata_config::Role;

/// A node that is serving.
pub struct RunningNode {
    /// The bound HTTP address (the real port when the configuration said 0).
    pub http_addr: SocketAddr,
    /// The bound DIMSE address, when the DIMSE listener is enabled.
    pub dimse_addr: Option<SocketAddr>,
    /// Cancels the node: it stops accepting and drains in-flight requests.
    pub shutdown: CancellationToken,
    /// Completes when the node has stopped.
    pub task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

/// Opens the catalog and the store, binds the HTTP listener and starts serving in a task.
/// Fails before serving if a dependency is unusable, with a message that says which.
pub async fn start_node(config: NodeConfig) -> anyhow::Result<RunningNode> {
    let roles = RoleSet::new(&config.roles);
    let sql_catalog = open_catalog(&config).await?;
    let catalog: Arc<dyn Catalog> = sql_catalog.clone();
    let store = strata_storage::open_blob_store(&config.storage)
        .with_context(|| format!("failed to open the object store `{}`", config.storage.uri))?;
    // Fail at start-up, not on the first request, when the store is unreachable.
    store
        .list("strata-startup-probe/")
        .await
        .with_context(|| format!("the object store {} does not answer", store.describe()))?;
    let spool_dir = config.spool_dir();
    clean_spool(&spool_dir).await.with_context(|| {
        format!(
            "failed to prepare the spool directory `{}`",
            spool_dir.display()
        )
    })?;
    // Tiered storage (docs/tiering.md): with tiers configured, every reader and writer goes
    // through the tier the catalog names for each object.
    let tiering_node =
        strata_tiering::TieringNode::open(&config, store, catalog.clone(), sql_catalog.clone())
            .context("failed to open the storage tiers ([tiering.tiers])")?;
    let store = tiering_node.store();

    let pipeline = IngestPipeline::new(
        catalog.clone(),
        store.clone(),
        IngestSettings {
            spool_dir,
            max_object_bytes: config.ingest.max_instance_bytes,
        },
    );
    let dimse_services = strata_dimse::DimseServices {
        catalog: catalog.clone(),
        store: store.clone(),
        pipeline: pipeline.clone(),
    };
    let dicomweb_state = DicomwebState {
        catalog: catalog.clone(),
        store: store.clone(),
        pipeline,
        settings: Arc::new(DicomwebSettings {
            public_base_url: config.dicomweb.public_base_url.clone(),
            max_query_results: config.dicomweb.max_query_results,
            ingest_concurrency: config.ingest.concurrency,
            cors_allowed_origins: config.dicomweb.cors_allowed_origins.clone(),
            allow_delete: config.dicomweb.allow_delete,
        }),
        deletion_guard: Some(deletion_guard(sql_catalog, &config)),
        frame_sources: Default::default(),
    };
    let search_node = if roles.runs(Role::Search) {
        search::open_search(&config, catalog.clone())?
    } else {
        None
    };
    let search_api_state = match &search_node {
        Some(node) => Some(node.api_state.clone()),
        None if roles.runs(Role::Gateway) => search::remote_search(&config)?,
        None => None,
    };
    let tokens = match &config.auth.tokens_file {
        Some(path) => Some(auth::TokenSource::load(path)?),
        None => None,
    };
    if let Some(path) = &config.audit.file {
        strata_telemetry::audit::install_file(path)
            .with_context(|| format!("failed to open audit.file `{}`", path.display()))?;
    }
    let tls_config = match (&config.http.tls_cert_file, &config.http.tls_key_file) {
        (Some(cert_file), Some(key_file)) => Some(tls::server_config(cert_file, key_file)?),
        _ => None,
    };
    let app = http_router(
        dicomweb_state,
        HealthState {
            catalog: catalog.clone(),
            store: store.clone(),
            search: search_node.as_ref().map(|node| node.api_state.clone()),
        },
        config.dicomweb.max_request_bytes,
        search_api_state,
        roles.runs(Role::Tiering).then(|| tiering_node.router()),
        roles.clone(),
        tokens.clone(),
    );

    let listen_addr = config.http_socket_addr()?;
    let listener = tokio::net::TcpListener::bind(listen_addr)
        .await
        .with_context(|| format!("failed to listen on {listen_addr} (http.addr / --http-addr)"))?;
    let http_addr = listener.local_addr()?;
    if tokens.is_none() && !http_addr.ip().is_loopback() {
        warn!(
            %http_addr,
            "HTTP requests are not authenticated (no auth.tokens_file) on a non-loopback \
             address: anyone who reaches it can read and store studies"
        );
    }
    let scheme = if tls_config.is_some() {
        "https"
    } else {
        "http"
    };
    let shutdown = CancellationToken::new();
    let shutdown_signal = shutdown.clone();
    let (dimse_addr, dimse_task) =
        start_dimse(&config, &roles, dimse_services, shutdown.clone()).await?;
    // The indexer stops on shutdown after committing what it applied (docs/search.md).
    let search_task = search_node.map(|node| tokio::spawn(node.indexer.run(shutdown.clone())));
    let tiering_tasks = tiering_node.spawn(roles.runs(Role::Tiering), shutdown.clone());
    // A rotated tokens file takes effect without a restart.
    let token_watch = tokens.clone().map(|source| source.watch(shutdown.clone()));
    info!(
        %http_addr,
        roles = %roles,
        dicomweb = %format!("{scheme}://{http_addr}/dicomweb"),
        authentication = if tokens.is_some() { "bearer tokens" } else { "none" },
        catalog = %redact(&config.catalog.uri),
        storage = %store.describe(),
        "node ready http_addr={http_addr}"
    );
    let app = app.into_make_service_with_connect_info::<SocketAddr>();
    let stop_serving = async move { shutdown_signal.cancelled().await };
    let server: futures::future::BoxFuture<'static, std::io::Result<()>> = match tls_config {
        Some(tls_config) => {
            let listener = tls::TlsListener::new(listener, tls_config, shutdown.clone())?;
            let listener = axum::serve::ListenerExt::tap_io(listener, |_| {});
            Box::pin(
                axum::serve(listener, app)
                    .with_graceful_shutdown(stop_serving)
                    .into_future(),
            )
        }
        None => {
            // Nagle's algorithm would hold the last small segment of a response until the
            // client's delayed ACK (40 ms): responses are written whole, so send segments at
            // once.
            let listener = axum::serve::ListenerExt::tap_io(listener, |stream| {
                if let Err(error) = stream.set_nodelay(true) {
                    tracing::debug!(%error, "failed to set TCP_NODELAY");
                }
            });
            Box::pin(
                axum::serve(listener, app)
                    .with_graceful_shutdown(stop_serving)
                    .into_future(),
            )
        }
    };
    let task = tokio::spawn(async move {
        server.await.context("the HTTP server failed")?;
        if let Some(token_watch) = token_watch {
            token_watch
                .await
                .context("the tokens file watch panicked")?;
        }
        if let Some(search_task) = search_task {
            search_task.await.context("the search indexer panicked")?;
        }
        for tiering_task in tiering_tasks {
            tiering_task.await.context("a tiering task panicked")?;
        }
        if let Some(dimse_task) = dimse_task {
            dimse_task
                .await
                .context("the DIMSE listener panicked")?
                .context("the DIMSE listener failed")?;
        }
        info!("node stopped");
        Ok(())
    });
    Ok(RunningNode {
        http_addr,
        dimse_addr,
        shutdown,
        task,
    })
}

type DimseTask = tokio::task::JoinHandle<std::io::Result<()>>;

/// Binds the DIMSE listener (when enabled) and serves it in a task until `shutdown`.
async fn start_dimse(
    config: &NodeConfig,
    roles: &RoleSet,
    services: strata_dimse::DimseServices,
    shutdown: CancellationToken,
) -> anyhow::Result<(Option<SocketAddr>, Option<DimseTask>)> {
    // DIMSE belongs to ingest (C-STORE) and gateway (C-FIND/C-MOVE/C-GET); both answer C-ECHO.
    if !config.dimse.enabled || !(roles.runs(Role::Ingest) || roles.runs(Role::Gateway)) {
        return Ok((None, None));
    }
    let listen_addr = config.dimse_socket_addr()?;
    let listener = tokio::net::TcpListener::bind(listen_addr)
        .await
        .with_context(|| {
            format!("failed to listen on {listen_addr} (dimse.addr / --dimse-addr)")
        })?;
    let dimse_addr = listener.local_addr()?;
    let settings = strata_dimse::DimseSettings {
        ae_title: config.dimse.ae_title.clone(),
        accepted_calling_ae_titles: config.dimse.accepted_calling_ae_titles.clone(),
        max_pdu: config.dimse.max_pdu,
        max_associations: config.dimse.max_associations,
        artim_timeout: Duration::from_secs(config.dimse.artim_timeout_seconds),
        idle_timeout: Duration::from_secs(config.dimse.idle_timeout_seconds),
        peers: config.dimse.peers.clone(),
        serve_storage: roles.runs(Role::Ingest),
        serve_query_retrieve: roles.runs(Role::Gateway),
        drain_timeout: Duration::from_secs(config.drain_timeout_seconds),
        tls: match (&config.dimse.tls_cert_file, &config.dimse.tls_key_file) {
            (Some(cert_file), Some(key_file)) => Some(tls::dimse_server_config(
                cert_file,
                key_file,
                config.dimse.tls_client_ca_file.as_deref(),
            )?),
            _ => None,
        },
        tls_peers: config.dimse.tls_peers.clone(),
        peer_tls: match &config.dimse.tls_peer_ca_file {
            Some(ca_file) => Some(tls::dimse_client_config(
                ca_file,
                config
                    .dimse
                    .tls_cert_file
                    .as_deref()
                    .zip(config.dimse.tls_key_file.as_deref()),
            )?),
            None => None,
        },
    };
    info!(
        %dimse_addr,
        ae_title = %settings.ae_title,
        tls = settings.tls.is_some(),
        "dimse listener ready dimse_addr={dimse_addr}"
    );
    let task = tokio::spawn(strata_dimse::serve_dimse(
        listener, settings, services, shutdown,
    ));
    Ok((Some(dimse_addr), Some(task)))
}

/// Runs a node until `shutdown` is cancelled, then drains and returns.
pub async fn serve_node(config: NodeConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    // A little beyond the DIMSE drain, so that the listener reports its own overrun first.
    let drain_timeout = Duration::from_secs(config.drain_timeout_seconds + 2);
    let node = start_node(config).await?;
    shutdown.cancelled().await;
    info!("shutting down: no new requests, draining in-flight ones");
    node.shutdown.cancel();
    match tokio::time::timeout(drain_timeout, node.task).await {
        Ok(joined) => joined.context("the server task panicked")?,
        Err(_) => {
            warn!(
                drain_timeout_seconds = drain_timeout.as_secs(),
                "in-flight requests did not finish within the drain timeout; exiting anyway"
            );
            Ok(())
        }
    }
}

/// Opens the catalog; applies pending migrations when `catalog.auto_migrate`, and otherwise
/// refuses an outdated schema (`strata migrate` owns migrations on multi-replica deployments).
/// DICOMweb DELETE asks the tiering rules (legal hold, retention) first (docs/dicomweb.md).
fn deletion_guard(
    sql_catalog: Arc<strata_catalog::SqlCatalog>,
    config: &NodeConfig,
) -> strata_dicomweb::DeletionGuard {
    let tiering_config = Arc::new(config.tiering.clone());
    Arc::new(move |study| {
        let tier_catalog = sql_catalog.clone();
        let tiering_config = tiering_config.clone();
        Box::pin(async move {
            use strata_dicomweb::DeletionCheck;
            match strata_tiering::check_deletion_allowed(
                tier_catalog.as_ref(),
                &tiering_config,
                &study,
            )
            .await
            {
                Ok(()) => DeletionCheck::Allowed,
                Err(strata_tiering::TieringError::DeletionRefused(reason)) => {
                    DeletionCheck::Refused(reason)
                }
                Err(error) => DeletionCheck::Unavailable(error.to_string()),
            }
        })
    })
}

async fn open_catalog(config: &NodeConfig) -> anyhow::Result<Arc<strata_catalog::SqlCatalog>> {
    let catalog_uri = catalog_uri_with_password(config)?;
    let open_error = || {
        format!(
            "failed to open the catalog at `{}`",
            redact(&config.catalog.uri)
        )
    };
    let catalog = strata_catalog::SqlCatalog::connect_without_migrations(
        &catalog_uri,
        config.catalog.max_connections,
    )
    .await
    .with_context(open_error)?;
    if config.catalog.auto_migrate {
        catalog.migrate().await.with_context(open_error)?;
    } else {
        let pending = catalog
            .pending_migrations()
            .await
            .with_context(open_error)?;
        if !pending.is_empty() {
            anyhow::bail!(
                "the catalog schema is not current (pending migrations {pending:?}) and \
                 catalog.auto_migrate is false: run `strata migrate` first"
            );
        }
    }
    Ok(Arc::new(catalog))
}

#[derive(Clone)]
struct HealthState {
    catalog: Arc<dyn Catalog>,
    store: Arc<dyn BlobStore>,
    /// The local search service, when this process runs the search role.
    search: Option<strata_search::SearchApiState>,
}

fn http_router(
    dicomweb_state: DicomwebState,
    health_state: HealthState,
    max_request_bytes: u64,
    search_state: Option<strata_search::SearchApiState>,
    tiering_router: Option<Router>,
    roles: RoleSet,
    tokens: Option<Arc<auth::TokenSource>>,
) -> Router {
    let catalog = health_state.catalog.clone();
    // FHIR R4 reads the same catalog; its Endpoint points at the DICOMweb base (issue 6).
    let fhir_state = strata_fhir::FhirState {
        catalog: catalog.clone(),
        settings: Arc::new(strata_fhir::FhirSettings {
            dicomweb_base_url: dicomweb_state.settings.public_base_url.clone(),
            ..strata_fhir::FhirSettings::default()
        }),
    };
    let health = Router::new()
        .route("/livez", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(health_state);
    Router::new()
        .nest("/dicomweb", strata_dicomweb::router(dicomweb_state))
        .nest("/fhir", strata_fhir::router(fhir_state))
        .merge(match search_state {
            Some(search_state) => Router::new().nest("/api", strata_search::router(search_state)),
            None => Router::new(),
        })
        .merge(tiering_router.unwrap_or_default())
        .layer(axum::middleware::from_fn_with_state(
            roles,
            roles::route_to_role,
        ))
        // Bearer tokens and scopes (docs/security.md), when auth.tokens_file is set; then one
        // audit record per request, naming the caller the token check found.
        .layer(axum::middleware::from_fn(
            move |request: axum::extract::Request, next: axum::middleware::Next| {
                let tokens = tokens.clone();
                async move {
                    match tokens {
                        Some(tokens) => auth::authorize(State(tokens), request, next).await,
                        None => next.run(request).await,
                    }
                }
            },
        ))
        .layer(axum::middleware::from_fn(auth::audit))
        .layer(tower_http::limit::RequestBodyLimitLayer::new(
            usize::try_from(max_request_bytes).unwrap_or(usize::MAX),
        ))
        // One span per request (method and route template, never the path's UIDs or the query
        // string, which may hold patient names and IDs), continuing an incoming `traceparent`,
        // and the request-duration histogram (docs/observability.md).
        .layer(strata_telemetry::HttpTelemetryLayer::new())
        // Probes and scrapes stay out of traces and latency metrics.
        .merge(health)
        .merge(strata_telemetry::metrics_router())
}

async fn readyz(State(state): State<HealthState>) -> impl IntoResponse {
    if let Err(error) = state.catalog.ping().await {
        warn!(%error, "not ready: catalog");
        return (http::StatusCode::SERVICE_UNAVAILABLE, "catalog unavailable");
    }
    if let Err(error) = state.store.list("strata-readiness-probe/").await {
        warn!(%error, "not ready: object store");
        return (
            http::StatusCode::SERVICE_UNAVAILABLE,
            "object store unavailable",
        );
    }
    if let Some(search) = &state.search {
        let probe = strata_search::SearchRequest {
            limit: 1,
            ..strata_search::SearchRequest::default()
        };
        if let Err(error) = search.service.search(probe).await {
            warn!(%error, "not ready: search index");
            return (
                http::StatusCode::SERVICE_UNAVAILABLE,
                "search index unavailable",
            );
        }
    }
    (http::StatusCode::OK, "ready")
}

/// Removes spool files left by a previous process that stopped mid-request: nothing refers to
/// them (a request is only acknowledged after its object is in the store).
async fn clean_spool(spool_dir: &Path) -> std::io::Result<()> {
    tokio::fs::create_dir_all(spool_dir).await?;
    let mut entries = tokio::fs::read_dir(spool_dir).await?;
    let mut num_removed = 0u64;
    while let Some(entry) = entries.next_entry().await? {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("recv-") {
            tokio::fs::remove_file(entry.path()).await?;
            num_removed += 1;
        } else if name.starts_with("wado-") && entry.file_type().await?.is_dir() {
            // Transcoding and rendering copies of a request that was running.
            tokio::fs::remove_dir_all(entry.path()).await?;
            num_removed += 1;
        }
    }
    if num_removed > 0 {
        info!(num_removed, "removed spool files left by an earlier run");
    }
    Ok(())
}

/// Applies `catalog.password_file` (a mounted secret) to a PostgreSQL URI.
pub fn catalog_uri_with_password(config: &NodeConfig) -> anyhow::Result<String> {
    let Some(password_file) = &config.catalog.password_file else {
        return Ok(config.catalog.uri.clone());
    };
    let password = std::fs::read_to_string(password_file).with_context(|| {
        format!(
            "failed to read catalog.password_file `{}`",
            password_file.display()
        )
    })?;
    let mut uri = url::Url::parse(&config.catalog.uri).context("catalog.uri is not a valid URL")?;
    uri.set_password(Some(password.trim()))
        .map_err(|()| anyhow::anyhow!("catalog.uri cannot carry a password"))?;
    Ok(uri.to_string())
}

/// Hides the password of a database URI for logs and errors.
pub fn redact(uri: &str) -> String {
    match url::Url::parse(uri) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        _ => uri.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_redact_hides_passwords() {
        assert_eq!(redact("postgres://u:secret@h/db"), "postgres://u:***@h/db");
        assert_eq!(redact("sqlite://./x.db"), "sqlite://./x.db");
    }
}
