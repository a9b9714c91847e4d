//! [`RemoteSearchService`]: the [`SearchService`] of a process that does not run the search
//! role. It forwards each search to a search process's `GET /api/search` over HTTP, so the
//! gateway serves `/api/search` with the same handler whether the index is local or not.

use std::time::Duration;

use async_trait::async_trait;

use crate::api::SearchService;
use crate::error::{SearchError, SearchErrorKind, SearchResult};
use crate::query::{SearchRequest, SearchResponse};

/// How long one forwarded search may take before the caller gets a 503.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Adds headers (W3C `traceparent`, ...) to each forwarded request.
pub type HeaderInjector = std::sync::Arc<dyn Fn(&mut http::HeaderMap) + Send + Sync>;

/// Searches through another process's HTTP API.
#[derive(Clone)]
pub struct RemoteSearchService {
    base_url: url::Url,
    client: reqwest::Client,
    inject_headers: Option<HeaderInjector>,
}

impl std::fmt::Debug for RemoteSearchService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteSearchService")
            .field("base_url", &self.base_url.as_str())
            .finish_non_exhaustive()
    }
}

impl RemoteSearchService {
    /// A client of the search process at `base_url` (`http://strata-search:8080`).
    pub fn new(base_url: &str, inject_headers: Option<HeaderInjector>) -> SearchResult<Self> {
        let mut base_url = url::Url::parse(base_url).map_err(|error| {
            SearchError::new(
                SearchErrorKind::InvalidRequest,
                format!("search.url `{base_url}` is not a URL"),
                error,
            )
        })?;
        if !base_url.path().ends_with('/') {
            let path = format!("{}/", base_url.path());
            base_url.set_path(&path);
        }
        let client = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .build()
            .map_err(|error| {
                SearchError::new(
                    SearchErrorKind::Unavailable,
                    "failed to build the HTTP client",
                    error,
                )
            })?;
        Ok(Self {
            base_url,
            client,
            inject_headers,
        })
    }

    fn search_url(&self, request: &SearchRequest) -> url::Url {
        let mut url = self
            .base_url
            .join("api/search")
            .expect("a relative path joins onto an http base");
        url.query_pairs_mut().extend_pairs(request.to_query_pairs());
        url
    }
}

/// The body of a 4xx answer: `application/problem+json` with a `detail`.
#[derive(serde::Deserialize)]
struct Problem {
    detail: Option<String>,
}

#[async_trait]
impl SearchService for RemoteSearchService {
    async fn search(&self, request: SearchRequest) -> SearchResult<SearchResponse> {
        let unavailable = |message: &str, error: reqwest::Error| {
            SearchError::new(SearchErrorKind::Unavailable, message.to_owned(), error)
        };
        let mut headers = http::HeaderMap::new();
        if let Some(inject) = &self.inject_headers {
            inject(&mut headers);
        }
        let response = self
            .client
            .get(self.search_url(&request))
            .headers(headers)
            .send()
            .await
            .map_err(|error| unavailable("the search service did not answer", error))?;
        let status = response.status();
        if status.is_client_error() {
            // The search process validated the same parameters: pass its reason on.
            let detail = response
                .json::<Problem>()
                .await
                .ok()
                .and_then(|problem| problem.detail)
                .unwrap_or_else(|| format!("the search service answered {status}"));
            return Err(SearchError::invalid_request(detail));
        }
        if !status.is_success() {
            return Err(SearchError {
                kind: SearchErrorKind::Unavailable,
                message: format!("the search service answered {status}"),
                source: None,
            });
        }
        response
            .json::<SearchResponse>()
            .await
            .map_err(|error| unavailable("the search service sent an unreadable answer", error))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::query::SortOrder;

    #[test]
    fn test_search_url_round_trips_through_parse_parameters() {
        let service = RemoteSearchService::new("http://search.internal:8080/base", None).unwrap();
        let request = SearchRequest {
            query: "\"right lung\" nodule & more".to_owned(),
            modalities: vec!["CT".to_owned(), "MR".to_owned()],
            sources: vec!["PACS_A".to_owned()],
            institutions: vec!["St. Mary's, North".to_owned()],
            date_from: Some(20240101),
            date_to: None,
            sort: SortOrder::DateAsc,
            offset: 40,
            limit: 20,
        };
        let url = service.search_url(&request);
        assert_eq!(url.path(), "/base/api/search");
        let pairs: Vec<(String, String)> = url.query_pairs().into_owned().collect();
        let parsed = crate::parse_parameters(&pairs).unwrap();
        assert_eq!(parsed, request);
    }
}
