//! WADO-RS frames (PS3.18 §10.4.1.1.3 Frame Pixel Data): one or several frames of an
//! instance, read from the object store with range requests, never by loading the instance.
//!
//! Where the pixel data lies is recorded at ingest ([`strata_dicom::PixelDataLayout`], in the
//! catalog as JSON). For an instance stored before layouts were recorded, the object is parsed
//! once (streamed to a spool file) and its layout recorded for the next request.
//!
//! - Native pixel data: frame `n` is `rows × columns × samples × bits / 8` bytes at
//!   `(n - 1) × that` in the value (`YBR_*_422` counts two samples per pixel; single-bit frames
//!   must start on a byte boundary). Served as `application/octet-stream` in Explicit VR
//!   Little Endian byte order: Explicit VR Big Endian data is byte-swapped.
//! - Encapsulated pixel data: one fragment per frame when the counts agree (always so with an
//!   Extended Offset Table); the Basic Offset Table when it is present; all fragments for a
//!   single frame; else the fragments that begin a codestream (JPEG SOI, JPEG 2000 SOC or JP2
//!   signature) start the frames. Served in the stored transfer syntax's media type.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::StreamExt;
use http::{HeaderMap, StatusCode};
use serde_json::Value as Json;
use strata_catalog::InstanceLocation;
use strata_dicom::{InspectLimits, PixelDataLayout};
use strata_types::{SeriesUid, SopInstanceUid, StudyUid};
use tokio::io::AsyncWriteExt;
use tracing::{debug, warn};

use crate::media::MediaType;
use crate::wado::Target;
use crate::{DicomwebState, Problem};

/// Range reads are issued in pieces of at most this size (a multiple of 8, so byte swapping
/// never splits a value).
const READ_CHUNK_BYTES: u64 = 4 << 20;
/// The most frames one request may name.
const MAX_FRAMES_PER_REQUEST: usize = 10_000;
const EXPLICIT_VR_LITTLE_ENDIAN: &str = "1.2.840.10008.1.2.1";
const EXPLICIT_VR_BIG_ENDIAN: &str = "1.2.840.10008.1.2.2";

