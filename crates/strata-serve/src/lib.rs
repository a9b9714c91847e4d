//! Starts a Strata node: opens the catalog and the object store named by the configuration,
//! wires the ingest pipeline and the protocol adapters, serves HTTP, and shuts down in order.
//!
//! The only crate that knows every service; the `strata` binary calls [`serve_node`].

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
use tower_http::trace::TraceLayer;
use tracing::{Span, info, info_span, warn};

mod search;

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
    let catalog_uri = catalog_uri_with_password(&config)?;
    let catalog = strata_catalog::open_catalog(&catalog_uri, config.catalog.max_connections)
        .await
        .with_context(|| {
            format!(
                "failed to open the catalog at `{}`",
                redact(&config.catalog.uri)
            )
        })?;
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
        }),
    };
    let search_node = search::open_search(&config, catalog.clone())?;
    let app = http_router(
        dicomweb_state,
        catalog.clone(),
        store.clone(),
        config.dicomweb.max_request_bytes,
        search_node.as_ref().map(|node| node.api_state.clone()),
    );

    let listen_addr = config.http_socket_addr()?;
    let listener = tokio::net::TcpListener::bind(listen_addr)
        .await
        .with_context(|| format!("failed to listen on {listen_addr} (http.addr / --http-addr)"))?;
    let http_addr = listener.local_addr()?;
    let shutdown = CancellationToken::new();
    let shutdown_signal = shutdown.clone();
    let (dimse_addr, dimse_task) = start_dimse(&config, dimse_services, shutdown.clone()).await?;
    // The indexer stops on shutdown after committing what it applied (docs/search.md).
    let search_task = search_node.map(|node| tokio::spawn(node.indexer.run(shutdown.clone())));
    info!(
        %http_addr,
        dicomweb = %format!("http://{http_addr}/dicomweb"),
        catalog = %redact(&config.catalog.uri),
        storage = %store.describe(),
        "node ready http_addr={http_addr}"
    );
    let task = tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async move { shutdown_signal.cancelled().await })
        .await
        .context("the HTTP server failed")?;
        if let Some(search_task) = search_task {
            search_task.await.context("the search indexer panicked")?;
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
    services: strata_dimse::DimseServices,
    shutdown: CancellationToken,
) -> anyhow::Result<(Option<SocketAddr>, Option<DimseTask>)> {
    if !config.dimse.enabled {
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
    };
    info!(%dimse_addr, ae_title = %settings.ae_title, "dimse listener ready dimse_addr={dimse_addr}");
    let task = tokio::spawn(strata_dimse::serve_dimse(
        listener, settings, services, shutdown,
    ));
    Ok((Some(dimse_addr), Some(task)))
}

/// Runs a node until `shutdown` is cancelled, then drains and returns.
pub async fn serve_node(config: NodeConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    let node = start_node(config).await?;
    shutdown.cancelled().await;
    info!("shutting down: no new requests, draining in-flight ones");
    node.shutdown.cancel();
    match tokio::time::timeout(Duration::from_secs(30), node.task).await {
        Ok(joined) => joined.context("the server task panicked")?,
        Err(_) => {
            warn!("in-flight requests did not finish within 30 s; exiting anyway");
            Ok(())
        }
    }
}

#[derive(Clone)]
struct HealthState {
    catalog: Arc<dyn Catalog>,
    store: Arc<dyn BlobStore>,
}

fn http_router(
    dicomweb_state: DicomwebState,
    catalog: Arc<dyn Catalog>,
    store: Arc<dyn BlobStore>,
    max_request_bytes: u64,
    search_state: Option<strata_search::SearchApiState>,
) -> Router {
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
        .with_state(HealthState { catalog, store });
    Router::new()
        .nest("/dicomweb", strata_dicomweb::router(dicomweb_state))
        .nest("/fhir", strata_fhir::router(fhir_state))
        .merge(match search_state {
            Some(search_state) => Router::new().nest("/api", strata_search::router(search_state)),
            None => Router::new(),
        })
        .merge(health)
        .layer(tower_http::limit::RequestBodyLimitLayer::new(
            usize::try_from(max_request_bytes).unwrap_or(usize::MAX),
        ))
        .layer(
            // Spans carry the method and the route template, never the query string (QIDO
            // queries may hold patient names and IDs).
            TraceLayer::new_for_http()
                .make_span_with(|request: &http::Request<axum::body::Body>| {
                    let route = request
                        .extensions()
                        .get::<axum::extract::MatchedPath>()
                        .map(|path| path.as_str().to_owned())
                        .unwrap_or_else(|| "unmatched".to_owned());
                    info_span!("http_request", method = %request.method(), route = %route, status = tracing::field::Empty)
                })
                .on_response(|response: &http::Response<axum::body::Body>, latency: Duration, span: &Span| {
                    span.record("status", response.status().as_u16());
                    tracing::debug!(latency_ms = latency.as_millis() as u64, "response");
                }),
        )
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
    (http::StatusCode::OK, "ready")
}

/// Removes spool files left by a previous process that stopped mid-request: nothing refers to
/// them (a request is only acknowledged after its object is in the store).
async fn clean_spool(spool_dir: &Path) -> std::io::Result<()> {
    tokio::fs::create_dir_all(spool_dir).await?;
    let mut entries = tokio::fs::read_dir(spool_dir).await?;
    let mut num_removed = 0u64;
    while let Some(entry) = entries.next_entry().await? {
        if entry.file_name().to_string_lossy().starts_with("recv-") {
            tokio::fs::remove_file(entry.path()).await?;
            num_removed += 1;
        }
    }
    if num_removed > 0 {
        info!(num_removed, "removed spool files left by an earlier run");
    }
    Ok(())
}

/// Applies `catalog.password_file` (a mounted secret) to a PostgreSQL URI.
fn catalog_uri_with_password(config: &NodeConfig) -> anyhow::Result<String> {
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
