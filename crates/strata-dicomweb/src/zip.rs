//! `application/zip` retrieval of a study, series or instance (PS3.18 §8.7.5): the stored
//! Part 10 objects, byte for byte, streamed one after the other.
//!
//! Entries are STORED (no compression: DICOM pixel data rarely shrinks and the archive must
//! not spend a core per download). The CRC-32 of an entry is only known once it has been
//! streamed, so each entry sets flag bit 3 and is followed by a data descriptor; sizes are
//! known from the catalog and written up front too. ZIP64 records are written when an entry,
//! an offset or the number of entries needs them. Nothing but the central directory (about
//! 100 bytes per entry) is held in memory.

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use futures::StreamExt;
use http::HeaderMap;
use strata_catalog::InstanceLocation;
use strata_storage::{BlobStore, ByteStream};

use crate::DicomwebState;
use crate::media::MediaType;
use crate::wado::Target;

const LOCAL_HEADER_SIGNATURE: u32 = 0x0403_4b50;
const DATA_DESCRIPTOR_SIGNATURE: u32 = 0x0807_4b50;
const CENTRAL_HEADER_SIGNATURE: u32 = 0x0201_4b50;
const END_SIGNATURE: u32 = 0x0605_4b50;
const ZIP64_END_SIGNATURE: u32 = 0x0606_4b50;
const ZIP64_LOCATOR_SIGNATURE: u32 = 0x0706_4b50;
/// Bit 3 (sizes and CRC in a data descriptor) and bit 11 (UTF-8 names).
const FLAGS: u16 = 0x0008 | 0x0800;
/// 2.0 (deflate-era features), or 4.5 with ZIP64 records.
const VERSION_20: u16 = 20;
const VERSION_45: u16 = 45;
/// 1980-01-01 00:00 in MS-DOS format: the archive does not invent modification times.
const DOS_TIME: u16 = 0;
const DOS_DATE: u16 = (1 << 5) | 1;
const U32_MAX: u64 = 0xFFFF_FFFF;

/// Whether the Accept header asks for a zip: `application/zip` comes before any
/// `multipart/related` range.
pub(crate) fn prefers_zip(headers: &HeaderMap) -> bool {
    let Some(accept) = headers
        .get(http::header::ACCEPT)
        .and_then(|value| value.to_str().ok())
    else {
        return false;
    };
    MediaType::parse_accept(accept)
        .iter()
        .find(|range| {
            matches!(
                range.essence.as_str(),
                "application/zip" | "multipart/related" | "multipart/*" | "*/*"
            )
        })
        .is_some_and(|range| range.essence == "application/zip")
}

/// One entry as the central directory records it.
struct CentralEntry {
    name: String,
    crc32: u32,
    size: u64,
    local_header_offset: u64,
}

/// Streams the objects of `locations` as a zip; entry names are
/// `{study}/{series}/{sop instance}.dcm`.
pub(crate) fn zip_response(
    state: &DicomwebState,
    target: &Target,
    locations: Vec<InstanceLocation>,
) -> Response {
    let file_name = match (&target.series, &target.instance) {
        (_, Some(instance)) => instance.to_string(),
        (Some(series), None) => series.to_string(),
        (None, None) => target.study.to_string(),
    };
    let zip_state = ZipState {
        store: state.store.clone(),
        pending: locations.into_iter(),
        offset: 0,
        central: Vec::new(),
        phase: Phase::NextEntry,
    };
    let stream = futures::stream::unfold(zip_state, next_chunk);
    (
        [
            (http::header::CONTENT_TYPE, "application/zip".to_owned()),
            (
                http::header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{file_name}.zip\""),
            ),
        ],
        Body::from_stream(stream),
    )
        .into_response()
}

struct ZipState {
    store: Arc<dyn BlobStore>,
    pending: std::vec::IntoIter<InstanceLocation>,
    /// Bytes written so far.
    offset: u64,
    central: Vec<CentralEntry>,
    phase: Phase,
}

enum Phase {
    NextEntry,
    Streaming {
        object: ByteStream,
        hasher: crc32fast::Hasher,
        num_bytes_seen: u64,
    },
    Done,
}