pub(crate) async fn retrieve_frames(
    State(state): State<DicomwebState>,
    Path((study, series, instance, frames)): Path<(String, String, String, String)>,
    headers: HeaderMap,
) -> Response {
    let result = async {
        let target = Target::parse(&study, Some(&series), Some(&instance))?;
        let frame_numbers = parse_frame_list(&frames)?;
        let source = PixelSource::load_cached(&state, &target).await?;
        let shape = negotiate(&headers, &source, frame_numbers.len())?;
        let plans = source.frame_plans(&state, &frame_numbers).await?;
        Ok::<_, Problem>(frames_response(&state, &source, plans, shape))
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

/// Parses `1`, `3,1,2`: 1-based frame numbers, in the requested order.
pub(crate) fn parse_frame_list(text: &str) -> Result<Vec<u32>, Problem> {
    let numbers = text
        .split(',')
        .map(|item| {
            item.trim()
                .parse::<u32>()
                .ok()
                .filter(|number| *number >= 1)
                .ok_or_else(|| {
                    Problem::bad_request(format!(
                        "frame list `{text}`: `{item}` is not a frame number (frames are numbered from 1)"
                    ))
                })
        })
        .collect::<Result<Vec<u32>, Problem>>()?;
    if numbers.len() > MAX_FRAMES_PER_REQUEST {
        return Err(Problem::bad_request(format!(
            "frame list names {} frames; at most {MAX_FRAMES_PER_REQUEST} per request",
            numbers.len()
        )));
    }
    Ok(numbers)
}

/// The image attributes frames are cut by, from the instance's DICOM JSON.
#[derive(Debug, Clone)]
pub(crate) struct Geometry {
    rows: u64,
    columns: u64,
    samples_per_pixel: u64,
    bits_allocated: u64,
    pub(crate) number_of_frames: u64,
    photometric_interpretation: String,
}

impl Geometry {
    fn from_metadata(metadata: &Json) -> Option<Self> {
        let number = |tag: &str| -> Option<u64> {
            let value = metadata.get(tag)?.get("Value")?.get(0)?;
            value
                .as_u64()
                .or_else(|| value.as_f64().filter(|v| *v >= 0.0).map(|v| v as u64))
                .or_else(|| value.as_str()?.trim().parse().ok())
        };
        let text = |tag: &str| -> Option<String> {
            Some(
                metadata
                    .get(tag)?
                    .get("Value")?
                    .get(0)?
                    .as_str()?
                    .trim()
                    .to_owned(),
            )
        };
        Some(Self {
            rows: number("00280010")?,
            columns: number("00280011")?,
            samples_per_pixel: number("00280002").unwrap_or(1).max(1),
            bits_allocated: number("00280100")?,
            number_of_frames: number("00280008").unwrap_or(1).max(1),
            photometric_interpretation: text("00280004").unwrap_or_default(),
        })
    }

    /// The length of one native frame in bits.
    fn native_frame_bits(&self) -> u64 {
        let samples = if self.photometric_interpretation.ends_with("_422") {
            // Two luminance and two chrominance values for every two pixels.
            2
        } else {
            self.samples_per_pixel
        };
        self.rows * self.columns * samples * self.bits_allocated
    }
}

/// How long a loaded [`PixelSource`] is reused: a deletion made by another process shows
/// within this time (the tier cache of the storage layer has the same bound); this process's
/// own DELETEs drop their entries at once.
const FRAME_SOURCE_TTL: Duration = Duration::from_secs(5);

/// At most this many instances are cached; the cache is emptied when it would overflow.
const FRAME_SOURCE_MAX_ENTRIES: usize = 4_096;

/// The frame sources (location, geometry, pixel data layout) of recently read instances.
///
/// A viewer scrolling a multi-frame instance asks for its frames one request at a time; with
/// this cache they cost one catalog read instead of one each. A stored instance's object
/// and layout never change (objects are content-addressed and written once), so an entry can
/// only go stale by a deletion, which [`FrameSourceCache::forget_study`] and the TTL bound.
/// The archive-tier check still runs on every request.
#[derive(Default)]
pub struct FrameSourceCache {
    entries: Mutex<HashMap<InstancePath, (Instant, Arc<PixelSource>)>>,
}

/// An instance as a request addresses it: study, series, SOP instance.
type InstancePath = (StudyUid, SeriesUid, SopInstanceUid);

impl FrameSourceCache {
    fn get(&self, key: &InstancePath) -> Option<Arc<PixelSource>> {
        let entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        entries
            .get(key)
            .filter(|(loaded_at, _)| loaded_at.elapsed() < FRAME_SOURCE_TTL)
            .map(|(_, source)| source.clone())
    }

    fn insert(&self, key: InstancePath, source: Arc<PixelSource>) {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if entries.len() >= FRAME_SOURCE_MAX_ENTRIES {
            entries.clear();
        }
        entries.insert(key, (Instant::now(), source));
    }

    /// Drops every cached instance of `study` (after a deletion in it).
    pub(crate) fn forget_study(&self, study: &StudyUid) {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        entries.retain(|(cached_study, _, _), _| cached_study != study);
    }
}

/// An image instance whose frames can be read.
pub(crate) struct PixelSource {
    pub(crate) location: InstanceLocation,
    pub(crate) geometry: Geometry,
    pub(crate) layout: PixelDataLayout,
}

/// How the frames are sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shape {
    Multipart,
    /// One frame, asked for with its own media type rather than multipart.
    SinglePart,
}

impl PixelSource {
    /// [`PixelSource::load`] through the [`FrameSourceCache`]; the archive-tier check (503
    /// while the object is restored) runs on a cache hit too.
    pub(crate) async fn load_cached(
        state: &DicomwebState,
        target: &Target,
    ) -> Result<Arc<Self>, Problem> {
        let key = match (&target.series, &target.instance) {
            (Some(series), Some(instance)) => {
                (target.study.clone(), series.clone(), instance.clone())
            }
            _ => return Self::load(state, target).await.map(Arc::new),
        };
        if let Some(source) = state.frame_sources.get(&key) {
            crate::problem::ensure_readable(state, std::slice::from_ref(&source.location)).await?;
            return Ok(source);
        }
        let source = Arc::new(Self::load(state, target).await?);
        state.frame_sources.insert(key, source.clone());
        Ok(source)
    }

    /// Loads the location, geometry and pixel data layout of the target instance: 404 for an
    /// unknown instance, 400 for one without pixel data.
    pub(crate) async fn load(state: &DicomwebState, target: &Target) -> Result<Self, Problem> {
        let (Some(series), Some(instance)) = (target.series.as_ref(), target.instance.as_ref())
        else {
            return Err(Problem::bad_request(
                "frames are addressed by study, series and instance".to_owned(),
            ));
        };
        let found = state
            .catalog
            .instance_with_layout(&target.study, series, instance)
            .await
            .map_err(|error| Problem::unavailable(&error))?;
        let Some((location, metadata_text, recorded)) = found else {
            crate::wado::locations(state, target).await?;
            return Err(Problem::not_found(format!(
                "{} is not in the archive",
                target.describe()
            )));
        };
        // 503 + Retry-After while the object is restored from archive storage.
        crate::problem::ensure_readable(state, std::slice::from_ref(&location)).await?;
        let metadata: Json = serde_json::from_str(&metadata_text).map_err(|error| {
            Problem::unavailable(&format!("stored metadata unreadable: {error}"))
        })?;
        let not_an_image = || {
            Problem::bad_request(format!(
                "instance {} has no Pixel Data (7FE0,0010): frames are only offered for images",
                location.sop_instance_uid
            ))
        };
        if metadata.get("7FE00010").is_none() {
            return Err(not_an_image());
        }
        let geometry = Geometry::from_metadata(&metadata).ok_or_else(not_an_image)?;
        let layout = match recorded
            .as_deref()
            .and_then(PixelDataLayout::from_catalog_json)
        {
            Some(layout) => layout,
            None => recover_layout(state, &location).await?,
        };
        Ok(Self {
            location,
            geometry,
            layout,
        })
    }

    /// Whether the pixel data is native (not encapsulated).
    pub(crate) fn is_native(&self) -> bool {
        self.layout.native_length.is_some()
    }

    /// The media type frames are served in, and the transfer syntax named in it.
    pub(crate) fn media_type(&self) -> (&'static str, &str) {
        if self.is_native() {
            ("application/octet-stream", EXPLICIT_VR_LITTLE_ENDIAN)
        } else {
            (
                encapsulated_media_type(&self.location.transfer_syntax_uid),
                &self.location.transfer_syntax_uid,
            )
        }
    }

    /// Whether values must be byte-swapped to little endian, and their size.
    pub(crate) fn swap_unit(&self) -> Option<usize> {
        (self.is_native()
            && self.location.transfer_syntax_uid == EXPLICIT_VR_BIG_ENDIAN
            && self.geometry.bits_allocated >= 16)
            .then_some((self.geometry.bits_allocated / 8) as usize)
    }

    /// Returns the byte ranges of each requested frame, in the stored object.
    pub(crate) async fn frame_plans(
        &self,
        state: &DicomwebState,
        frame_numbers: &[u32],
    ) -> Result<Vec<FramePlan>, Problem> {
        let number_of_frames = self.geometry.number_of_frames;
        let sop = &self.location.sop_instance_uid;
        if let Some(&beyond) = frame_numbers
            .iter()
            .find(|number| u64::from(**number) > number_of_frames)
        {
            return Err(Problem::not_found(format!(
                "frame {beyond} does not exist: instance {sop} has {number_of_frames} frame(s)"
            )));
        }
        if let Some(native_length) = self.layout.native_length {
            let start = self.layout.value_offset;
            if number_of_frames == 1 {
                return Ok(vec![FramePlan {
                    number: 1,
                    ranges: single_range(start..start + native_length),
                }]);
            }
            let frame_bits = self.geometry.native_frame_bits();
            if !frame_bits.is_multiple_of(8) {
                return Err(Problem::not_acceptable(format!(
                    "the {number_of_frames} single-bit frames of instance {sop} do not start on \
                     byte boundaries; retrieve the Pixel Data bulk data instead"
                )));
            }
            let frame_bytes = frame_bits / 8;
            return frame_numbers
                .iter()
                .map(|&number| {
                    let frame_start = start + (u64::from(number) - 1) * frame_bytes;
                    if frame_start + frame_bytes > start + native_length {
                        return Err(Problem::not_found(format!(
                            "frame {number} of instance {sop} lies beyond its stored pixel data"
                        )));
                    }
                    Ok(FramePlan {
                        number,
                        ranges: single_range(frame_start..frame_start + frame_bytes),
                    })
                })
                .collect();
        }
        let frames = self.encapsulated_frames(state).await?;
        frame_numbers
            .iter()
            .map(|&number| {
                let fragments = frames.get(number as usize - 1).ok_or_else(|| {
                    Problem::not_found(format!(
                        "frame {number} of instance {sop} has no fragments in the stored pixel data"
                    ))
                })?;
                Ok(FramePlan {
                    number,
                    ranges: fragments
                        .iter()
                        .map(|&(offset, length)| offset..offset + u64::from(length))
                        .collect(),
                })
            })
            .collect()
    }

    /// Groups the fragments (after the Basic Offset Table) into frames.
    async fn encapsulated_frames(
        &self,
        state: &DicomwebState,
    ) -> Result<Vec<Vec<(u64, u32)>>, Problem> {
        let number_of_frames = self.geometry.number_of_frames as usize;
        let Some((&(bot_offset, bot_length), fragments)) = self.layout.fragments.split_first()
        else {
            return Ok(Vec::new());
        };
        let fragments: Vec<(u64, u32)> = fragments.to_vec();
        if number_of_frames == 1 {
            return Ok(vec![fragments]);
        }
        if fragments.len() == number_of_frames {
            return Ok(fragments
                .into_iter()
                .map(|fragment| vec![fragment])
                .collect());
        }
        let key = &self.location.object.key;
        if bot_length as usize == 4 * number_of_frames {
            let table = state
                .store
                .get_range(key, bot_offset..bot_offset + u64::from(bot_length))
                .await
                .map_err(|error| Problem::unavailable(&error))?;
            let starts: Vec<u64> = table
                .chunks_exact(4)
                .map(|bytes| {
                    u64::from(u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
                })
                .collect();
            if let Some(frames) = group_by_offsets(&fragments, &starts) {
                return Ok(frames);
            }
            warn!(sop_instance_uid = %self.location.sop_instance_uid, "basic offset table disagrees with the fragments; scanning codestream markers");
        }
        // No usable offset table: a fragment that begins a codestream begins a frame.
        let mut frames: Vec<Vec<(u64, u32)>> = Vec::new();
        for &(offset, length) in &fragments {
            let head_length = u64::from(length.min(12));
            let head = state
                .store
                .get_range(key, offset..offset + head_length)
                .await
                .map_err(|error| Problem::unavailable(&error))?;
            if begins_codestream(&head) || frames.is_empty() {
                frames.push(vec![(offset, length)]);
            } else if let Some(last) = frames.last_mut() {
                last.push((offset, length));
            }
        }
        if frames.len() != number_of_frames {
            return Err(Problem::not_acceptable(format!(
                "the frame boundaries of instance {} cannot be determined ({} fragments, {} frames, \
                 no offset table); retrieve the instance",
                self.location.sop_instance_uid,
                fragments.len(),
                number_of_frames
            )));
        }
        Ok(frames)
    }
}

/// Groups fragments into frames by Basic Offset Table offsets (relative to the first
/// fragment's item header); `None` when the table does not fit the fragments.
fn group_by_offsets(fragments: &[(u64, u32)], starts: &[u64]) -> Option<Vec<Vec<(u64, u32)>>> {
    let first_item = fragments.first()?.0.checked_sub(8)?;
    if starts.first() != Some(&0) || starts.windows(2).any(|pair| pair[0] >= pair[1]) {
        return None;
    }
    let mut frames: Vec<Vec<(u64, u32)>> = vec![Vec::new(); starts.len()];
    for &(offset, length) in fragments {
        let relative = offset.checked_sub(8)? - first_item;
        let frame_index = starts.partition_point(|start| *start <= relative) - 1;
        frames[frame_index].push((offset, length));
    }
    // Every frame starts exactly at a fragment.
    for (frame, start) in frames.iter().zip(starts) {
        let first = frame.first()?;
        if first.0 - 8 - first_item != *start {
            return None;
        }
    }
    Some(frames)
}

/// Whether a fragment begins a JPEG (SOI), JPEG 2000 codestream (SOC + SIZ) or JP2 file.
fn begins_codestream(head: &[u8]) -> bool {
    head.starts_with(&[0xFF, 0xD8])
        || head.starts_with(&[0xFF, 0x4F, 0xFF, 0x51])
        || head.starts_with(&[0x00, 0x00, 0x00, 0x0C, 0x6A, 0x50, 0x20, 0x20])
}

/// The media type of frames in an encapsulated transfer syntax (PS3.18 Table 8.7.3-2).
pub(crate) fn encapsulated_media_type(transfer_syntax_uid: &str) -> &'static str {
    match transfer_syntax_uid {
        "1.2.840.10008.1.2.4.50"
        | "1.2.840.10008.1.2.4.51"
        | "1.2.840.10008.1.2.4.57"
        | "1.2.840.10008.1.2.4.70" => "image/jpeg",
        "1.2.840.10008.1.2.4.80" | "1.2.840.10008.1.2.4.81" => "image/jls",
        "1.2.840.10008.1.2.4.90" | "1.2.840.10008.1.2.4.91" => "image/jp2",
        "1.2.840.10008.1.2.4.92" | "1.2.840.10008.1.2.4.93" => "image/jpx",
        "1.2.840.10008.1.2.4.201" | "1.2.840.10008.1.2.4.202" | "1.2.840.10008.1.2.4.203" => {
            "image/jphc"
        }
        "1.2.840.10008.1.2.5" => "image/dicom-rle",
        "1.2.840.10008.1.2.4.100" | "1.2.840.10008.1.2.4.101" => "video/mpeg",
        "1.2.840.10008.1.2.4.102"
        | "1.2.840.10008.1.2.4.103"
        | "1.2.840.10008.1.2.4.104"
        | "1.2.840.10008.1.2.4.105"
        | "1.2.840.10008.1.2.4.106" => "video/mp4",
        "1.2.840.10008.1.2.4.107" | "1.2.840.10008.1.2.4.108" => "video/H265",
        _ => "application/octet-stream",
    }
}

/// Checks the Accept header of a frames (or encapsulated bulk data) request against what is
/// stored. Transcoding is not offered here: a request for another representation is 406.
pub(crate) fn negotiate(
    headers: &HeaderMap,
    source: &PixelSource,
    num_frames: usize,
) -> Result<Shape, Problem> {
    let Some(accept) = headers
        .get(http::header::ACCEPT)
        .and_then(|value| value.to_str().ok())
    else {
        return Ok(Shape::Multipart);
    };
    let ranges = MediaType::parse_accept(accept);
    if ranges.is_empty() {
        return Ok(Shape::Multipart);
    }
    let (media_type, served_ts) = source.media_type();
    let type_matches = |wanted: &str| {
        wanted == "*/*"
            || wanted.eq_ignore_ascii_case(media_type)
            || wanted
                .strip_suffix("/*")
                .is_some_and(|prefix| media_type.starts_with(&format!("{prefix}/")))
    };
    let ts_matches = |range: &MediaType| {
        range
            .param("transfer-syntax")
            .is_none_or(|ts| ts == "*" || ts == served_ts)
    };
    for range in &ranges {
        match range.essence.as_str() {
            "*/*" | "multipart/related" | "multipart/*"
                if range.param("type").is_none_or(type_matches) && ts_matches(range) =>
            {
                return Ok(Shape::Multipart);
            }
            essence if num_frames == 1 && type_matches(essence) && ts_matches(range) => {
                return Ok(Shape::SinglePart);
            }
            _ => {}
        }
    }
    Err(Problem::not_acceptable(format!(
        "instance {} holds {} pixel data: its frames are served as multipart/related; \
         type=\"{media_type}\"; transfer-syntax={served_ts} (transfer-syntax=* and type=\"*/*\" \
         are accepted), not as Accept `{accept}`",
        source.location.sop_instance_uid,
        if source.is_native() {
            "native"
        } else {
            "encapsulated"
        }
    )))
}

/// The byte ranges of one frame in the stored object.
#[derive(Debug, Clone)]
pub(crate) struct FramePlan {
    pub(crate) number: u32,
    pub(crate) ranges: Vec<Range<u64>>,
}

impl FramePlan {
    fn length(&self) -> u64 {
        self.ranges
            .iter()
            .map(|range| range.end - range.start)
            .sum()
    }
}

/// Streams the frames, reading each range from the store in pieces.
pub(crate) fn frames_response(
    state: &DicomwebState,
    source: &PixelSource,
    plans: Vec<FramePlan>,
    shape: Shape,
) -> Response {
    let (media_type, served_ts) = source.media_type();
    let part_type = format!("{media_type}; transfer-syntax={served_ts}");
    let store = state.store.clone();
    let key = source.location.object.key.clone();
    let swap_unit = source.swap_unit();
    if shape == Shape::SinglePart {
        let plan = plans.into_iter().next().unwrap_or(FramePlan {
            number: 1,
            ranges: Vec::new(),
        });
        let length = plan.length();
        let body = range_stream(store, key, plan.ranges, swap_unit);
        return (
            [
                (http::header::CONTENT_TYPE, part_type),
                (http::header::CONTENT_LENGTH, length.to_string()),
            ],
            Body::from_stream(body),
        )
            .into_response();
    }
    let boundary = format!("strata-{}", uuid::Uuid::new_v4().simple());
    let closing = Bytes::from(format!("--{boundary}--\r\n"));
    let part_boundary = boundary.clone();
    let parts = futures::stream::iter(plans).flat_map(move |plan| {
        let header = Bytes::from(format!(
            "--{part_boundary}\r\nContent-Type: {part_type}\r\nContent-Length: {}\r\n\r\n",
            plan.length()
        ));
        debug!(
            frame = plan.number,
            num_ranges = plan.ranges.len(),
            "streaming a frame"
        );
        futures::stream::once(async move { Ok::<Bytes, std::io::Error>(header) })
            .chain(range_stream(
                store.clone(),
                key.clone(),
                plan.ranges,
                swap_unit,
            ))
            .chain(futures::stream::once(async {
                Ok(Bytes::from_static(b"\r\n"))
            }))
    });
    let stream = parts.chain(futures::stream::once(async move { Ok(closing) }));
    (
        StatusCode::OK,
        [(
            http::header::CONTENT_TYPE,
            format!("multipart/related; type=\"{media_type}\"; boundary={boundary}"),
        )],
        Body::from_stream(stream),
    )
        .into_response()
}

/// Reads `ranges` of an object piece by piece, byte-swapping values of `swap_unit` bytes.
pub(crate) fn range_stream(
    store: std::sync::Arc<dyn strata_storage::BlobStore>,
    key: strata_types::ObjectKey,
    ranges: Vec<Range<u64>>,
    swap_unit: Option<usize>,
) -> futures::stream::BoxStream<'static, Result<Bytes, std::io::Error>> {
    let pieces: Vec<Range<u64>> = ranges
        .into_iter()
        .flat_map(|range| {
            let mut pieces = Vec::new();
            let mut start = range.start;
            while start < range.end {
                let end = (start + READ_CHUNK_BYTES).min(range.end);
                pieces.push(start..end);
                start = end;
            }
            pieces
        })
        .collect();
    futures::stream::iter(pieces)
        .then(move |piece| {
            let store = store.clone();
            let key = key.clone();
            async move {
                let bytes = store
                    .get_range(&key, piece)
                    .await
                    .map_err(std::io::Error::other)?;
                Ok(match swap_unit {
                    Some(unit) if unit > 1 => swap_bytes(&bytes, unit),
                    _ => bytes,
                })
            }
        })
        .boxed()
}

