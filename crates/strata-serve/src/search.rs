//! Wiring of the embedded search service (issue 5): the index, its indexer task, the API state.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use strata_catalog::Catalog;
use strata_config::NodeConfig;
use strata_search::{
    DocumentSettings, Indexer, IndexerSettings, LocalSearchService, SearchApiState, SearchIndex,
};

/// The search service of a node: its index and the indexer that feeds it.
pub(crate) struct SearchNode {
    pub(crate) api_state: SearchApiState,
    pub(crate) indexer: Indexer,
}

/// Opens the index (creating it on first start) when `search.enabled`. Fails before serving
/// when the index is unusable (another process holds it, or it needs a rebuild).
pub(crate) fn open_search(
    config: &NodeConfig,
    catalog: Arc<dyn Catalog>,
) -> anyhow::Result<Option<SearchNode>> {
    if !config.search.enabled {
        return Ok(None);
    }
    let index_dir = config
        .search
        .index_dir
        .clone()
        .unwrap_or_else(|| config.data_dir.join("search"));
    let settings = DocumentSettings {
        include_private_tags: config.search.include_private_tags,
    };
    let index = Arc::new(SearchIndex::open(&index_dir, settings).with_context(|| {
        format!(
            "failed to open the search index (search.index_dir `{}`)",
            index_dir.display()
        )
    })?);
    let indexer = Indexer::new(
        catalog,
        index.clone(),
        IndexerSettings {
            poll_interval: Duration::from_millis(config.search.poll_interval_ms),
            commit_interval: Duration::from_millis(config.search.commit_interval_ms),
            ..IndexerSettings::default()
        },
    );
    let (dicomweb_base_url, fhir_base_url) = link_bases(config);
    Ok(Some(SearchNode {
        api_state: SearchApiState {
            service: Arc::new(LocalSearchService::new(index)),
            dicomweb_base_url,
            fhir_base_url,
        },
        indexer,
    }))
}

/// The search API of a process without the search role: forwards to `search.url` when set.
pub(crate) fn remote_search(config: &NodeConfig) -> anyhow::Result<Option<SearchApiState>> {
    let Some(url) = &config.search.url else {
        return Ok(None);
    };
    // W3C trace context travels with each forwarded search (one trace across the roles).
    // So does the caller's bearer token: the search process checks the same tokens.
    let inject: strata_search::HeaderInjector = Arc::new(|headers: &mut http::HeaderMap| {
        strata_telemetry::inject_current_context(headers);
        if let Ok(Some(authorization)) =
            crate::auth::CALLER_AUTHORIZATION.try_with(|authorization| authorization.clone())
        {
            headers.insert(http::header::AUTHORIZATION, authorization);
        }
    });
    let service = strata_search::RemoteSearchService::new(url, Some(inject))
        .with_context(|| format!("search.url `{url}` is not usable"))?;
    let (dicomweb_base_url, fhir_base_url) = link_bases(config);
    Ok(Some(SearchApiState {
        service: Arc::new(service),
        dicomweb_base_url,
        fhir_base_url,
    }))
}

/// The DICOMweb and FHIR bases of the links in search results.
fn link_bases(config: &NodeConfig) -> (String, String) {
    let dicomweb_base_url = config
        .dicomweb
        .public_base_url
        .clone()
        .map(|url| url.trim_end_matches('/').to_owned())
        .unwrap_or_else(|| "/dicomweb".to_owned());
    // The FHIR base sits beside the DICOMweb one (`…/dicomweb` → `…/fhir`).
    let fhir_base_url = match dicomweb_base_url.strip_suffix("/dicomweb") {
        Some(root) => format!("{root}/fhir"),
        None => "/fhir".to_owned(),
    };
    (dicomweb_base_url, fhir_base_url)
}
