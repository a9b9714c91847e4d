//! What a browser client needs around the DICOMweb routes: CORS (configurable, off by
//! default) and gzip compression of JSON responses only.

use std::time::Duration;

use axum::Router;
use http::header::{self, HeaderName};
use http::{HeaderMap, HeaderValue, Method, StatusCode, Version};
use tower_http::compression::CompressionLayer;
use tower_http::compression::predicate::{Predicate, SizeAbove};
use tower_http::cors::{AllowOrigin, CorsLayer};

/// JSON bodies smaller than this are sent as they are.
const MIN_COMPRESSED_BYTES: u64 = 512;

/// Wraps the router with JSON compression and, when `cors_allowed_origins` is not empty, CORS.
pub(crate) fn browser_layers(router: Router, cors_allowed_origins: &[String]) -> Router {
    let compression = CompressionLayer::new()
        .gzip(true)
        .compress_when(SizeAbove::new(MIN_COMPRESSED_BYTES).and(is_json_response));
    let router = router.layer(compression);
    match cors_layer(cors_allowed_origins) {
        Some(cors) => router.layer(cors),
        None => router,
    }
}

/// Compresses JSON only (DICOM JSON, QIDO-RS results, problem details): DICOM objects, pixel
/// data and bulk data are sent as stored, so range requests and byte-exact parts keep working
/// and no CPU is spent on data that is usually compressed already.
fn is_json_response(
    _status: StatusCode,
    _version: Version,
    headers: &HeaderMap,
    _extensions: &http::Extensions,
) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .map(|content_type| {
            let essence = content_type
                .split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase();
            essence == "application/json" || essence.ends_with("+json")
        })
        .unwrap_or(false)
}

fn cors_layer(cors_allowed_origins: &[String]) -> Option<CorsLayer> {
    if cors_allowed_origins.is_empty() {
        return None;
    }
    let allow_origin = if cors_allowed_origins.iter().any(|origin| origin == "*") {
        AllowOrigin::any()
    } else {
        // The configuration is validated at load time; an origin that is still not a valid
        // header value is skipped rather than failing every request.
        AllowOrigin::list(
            cors_allowed_origins
                .iter()
                .filter_map(|origin| HeaderValue::from_str(origin.trim_end_matches('/')).ok()),
        )
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow_origin)
            .allow_methods([
                Method::GET,
                Method::HEAD,
                Method::POST,
                Method::DELETE,
                Method::OPTIONS,
            ])
            .allow_headers([
                header::ACCEPT,
                header::ACCEPT_ENCODING,
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                header::IF_NONE_MATCH,
                header::RANGE,
            ])
            .expose_headers([
                header::CONTENT_LENGTH,
                header::CONTENT_RANGE,
                header::CONTENT_TYPE,
                header::ETAG,
                header::WARNING,
                HeaderName::from_static("x-total-count"),
            ])
            .max_age(Duration::from_secs(600)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers_with(content_type: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_str(content_type).unwrap(),
        );
        headers
    }

    #[test]
    fn test_only_json_is_compressed() {
        let json = |content_type: &str| {
            is_json_response(
                StatusCode::OK,
                Version::HTTP_11,
                &headers_with(content_type),
                &http::Extensions::new(),
            )
        };
        assert!(json("application/dicom+json"));
        assert!(json("application/json; charset=utf-8"));
        assert!(json("application/problem+json"));
        assert!(!json(
            "multipart/related; type=\"application/dicom\"; boundary=x"
        ));
        assert!(!json("application/octet-stream"));
        assert!(!json("application/zip"));
    }
}