/// Produces the next chunk: a local header, a piece of an object, a data descriptor, or the
/// central directory at the end. After an error the stream ends (the client sees a
/// truncated body, never a silently corrupt zip).
async fn next_chunk(mut state: ZipState) -> Option<(Result<Bytes, std::io::Error>, ZipState)> {
    match std::mem::replace(&mut state.phase, Phase::Done) {
        Phase::Done => None,
        Phase::NextEntry => {
            let Some(location) = state.pending.next() else {
                let directory = central_directory(&state.central, state.offset);
                return Some((Ok(directory), state));
            };
            let object = match state.store.get(&location.object.key).await {
                Ok((_, object)) => object,
                Err(error) => {
                    tracing::error!(%error, object_key = %location.object.key, "object missing during zip retrieval");
                    return Some((Err(std::io::Error::other(error)), state));
                }
            };
            let name = format!(
                "{}/{}/{}.dcm",
                location.study_instance_uid,
                location.series_instance_uid,
                location.sop_instance_uid
            );
            let header = local_header(&name, location.object.size_bytes);
            state.central.push(CentralEntry {
                name,
                crc32: 0,
                size: location.object.size_bytes,
                local_header_offset: state.offset,
            });
            state.offset += header.len() as u64;
            state.phase = Phase::Streaming {
                object,
                hasher: crc32fast::Hasher::new(),
                num_bytes_seen: 0,
            };
            Some((Ok(header), state))
        }
        Phase::Streaming {
            mut object,
            mut hasher,
            mut num_bytes_seen,
        } => {
            let entry = state
                .central
                .last_mut()
                .expect("an entry is being streamed");
            match object.next().await {
                Some(Ok(chunk)) => {
                    hasher.update(&chunk);
                    num_bytes_seen += chunk.len() as u64;
                    if num_bytes_seen > entry.size {
                        let error = std::io::Error::other("an object is larger than cataloged");
                        return Some((Err(error), state));
                    }
                    state.offset += chunk.len() as u64;
                    state.phase = Phase::Streaming {
                        object,
                        hasher,
                        num_bytes_seen,
                    };
                    Some((Ok(chunk), state))
                }
                Some(Err(error)) => Some((Err(std::io::Error::other(error)), state)),
                None => {
                    if num_bytes_seen != entry.size {
                        let error = std::io::Error::other("an object is smaller than cataloged");
                        return Some((Err(error), state));
                    }
                    entry.crc32 = hasher.finalize();
                    let descriptor = data_descriptor(entry.crc32, entry.size);
                    state.offset += descriptor.len() as u64;
                    state.phase = Phase::NextEntry;
                    Some((Ok(descriptor), state))
                }
            }
        }
    }
}

fn local_header(name: &str, size: u64) -> Bytes {
    let zip64 = size >= U32_MAX;
    let mut header = BytesMut::with_capacity(30 + name.len() + 20);
    header.put_u32_le(LOCAL_HEADER_SIGNATURE);
    header.put_u16_le(if zip64 { VERSION_45 } else { VERSION_20 });
    header.put_u16_le(FLAGS);
    header.put_u16_le(0); // STORED
    header.put_u16_le(DOS_TIME);
    header.put_u16_le(DOS_DATE);
    header.put_u32_le(0); // CRC-32: in the data descriptor
    let size_field = if zip64 { U32_MAX as u32 } else { size as u32 };
    header.put_u32_le(size_field);
    header.put_u32_le(size_field);
    header.put_u16_le(name.len() as u16);
    header.put_u16_le(if zip64 { 20 } else { 0 });
    header.put_slice(name.as_bytes());
    if zip64 {
        header.put_u16_le(0x0001);
        header.put_u16_le(16);
        header.put_u64_le(size);
        header.put_u64_le(size);
    }
    header.freeze()
}

fn data_descriptor(crc32: u32, size: u64) -> Bytes {
    let mut descriptor = BytesMut::with_capacity(24);
    descriptor.put_u32_le(DATA_DESCRIPTOR_SIGNATURE);
    descriptor.put_u32_le(crc32);
    if size >= U32_MAX {
        descriptor.put_u64_le(size);
        descriptor.put_u64_le(size);
    } else {
        descriptor.put_u32_le(size as u32);
        descriptor.put_u32_le(size as u32);
    }
    descriptor.freeze()
}

