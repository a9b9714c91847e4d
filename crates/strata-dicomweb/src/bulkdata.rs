//! WADO-RS bulk data (PS3.18 §10.4.1.1.5): every `BulkDataURI` the metadata hands out,
//! `{instance URL}/bulk/{tag}[/{item}/{tag}...]`, with HTTP Range requests.
//!
//! - Top-level native Pixel Data is read from the store by range, from the offsets recorded
//!   at ingest (big endian values are swapped to little endian).
//! - Top-level encapsulated Pixel Data is answered as its frames, like the frames resource.
//! - Any other bulk element (large private OB blobs, LUT data, nested icon pixel data...) is
//!   found by parsing the object's header up to the Pixel Data (streamed to a spool file),
//!   which holds at most the data set without its pixel data in memory.
//!
//! Without an Accept header, with `*/*` or `application/octet-stream`, the value is the
//! whole body (`application/octet-stream`); with `multipart/related` it is one part. A
//! `Range: bytes=...` header (one range) selects bytes of the value: 206 with Content-Range
//! (on the response, or on the part), 416 when the range is outside the value.

use std::ops::Range;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use dicom_core::Tag;
use dicom_core::value::Value;
use dicom_dictionary_std::tags;
use dicom_object::{InMemDicomObject, OpenFileOptions};
use futures::StreamExt;
use http::{HeaderMap, HeaderValue, StatusCode, header};

use crate::frames::{self, PixelSource, Shape};
use crate::media::MediaType;
use crate::wado::Target;
use crate::{DicomwebState, Problem};

const EXPLICIT_VR_LITTLE_ENDIAN: &str = "1.2.840.10008.1.2.1";

/// One step of a bulk data path: a tag, or an item index in the sequence named before it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum PathPart {
    Tag(Tag),
    Item(usize),
}