/// A list of one range (clippy reads `vec![a..b]` as a likely mistake).
pub(crate) fn single_range(range: Range<u64>) -> Vec<Range<u64>> {
    std::iter::once(range).collect()
}

/// Reverses the bytes of every `unit`-byte value (big endian to little endian).
fn swap_bytes(bytes: &[u8], unit: usize) -> Bytes {
    let mut swapped = bytes.to_vec();
    for value in swapped.chunks_exact_mut(unit) {
        value.reverse();
    }
    Bytes::from(swapped)
}

/// Parses a stored object once to find its pixel data (instances stored before layouts were
/// recorded) and records the layout for the next request.
async fn recover_layout(
    state: &DicomwebState,
    location: &InstanceLocation,
) -> Result<PixelDataLayout, Problem> {
    let spooled = spool_object(state, location, None).await?;
    let path = spooled.to_path_buf();
    let limits = InspectLimits {
        max_object_bytes: u64::MAX,
        ..InspectLimits::default()
    };
    let inspected = tokio::task::spawn_blocking(move || strata_dicom::inspect_file(&path, limits))
        .await
        .map_err(|error| Problem::unavailable(&error))?
        .map_err(|error| {
            Problem::unavailable(&format!("stored object unreadable: {}", error.reason))
        })?;
    drop(spooled);
    let Some(layout) = inspected.pixel_data else {
        return Err(Problem::not_acceptable(format!(
            "the pixel data of instance {} cannot be read by range (deflated data set); \
             retrieve the instance",
            location.sop_instance_uid
        )));
    };
    // The stored object always starts with its Part 10 header: offsets need no shift.
    let recorded = layout.to_catalog_json(0);
    if let Err(error) = state
        .catalog
        .set_instance_pixel_data_layout(&location.sop_instance_uid, &recorded)
        .await
    {
        warn!(%error, sop_instance_uid = %location.sop_instance_uid, "failed to record a pixel data layout");
    }
    debug!(sop_instance_uid = %location.sop_instance_uid, "pixel data layout recovered from the stored object");
    Ok(layout)
}

