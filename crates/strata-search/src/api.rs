//! `GET /api/search`: the HTTP API of the search service, and the [`SearchService`] trait it
//! calls (local index now; a remote client implements the same trait).

use std::sync::Arc;

use async_trait::async_trait;
use axum::Router;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::StatusCode;

use crate::error::{SearchError, SearchResult};
use crate::index::SearchIndex;
use crate::query::{MAX_LIMIT, SearchRequest, SearchResponse, SortOrder};

/// Runs searches, wherever the index lives.
#[async_trait]
pub trait SearchService: Send + Sync + 'static {
    /// Returns one page of the studies matching `request`.
    async fn search(&self, request: SearchRequest) -> SearchResult<SearchResponse>;
}

/// Searches an index in this process, on a blocking thread.
#[derive(Debug, Clone)]
pub struct LocalSearchService {
    index: Arc<SearchIndex>,
}

impl LocalSearchService {
    /// A service over `index`.
    pub fn new(index: Arc<SearchIndex>) -> Self {
        Self { index }
    }
}

#[async_trait]
impl SearchService for LocalSearchService {
    async fn search(&self, request: SearchRequest) -> SearchResult<SearchResponse> {
        let index = self.index.clone();
        tokio::task::spawn_blocking(move || index.search(&request))
            .await
            .map_err(|error| {
                SearchError::new(
                    crate::SearchErrorKind::Index,
                    "a search task panicked",
                    error,
                )
            })?
    }
}

/// What the search router needs.
#[derive(Clone)]
pub struct SearchApiState {
    pub service: Arc<dyn SearchService>,
    /// Base of the DICOMweb URLs in results, e.g. `/dicomweb` or `https://pacs.example.org/dicomweb`.
    pub dicomweb_base_url: String,
    /// Base of the FHIR URLs in results, e.g. `/fhir`.
    pub fhir_base_url: String,
}

/// Returns the router of the search API, to be nested under `/api`: `GET /search`.
pub fn router(state: SearchApiState) -> Router {
    Router::new()
        .route("/search", get(search))
        .with_state(state)
}