pub(crate) async fn retrieve_bulkdata(
    State(state): State<DicomwebState>,
    Path((study, series, instance, path)): Path<(String, String, String, String)>,
    headers: HeaderMap,
) -> Response {
    let result = async {
        let target = Target::parse(&study, Some(&series), Some(&instance))?;
        let parts = parse_path(&path)?;
        if parts == [PathPart::Tag(tags::PIXEL_DATA)] {
            return pixel_data(&state, &target, &headers).await;
        }
        let shape = negotiate_octet_stream(&headers)?;
        let value = element_value(&state, &target, &parts, &path).await?;
        let total = value.len() as u64;
        let body = move |range: Range<u64>| -> futures::stream::BoxStream<
                'static,
                Result<Bytes, std::io::Error>,
            > {
                let slice = value.slice(range.start as usize..range.end as usize);
                futures::stream::once(async move { Ok(slice) }).boxed()
            };
        octet_response(&headers, shape, total, body)
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

/// Parses `7FE00010` or `00540016/0/00181072`: tags (8 hex digits) and item indices
/// alternating, starting and ending with a tag.
fn parse_path(path: &str) -> Result<Vec<PathPart>, Problem> {
    let bad = || {
        Problem::bad_request(format!(
            "bulk data path `{path}` is not tags (8 hex digits) and item indices alternating"
        ))
    };
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    if segments.len().is_multiple_of(2) {
        return Err(bad());
    }
    segments
        .iter()
        .enumerate()
        .map(|(index, segment)| {
            if index % 2 == 0 {
                if segment.len() != 8 {
                    return Err(bad());
                }
                let value = u32::from_str_radix(segment, 16).map_err(|_| bad())?;
                Ok(PathPart::Tag(Tag(
                    (value >> 16) as u16,
                    (value & 0xFFFF) as u16,
                )))
            } else {
                segment.parse().map(PathPart::Item).map_err(|_| bad())
            }
        })
        .collect()
}

/// Top-level Pixel Data: native by range from the store, encapsulated as frames.
async fn pixel_data(
    state: &DicomwebState,
    target: &Target,
    headers: &HeaderMap,
) -> Result<Response, Problem> {
    let source = PixelSource::load_cached(state, target).await?;
    if !source.is_native() {
        let number_of_frames = source.geometry.number_of_frames;
        let frame_numbers: Vec<u32> =
            (1..=u32::try_from(number_of_frames).unwrap_or(u32::MAX)).collect();
        let shape = frames::negotiate(headers, &source, frame_numbers.len())?;
        let plans = source.frame_plans(state, &frame_numbers).await?;
        return Ok(frames::frames_response(state, &source, plans, shape));
    }
    let shape = negotiate_octet_stream(headers)?;
    let start = source.layout.value_offset;
    let total = source.layout.native_length.unwrap_or(0);
    let swap_unit = source.swap_unit();
    let store = state.store.clone();
    let key = source.location.object.key.clone();
    let body = move |range: Range<u64>| {
        match swap_unit {
            Some(unit) => {
                // Swapping needs whole values: read the aligned superset, then trim.
                let unit = unit as u64;
                let aligned = (range.start / unit * unit)..range.end.div_ceil(unit) * unit;
                let skip = (range.start - aligned.start) as usize;
                let keep = (range.end - range.start) as usize;
                let aligned = (start + aligned.start)..(start + aligned.end.min(total));
                // Big endian data is rare and small: the range is joined in memory.
                futures::stream::once(async move {
                    let mut joined = Vec::with_capacity(skip + keep);
                    let mut chunks = frames::range_stream(
                        store,
                        key,
                        frames::single_range(aligned),
                        Some(unit as usize),
                    );
                    while let Some(chunk) = chunks.next().await {
                        joined.extend_from_slice(&chunk?);
                    }
                    let end = (skip + keep).min(joined.len());
                    Ok(Bytes::from(joined).slice(skip.min(end)..end))
                })
                .boxed()
            }
            None => frames::range_stream(
                store,
                key,
                frames::single_range((start + range.start)..(start + range.end)),
                None,
            ),
        }
    };
    octet_response(headers, shape, total, body)
}

/// Checks that the client accepts `application/octet-stream`, alone or as multipart parts.
fn negotiate_octet_stream(headers: &HeaderMap) -> Result<Shape, Problem> {
    let Some(accept) = headers
        .get(header::ACCEPT)
        .and_then(|value| value.to_str().ok())
    else {
        return Ok(Shape::SinglePart);
    };
    let ranges = MediaType::parse_accept(accept);
    if ranges.is_empty() {
        return Ok(Shape::SinglePart);
    }
    let ts_matches = |range: &MediaType| {
        range
            .param("transfer-syntax")
            .is_none_or(|ts| ts == "*" || ts == EXPLICIT_VR_LITTLE_ENDIAN)
    };
    for range in &ranges {
        match range.essence.as_str() {
            "*/*" | "application/*" | "application/octet-stream" if ts_matches(range) => {
                return Ok(Shape::SinglePart);
            }
            "multipart/related" | "multipart/*" => {
                let type_ok = range.param("type").is_none_or(|part_type| {
                    matches!(
                        part_type,
                        "*/*" | "application/*" | "application/octet-stream"
                    )
                });
                if type_ok && ts_matches(range) {
                    return Ok(Shape::Multipart);
                }
            }
            _ => {}
        }
    }
    Err(Problem::not_acceptable(format!(
        "bulk data is served as application/octet-stream (alone or in multipart/related), \
         not as Accept `{accept}`"
    )))
}

/// What a `Range` header asks of a value of `total` bytes.
#[derive(Debug, PartialEq, Eq)]
enum RangeRequest {
    Whole,
    Part(Range<u64>),
    Unsatisfiable,
}

/// Parses one `bytes=` range (RFC 9110 §14.1.2). Several ranges and unknown units are
/// ignored (the whole value is sent), as the RFC allows.
fn parse_range(headers: &HeaderMap, total: u64) -> RangeRequest {
    let Some(text) = headers
        .get(header::RANGE)
        .and_then(|value| value.to_str().ok())
    else {
        return RangeRequest::Whole;
    };
    let Some(spec) = text.trim().strip_prefix("bytes=") else {
        return RangeRequest::Whole;
    };
    if spec.contains(',') {
        return RangeRequest::Whole;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return RangeRequest::Whole;
    };
    let (first, last) = (first.trim(), last.trim());
    if first.is_empty() {
        // Suffix: the last N bytes.
        let Ok(suffix) = last.parse::<u64>() else {
            return RangeRequest::Whole;
        };
        if suffix == 0 || total == 0 {
            return RangeRequest::Unsatisfiable;
        }
        return RangeRequest::Part(total.saturating_sub(suffix)..total);
    }
    let Ok(first) = first.parse::<u64>() else {
        return RangeRequest::Whole;
    };
    let last = if last.is_empty() {
        total.saturating_sub(1)
    } else {
        match last.parse::<u64>() {
            Ok(last) if last >= first => last.min(total.saturating_sub(1)),
            _ => return RangeRequest::Whole,
        }
    };
    if first >= total {
        return RangeRequest::Unsatisfiable;
    }
    RangeRequest::Part(first..last + 1)
}

/// Answers a value of `total` bytes, whole or the requested range of it.
fn octet_response<F>(
    headers: &HeaderMap,
    shape: Shape,
    total: u64,
    body: F,
) -> Result<Response, Problem>
where
    F: FnOnce(Range<u64>) -> futures::stream::BoxStream<'static, Result<Bytes, std::io::Error>>,
{
    let (status, range) = match parse_range(headers, total) {
        RangeRequest::Whole => (StatusCode::OK, 0..total),
        RangeRequest::Part(range) => (StatusCode::PARTIAL_CONTENT, range),
        RangeRequest::Unsatisfiable => {
            let mut response = Problem {
                status: StatusCode::RANGE_NOT_SATISFIABLE,
                detail: format!("the Range header is outside the {total} bytes of the bulk data"),
                retry_after_seconds: None,
            }
            .into_response();
            if let Ok(value) = HeaderValue::from_str(&format!("bytes */{total}")) {
                response.headers_mut().insert(header::CONTENT_RANGE, value);
            }
            return Ok(response);
        }
    };
    let content_range = (status == StatusCode::PARTIAL_CONTENT).then(|| {
        format!(
            "bytes {}-{}/{total}",
            range.start,
            range.end.saturating_sub(1)
        )
    });
    let length = range.end - range.start;
    let stream = body(range);
    let part_type =
        format!("application/octet-stream; transfer-syntax={EXPLICIT_VR_LITTLE_ENDIAN}");
    let mut response = match shape {
        Shape::SinglePart => {
            let mut response = (
                status,
                [
                    (header::CONTENT_TYPE, "application/octet-stream".to_owned()),
                    (header::CONTENT_LENGTH, length.to_string()),
                ],
                Body::from_stream(stream),
            )
                .into_response();
            if let Some(content_range) = &content_range
                && let Ok(value) = HeaderValue::from_str(content_range)
            {
                response.headers_mut().insert(header::CONTENT_RANGE, value);
            }
            response
        }
        Shape::Multipart => {
            let boundary = format!("strata-{}", uuid::Uuid::new_v4().simple());
            let range_line = content_range
                .map(|content_range| format!("Content-Range: {content_range}\r\n"))
                .unwrap_or_default();
            let head = Bytes::from(format!(
                "--{boundary}\r\nContent-Type: {part_type}\r\n{range_line}Content-Length: {length}\r\n\r\n"
            ));
            let tail = Bytes::from(format!("\r\n--{boundary}--\r\n"));
            let stream = futures::stream::once(async move { Ok::<Bytes, std::io::Error>(head) })
                .chain(stream)
                .chain(futures::stream::once(async move { Ok(tail) }));
            (
                status,
                [(
                    header::CONTENT_TYPE,
                    format!(
                        "multipart/related; type=\"application/octet-stream\"; boundary={boundary}"
                    ),
                )],
                Body::from_stream(stream),
            )
                .into_response()
        }
    };
    response
        .headers_mut()
        .insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    Ok(response)
}

/// Reads the value of a bulk element other than the top-level Pixel Data.
async fn element_value(
    state: &DicomwebState,
    target: &Target,
    parts: &[PathPart],
    path_text: &str,
) -> Result<Bytes, Problem> {
    let locations = crate::wado::locations(state, target).await?;
    let location = locations.into_iter().next().ok_or_else(|| {
        Problem::not_found(format!("{} is not in the archive", target.describe()))
    })?;
    crate::problem::ensure_readable(state, std::slice::from_ref(&location)).await?;
    // Only the bytes before the Pixel Data are needed (its element header included, so the
    // parser sees where to stop).
    let limit = state
        .catalog
        .instance_pixel_data_layout(&location.sop_instance_uid)
        .await
        .map_err(|error| Problem::unavailable(&error))?
        .as_deref()
        .and_then(strata_dicom::PixelDataLayout::from_catalog_json)
        .map(|layout| layout.value_offset);
    let spooled = frames::spool_object(state, &location, limit).await?;
    let path = spooled.to_path_buf();
    let parts = parts.to_vec();
    let found = tokio::task::spawn_blocking(move || -> Result<Option<Vec<u8>>, String> {
        let object = OpenFileOptions::new()
            .read_until(tags::PIXEL_DATA)
            .open_file(&path)
            .map_err(|error| error.to_string())?;
        Ok(find_value(&object, &parts))
    })
    .await
    .map_err(|error| Problem::unavailable(&error))?
    .map_err(|error| Problem::unavailable(&format!("stored object unreadable: {error}")))?;
    drop(spooled);
    found.map(Bytes::from).ok_or_else(|| {
        Problem::not_found(format!(
            "instance {} has no bulk data at `{path_text}`",
            location.sop_instance_uid
        ))
    })
}

/// Follows `parts` through sequences and items; returns the binary value at the end.
fn find_value(object: &InMemDicomObject, parts: &[PathPart]) -> Option<Vec<u8>> {
    let (PathPart::Tag(tag), rest) = parts.split_first()? else {
        return None;
    };
    let element = object.element(*tag).ok()?;
    match rest {
        [] => match element.value() {
            Value::Primitive(primitive) => Some(primitive.to_bytes().into_owned()),
            Value::PixelSequence(sequence) => {
                Some(sequence.fragments().iter().flatten().copied().collect())
            }
            Value::Sequence(_) => None,
        },
        [PathPart::Item(index), deeper @ ..] => {
            let item = element.items()?.get(*index)?;
            find_value(item, deeper)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_range(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::RANGE, value.parse().unwrap());
        headers
    }

    #[test]
    fn test_ranges_follow_rfc_9110() {
        assert_eq!(parse_range(&HeaderMap::new(), 100), RangeRequest::Whole);
        assert_eq!(
            parse_range(&with_range("bytes=0-9"), 100),
            RangeRequest::Part(0..10)
        );
        assert_eq!(
            parse_range(&with_range("bytes=90-"), 100),
            RangeRequest::Part(90..100)
        );
        assert_eq!(
            parse_range(&with_range("bytes=-5"), 100),
            RangeRequest::Part(95..100)
        );
        assert_eq!(
            parse_range(&with_range("bytes=50-500"), 100),
            RangeRequest::Part(50..100)
        );
        assert_eq!(
            parse_range(&with_range("bytes=100-"), 100),
            RangeRequest::Unsatisfiable
        );
        assert_eq!(
            parse_range(&with_range("bytes=-0"), 100),
            RangeRequest::Unsatisfiable
        );
        assert_eq!(
            parse_range(&with_range("bytes=0-1,5-6"), 100),
            RangeRequest::Whole
        );
        assert_eq!(
            parse_range(&with_range("items=0-1"), 100),
            RangeRequest::Whole
        );
        assert_eq!(
            parse_range(&with_range("bytes=9-3"), 100),
            RangeRequest::Whole
        );
    }

    #[test]
    fn test_paths_alternate_tags_and_items() {
        assert_eq!(
            parse_path("7FE00010").unwrap(),
            vec![PathPart::Tag(tags::PIXEL_DATA)]
        );
        assert_eq!(
            parse_path("00880200/0/7FE00010").unwrap(),
            vec![
                PathPart::Tag(Tag(0x0088, 0x0200)),
                PathPart::Item(0),
                PathPart::Tag(tags::PIXEL_DATA)
            ]
        );
        for bad in ["", "7FE0", "00880200/0", "00880200/x/7FE00010", "ZZZZZZZZ"] {
            assert_eq!(
                parse_path(bad).unwrap_err().status,
                StatusCode::BAD_REQUEST,
                "{bad}"
            );
        }
    }
}