/// Streams the first `limit` bytes (all without a limit) of a stored object to a spool file
/// that is removed when the returned path is dropped.
pub(crate) async fn spool_object(
    state: &DicomwebState,
    location: &InstanceLocation,
    limit: Option<u64>,
) -> Result<tempfile::TempPath, Problem> {
    let spool_dir = state.pipeline.settings().spool_dir.clone();
    let temp_path = tokio::task::spawn_blocking(move || {
        std::fs::create_dir_all(&spool_dir)?;
        tempfile::NamedTempFile::new_in(&spool_dir).map(tempfile::NamedTempFile::into_temp_path)
    })
    .await
    .map_err(|error| Problem::unavailable(&error))?
    .map_err(|error| Problem::unavailable(&error))?;
    let mut file = tokio::fs::File::create(&temp_path)
        .await
        .map_err(|error| Problem::unavailable(&error))?;
    let (_, mut stream) = state
        .store
        .get(&location.object.key)
        .await
        .map_err(|error| Problem::unavailable(&error))?;
    let mut remaining = limit.unwrap_or(u64::MAX);
    while remaining > 0 {
        let Some(chunk) = stream.next().await else {
            break;
        };
        let chunk = chunk.map_err(|error| Problem::unavailable(&error))?;
        let take = (chunk.len() as u64).min(remaining) as usize;
        file.write_all(&chunk[..take])
            .await
            .map_err(|error| Problem::unavailable(&error))?;
        remaining -= take as u64;
    }
    file.flush()
        .await
        .map_err(|error| Problem::unavailable(&error))?;
    Ok(temp_path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_frame_lists_are_one_based_numbers() {
        assert_eq!(parse_frame_list("1").unwrap(), vec![1]);
        assert_eq!(parse_frame_list("3,1, 2").unwrap(), vec![3, 1, 2]);
        for bad in ["0", "", "1,,2", "-1", "a", "1.5"] {
            let problem = parse_frame_list(bad).unwrap_err();
            assert_eq!(problem.status, StatusCode::BAD_REQUEST, "{bad}");
        }
    }

    #[test]
    fn test_offset_table_groups_fragments_into_frames() {
        // Three fragments of 100, 50 and 80 bytes after the table; frames start at 0 and 166
        // (two items: 8 + 100 and 8 + 50 bytes).
        let fragments = vec![(1008, 100), (1116, 50), (1174, 80)];
        let frames = group_by_offsets(&fragments, &[0, 166]).unwrap();
        assert_eq!(
            frames,
            vec![vec![(1008, 100), (1116, 50)], vec![(1174, 80)]]
        );
        assert!(group_by_offsets(&fragments, &[0, 150]).is_none());
        assert!(group_by_offsets(&fragments, &[4, 166]).is_none());
    }

    #[test]
    fn test_codestream_starts_are_recognised() {
        assert!(begins_codestream(&[0xFF, 0xD8, 0xFF, 0xE0]));
        assert!(begins_codestream(&[0xFF, 0x4F, 0xFF, 0x51, 0, 0]));
        assert!(!begins_codestream(&[0x12, 0x34, 0xFF, 0xD8]));
    }

    #[test]
    fn test_big_endian_values_are_swapped() {
        assert_eq!(&swap_bytes(&[1, 2, 3, 4], 2)[..], &[2, 1, 4, 3]);
        assert_eq!(&swap_bytes(&[1, 2, 3, 4], 4)[..], &[4, 3, 2, 1]);
    }

    #[test]
    fn test_native_frame_length_counts_subsampled_colour() {
        let metadata = serde_json::json!({
            "00280010": {"vr": "US", "Value": [100]},
            "00280011": {"vr": "US", "Value": [100]},
            "00280002": {"vr": "US", "Value": [3]},
            "00280100": {"vr": "US", "Value": [8]},
            "00280004": {"vr": "CS", "Value": ["YBR_FULL_422"]},
        });
        let geometry = Geometry::from_metadata(&metadata).unwrap();
        assert_eq!(geometry.native_frame_bits() / 8, 20_000);
        assert_eq!(geometry.number_of_frames, 1);
    }
}