async fn search(
    State(state): State<SearchApiState>,
    Query(parameters): Query<Vec<(String, String)>>,
) -> Response {
    let request = match parse_parameters(&parameters) {
        Ok(request) => request,
        Err(error) => return problem(StatusCode::BAD_REQUEST, &error.message),
    };
    match state.service.search(request).await {
        Ok(response) => {
            let mut body = serde_json::to_value(&response).expect("a search response serializes");
            if let Some(hits) = body
                .get_mut("hits")
                .and_then(serde_json::Value::as_array_mut)
            {
                for hit in hits {
                    let study_uid = hit["study_instance_uid"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned();
                    hit["dicomweb_url"] =
                        format!("{}/studies/{study_uid}", state.dicomweb_base_url).into();
                    hit["dicomweb_metadata_url"] =
                        format!("{}/studies/{study_uid}/metadata", state.dicomweb_base_url).into();
                    hit["fhir_url"] =
                        format!("{}/ImagingStudy/{study_uid}", state.fhir_base_url).into();
                }
            }
            axum::Json(body).into_response()
        }
        Err(error) if error.is_invalid_request() => {
            problem(StatusCode::BAD_REQUEST, &error.message)
        }
        Err(error) if error.kind == crate::SearchErrorKind::Unavailable => {
            tracing::warn!(%error, "search service unavailable");
            problem(
                StatusCode::SERVICE_UNAVAILABLE,
                "the search service is unavailable",
            )
        }
        Err(error) => {
            tracing::error!(%error, "search failed");
            problem(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
        }
    }
}

/// Parses the query parameters of `GET /api/search`. Every error names the parameter.
pub fn parse_parameters(parameters: &[(String, String)]) -> SearchResult<SearchRequest> {
    let mut request = SearchRequest::default();
    for (name, value) in parameters {
        let list = || {
            value
                .split(',')
                .map(str::trim)
                .filter(|item| !item.is_empty())
                .map(str::to_owned)
                .collect::<Vec<_>>()
        };
        match name.as_str() {
            "q" => request.query = value.clone(),
            "modality" => request.modalities.extend(list()),
            "source" => request.sources.extend(list()),
            "institution" => request.institutions.push(value.trim().to_owned()),
            "date" => {
                let (from, to) = parse_date_range(value)?;
                request.date_from = from;
                request.date_to = to;
            }
            "sort" => {
                request.sort = match value.as_str() {
                    "relevance" => SortOrder::Relevance,
                    "date" | "-date" | "date_desc" => SortOrder::DateDesc,
                    "+date" | "date_asc" => SortOrder::DateAsc,
                    _ => {
                        return Err(SearchError::invalid_request(
                            "sort must be `relevance`, `date_desc` or `date_asc`",
                        ));
                    }
                }
            }
            "limit" => {
                request.limit = value
                    .parse()
                    .ok()
                    .filter(|limit| (1..=MAX_LIMIT).contains(limit))
                    .ok_or_else(|| {
                        SearchError::invalid_request(format!(
                            "limit must be an integer between 1 and {MAX_LIMIT}"
                        ))
                    })?;
            }
            "offset" => {
                request.offset = value.parse().map_err(|_| {
                    SearchError::invalid_request("offset must be a non-negative integer")
                })?;
            }
            unknown => {
                return Err(SearchError::invalid_request(format!(
                    "unknown parameter `{unknown}`; expected q, modality, source, institution, date, sort, limit or offset"
                )));
            }
        }
    }
    Ok(request)
}

/// Parses a DICOM-style date range: `YYYYMMDD`, `YYYYMMDD-`, `-YYYYMMDD`, `YYYYMMDD-YYYYMMDD`
/// (dashes inside ISO dates, `2024-03-15`, are accepted too when unambiguous).
fn parse_date_range(value: &str) -> SearchResult<(Option<u64>, Option<u64>)> {
    let invalid = || {
        SearchError::invalid_request(
            "date must be YYYYMMDD, YYYYMMDD-, -YYYYMMDD or YYYYMMDD-YYYYMMDD",
        )
    };
    let parse_one = |text: &str| -> SearchResult<Option<u64>> {
        if text.is_empty() {
            return Ok(None);
        }
        let valid = text.len() == 8
            && text.bytes().all(|byte| byte.is_ascii_digit())
            && (1..=12).contains(&text[4..6].parse::<u32>().unwrap_or(0))
            && (1..=31).contains(&text[6..8].parse::<u32>().unwrap_or(0));
        if !valid {
            return Err(invalid());
        }
        Ok(text.parse().ok())
    };
    let value = value.trim();
    let (from, to) = match value.split_once('-') {
        None => (parse_one(value)?, parse_one(value)?),
        Some((from, to)) => (parse_one(from)?, parse_one(to)?),
    };
    if from.is_none() && to.is_none() {
        return Err(invalid());
    }
    if let (Some(from), Some(to)) = (from, to)
        && from > to
    {
        return Err(SearchError::invalid_request(
            "date range starts after it ends",
        ));
    }
    Ok((from, to))
}

fn problem(status: StatusCode, detail: &str) -> Response {
    let body = serde_json::json!({
        "type": "about:blank",
        "title": status.canonical_reason().unwrap_or("Error"),
        "status": status.as_u16(),
        "detail": detail,
    });
    (
        status,
        [(http::header::CONTENT_TYPE, "application/problem+json")],
        body.to_string(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(query: &[(&str, &str)]) -> SearchResult<SearchRequest> {
        let owned = query
            .iter()
            .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
            .collect::<Vec<_>>();
        parse_parameters(&owned)
    }

    #[test]
    fn test_parameters_parse_filters_paging_and_sort() {
        let request = parse(&[
            ("q", "nodule"),
            ("modality", "CT,mr"),
            ("date", "20240101-20241231"),
            ("sort", "date_desc"),
            ("limit", "5"),
            ("offset", "10"),
            ("source", "HOSP-A"),
        ])
        .expect("valid");
        assert_eq!(request.modalities, ["CT", "mr"]);
        assert_eq!(
            (request.date_from, request.date_to),
            (Some(20240101), Some(20241231))
        );
        assert_eq!(request.sort, SortOrder::DateDesc);
        assert_eq!((request.limit, request.offset), (5, 10));
        assert_eq!(request.sources, ["HOSP-A"]);
        assert_eq!(parse(&[("date", "20240101-")]).expect("open").date_to, None);
    }

    #[test]
    fn test_bad_parameters_are_named() {
        for (name, value) in [
            ("limit", "0"),
            ("limit", "abc"),
            ("offset", "-1"),
            ("date", "2024"),
            ("date", "20241301"),
            ("date", "20240201-20240101"),
            ("sort", "name"),
            ("page", "2"),
        ] {
            let error = parse(&[(name, value)]).expect_err(value);
            assert!(
                error.message.contains(name),
                "{name}={value}: {}",
                error.message
            );
        }
    }
}
