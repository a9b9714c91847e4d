//! WADO-RS metadata responses: the precomputed document of each series, and ETag /
//! If-None-Match on every metadata resource.
//!
//! The catalog keeps one metadata document per series (`series_metadata_cache`), tagged with
//! the sequence of the series' latest event when it was built. Every store and every delete
//! appends an event, so a request compares the tag with the series' latest event
//! ([`strata_catalog::Catalog::change_sequence`]) and rebuilds the document when they differ:
//! the answer is always the catalog's current state, with no invalidation hook to forget.
//! The sequence is read *before* the instances, so a document can only ever be tagged older
//! than its content (causing one extra rebuild), never newer.

use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use strata_catalog::{CachedSeriesMetadata, InstanceLocation};
use strata_dicom::BULK_DATA_PLACEHOLDER;
use strata_types::SeriesUid;
use tracing::{debug, warn};

use crate::wado::Target;
use crate::{DicomwebState, Problem, base_url};

/// Answers a study, series or instance metadata request (the Accept header already checked).
pub(crate) async fn metadata_response(
    state: &DicomwebState,
    target: &Target,
    headers: &HeaderMap,
) -> Result<Response, Problem> {
    let base = base_url(&state.settings, headers);
    let (document, etag) = match (&target.series, &target.instance) {
        (Some(series), None) => {
            let version = state
                .catalog
                .change_sequence(&target.study, Some(series))
                .await
                .map_err(|error| Problem::unavailable(&error))?;
            let etag = version.map(|version| entity_tag("s", &version.to_string(), &base));
            if let Some(etag) = &etag
                && if_none_match(headers, etag)
            {
                return Ok(not_modified(etag));
            }
            let document = series_document(state, target, series, version).await?;
            (document, etag)
        }
        (None, _) => {
            let version = state
                .catalog
                .change_sequence(&target.study, None)
                .await
                .map_err(|error| Problem::unavailable(&error))?;
            let etag = version.map(|version| entity_tag("t", &version.to_string(), &base));
            if let Some(etag) = &etag
                && if_none_match(headers, etag)
            {
                return Ok(not_modified(etag));
            }
            let entries = metadata_entries(state, target).await?;
            (assemble(&entries), etag)
        }
        (Some(_), Some(_)) => {
            let entries = metadata_entries(state, target).await?;
            // An instance never changes under its UID: its checksum identifies the document.
            let etag = entries
                .first()
                .map(|(location, _)| entity_tag("i", &location.object.sha256, &base));
            if let Some(etag) = &etag
                && if_none_match(headers, etag)
            {
                return Ok(not_modified(etag));
            }
            (assemble(&entries), etag)
        }
    };
    let body = document.replace(BULK_DATA_PLACEHOLDER, &format!("{base}/"));
    let mut response = (
        [
            (header::CONTENT_TYPE, "application/dicom+json"),
            // Caches may keep the document but must revalidate it (cheap: If-None-Match).
            (header::CACHE_CONTROL, "private, no-cache"),
        ],
        body,
    )
        .into_response();
    if let Some(etag) = etag.and_then(|etag| HeaderValue::from_str(&etag).ok()) {
        response.headers_mut().insert(header::ETAG, etag);
    }
    Ok(response)
}

/// Returns the series' metadata document, from the catalog's precomputed copy when it is
/// current, else rebuilt (and stored for the next request).
async fn series_document(
    state: &DicomwebState,
    target: &Target,
    series: &SeriesUid,
    version: Option<i64>,
) -> Result<String, Problem> {
    if let Some(version) = version {
        let cached = state
            .catalog
            .cached_series_metadata(series)
            .await
            .map_err(|error| Problem::unavailable(&error))?;
        if let Some(cached) = cached
            && cached.change_sequence == version
            && cached.study_instance_uid == target.study
            && cached.num_instances > 0
        {
            debug!(series_instance_uid = %series, "series metadata served from the precomputed document");
            return Ok(cached.document);
        }
    }
    let entries = metadata_entries(state, target).await?;
    let document = assemble(&entries);
    if let Some(version) = version {
        let cached = CachedSeriesMetadata {
            series_instance_uid: series.clone(),
            study_instance_uid: target.study.clone(),
            change_sequence: version,
            num_instances: entries.len() as u64,
            document: document.clone(),
        };
        if let Err(error) = state.catalog.put_series_metadata(&cached).await {
            // The response is still right; the next request rebuilds the document again.
            warn!(%error, series_instance_uid = %series, "failed to store the series metadata document");
        }
        debug!(series_instance_uid = %series, num_instances = entries.len(), "series metadata document rebuilt");
    }
    Ok(document)
}