/// The central directory and its end records, written at `directory_offset`.
fn central_directory(entries: &[CentralEntry], directory_offset: u64) -> Bytes {
    let mut directory = BytesMut::new();
    for entry in entries {
        let size_in_extra = entry.size >= U32_MAX;
        let offset_in_extra = entry.local_header_offset >= U32_MAX;
        let mut extra = BytesMut::new();
        if size_in_extra || offset_in_extra {
            let mut values = Vec::new();
            if size_in_extra {
                values.extend([entry.size, entry.size]);
            }
            if offset_in_extra {
                values.push(entry.local_header_offset);
            }
            extra.put_u16_le(0x0001);
            extra.put_u16_le((values.len() * 8) as u16);
            for value in values {
                extra.put_u64_le(value);
            }
        }
        let zip64 = !extra.is_empty();
        directory.put_u32_le(CENTRAL_HEADER_SIGNATURE);
        directory.put_u16_le(if zip64 { VERSION_45 } else { VERSION_20 }); // made by (MS-DOS)
        directory.put_u16_le(if zip64 { VERSION_45 } else { VERSION_20 });
        directory.put_u16_le(FLAGS);
        directory.put_u16_le(0);
        directory.put_u16_le(DOS_TIME);
        directory.put_u16_le(DOS_DATE);
        directory.put_u32_le(entry.crc32);
        let size_field = if size_in_extra {
            U32_MAX as u32
        } else {
            entry.size as u32
        };
        directory.put_u32_le(size_field);
        directory.put_u32_le(size_field);
        directory.put_u16_le(entry.name.len() as u16);
        directory.put_u16_le(extra.len() as u16);
        directory.put_u16_le(0); // comment
        directory.put_u16_le(0); // disk
        directory.put_u16_le(0); // internal attributes
        directory.put_u32_le(0); // external attributes
        directory.put_u32_le(if offset_in_extra {
            U32_MAX as u32
        } else {
            entry.local_header_offset as u32
        });
        directory.put_slice(entry.name.as_bytes());
        directory.put_slice(&extra);
    }
    let directory_size = directory.len() as u64;
    let num_entries = entries.len() as u64;
    let needs_zip64 =
        num_entries >= 0xFFFF || directory_size >= U32_MAX || directory_offset >= U32_MAX;
    if needs_zip64 {
        let zip64_end_offset = directory_offset + directory_size;
        directory.put_u32_le(ZIP64_END_SIGNATURE);
        directory.put_u64_le(44);
        directory.put_u16_le(VERSION_45);
        directory.put_u16_le(VERSION_45);
        directory.put_u32_le(0);
        directory.put_u32_le(0);
        directory.put_u64_le(num_entries);
        directory.put_u64_le(num_entries);
        directory.put_u64_le(directory_size);
        directory.put_u64_le(directory_offset);
        directory.put_u32_le(ZIP64_LOCATOR_SIGNATURE);
        directory.put_u32_le(0);
        directory.put_u64_le(zip64_end_offset);
        directory.put_u32_le(1);
    }
    directory.put_u32_le(END_SIGNATURE);
    directory.put_u16_le(0);
    directory.put_u16_le(0);
    let entries_field = if needs_zip64 {
        0xFFFF
    } else {
        num_entries as u16
    };
    directory.put_u16_le(entries_field);
    directory.put_u16_le(entries_field);
    directory.put_u32_le(if needs_zip64 {
        U32_MAX as u32
    } else {
        directory_size as u32
    });
    directory.put_u32_le(if needs_zip64 {
        U32_MAX as u32
    } else {
        directory_offset as u32
    });
    directory.put_u16_le(0);
    directory.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_prefers_zip_only_when_asked_first() {
        let accept = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(http::header::ACCEPT, value.parse().unwrap());
            prefers_zip(&headers)
        };
        assert!(accept("application/zip"));
        assert!(accept(
            "application/zip, multipart/related; type=\"application/dicom\""
        ));
        assert!(!accept(
            "multipart/related; type=\"application/dicom\", application/zip"
        ));
        assert!(!accept("*/*"));
        assert!(!prefers_zip(&HeaderMap::new()));
    }

    #[test]
    fn test_end_record_counts_entries_and_points_at_the_directory() {
        let entries = vec![CentralEntry {
            name: "a/b/c.dcm".to_owned(),
            crc32: 7,
            size: 10,
            local_header_offset: 0,
        }];
        let directory = central_directory(&entries, 1234);
        let end = &directory[directory.len() - 22..];
        assert_eq!(&end[..4], &END_SIGNATURE.to_le_bytes());
        assert_eq!(u16::from_le_bytes([end[10], end[11]]), 1);
        assert_eq!(
            u32::from_le_bytes([end[12], end[13], end[14], end[15]]) as usize,
            directory.len() - 22
        );
        assert_eq!(
            u32::from_le_bytes([end[16], end[17], end[18], end[19]]),
            1234
        );
    }
}