/// Returns the instances of the target with their metadata; 404 (or 400 for a malformed UID)
/// when there are none.
async fn metadata_entries(
    state: &DicomwebState,
    target: &Target,
) -> Result<Vec<(InstanceLocation, String)>, Problem> {
    let entries = state
        .catalog
        .instance_metadata_with_locations(
            &target.study,
            target.series.as_ref(),
            target.instance.as_ref(),
        )
        .await
        .map_err(|error| Problem::unavailable(&error))?;
    if entries.is_empty() {
        // The same 404 / 400 as every other WADO-RS resource.
        crate::wado::locations(state, target).await?;
        return Err(Problem::not_found(format!(
            "{} is not in the archive",
            target.describe()
        )));
    }
    Ok(entries)
}

/// Joins instance documents into a DICOM JSON array. Each instance's bulk data placeholders
/// gain its path, so only the base URL is left to substitute when the document is served.
fn assemble(entries: &[(InstanceLocation, String)]) -> String {
    let mut body = String::with_capacity(
        entries
            .iter()
            .map(|(_, document)| document.len() + 2)
            .sum::<usize>()
            + 2,
    );
    body.push('[');
    for (index, (location, document)) in entries.iter().enumerate() {
        if index > 0 {
            body.push(',');
        }
        let instance_prefix = format!(
            "{BULK_DATA_PLACEHOLDER}studies/{}/series/{}/instances/{}/",
            location.study_instance_uid, location.series_instance_uid, location.sop_instance_uid
        );
        body.push_str(&document.replace(BULK_DATA_PLACEHOLDER, &instance_prefix));
    }
    body.push(']');
    body
}

/// A weak entity tag: the document's version plus the base URL its bulk data URIs carry.
fn entity_tag(kind: &str, version: &str, base: &str) -> String {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::hash::DefaultHasher::new();
    base.hash(&mut hasher);
    format!("W/\"{kind}{version}-{:016x}\"", hasher.finish())
}

/// Whether If-None-Match names `etag` (weak comparison, RFC 9110 §13.1.2) or is `*`.
pub(crate) fn if_none_match(headers: &HeaderMap, etag: &str) -> bool {
    let opaque = |tag: &str| tag.trim().trim_start_matches("W/").to_owned();
    let wanted = opaque(etag);
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|candidate| candidate.trim() == "*" || opaque(candidate) == wanted)
}

fn not_modified(etag: &str) -> Response {
    let mut response = StatusCode::NOT_MODIFIED.into_response();
    if let Ok(value) = HeaderValue::from_str(etag) {
        response.headers_mut().insert(header::ETAG, value);
    }
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, no-cache"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_if_none_match_compares_weakly_and_accepts_lists() {
        let etag = entity_tag("s", "42", "http://host/dicomweb");
        let mut headers = HeaderMap::new();
        assert!(!if_none_match(&headers, &etag));
        let strong = etag.trim_start_matches("W/").to_owned();
        headers.insert(
            header::IF_NONE_MATCH,
            HeaderValue::from_str(&format!("\"other\", {strong}")).unwrap(),
        );
        assert!(if_none_match(&headers, &etag));
        assert!(!if_none_match(
            &headers,
            &entity_tag("s", "43", "http://host/dicomweb")
        ));
    }

    #[test]
    fn test_entity_tag_depends_on_the_base_url() {
        assert_ne!(
            entity_tag("s", "1", "http://a/dicomweb"),
            entity_tag("s", "1", "http://b/dicomweb")
        );
    }
}
