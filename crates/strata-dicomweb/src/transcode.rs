//! Transfer syntax negotiation and on-the-fly transcoding of retrieved instances
//! (PS3.18 §8.7.3). Instances are transcoded one at a time through a spool directory, so a
//! study is never held in memory.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use strata_catalog::InstanceLocation;
use strata_imaging::{ImagingError, ImagingErrorKind};
use strata_storage::BlobStore;
use strata_types::ObjectKey;
use tokio::io::AsyncWriteExt;

use crate::{DicomwebState, Problem};

/// Explicit VR Little Endian, the default transfer syntax of the web (PS3.18 §8.7.3.5.2).
pub(crate) const EXPLICIT_VR_LITTLE_ENDIAN: &str = "1.2.840.10008.1.2.1";

/// How one instance is delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Delivery {
    /// The stored bytes, in the stored transfer syntax.
    AsStored,
    /// Transcoded to this transfer syntax.
    Transcode(String),
}

/// Decides how each instance is delivered for the requested transfer syntax: `None` when the
/// Accept header names none (Explicit VR Little Endian by default), `Some("*")` for any.
///
/// - `*`: as stored, except Implicit VR Little Endian and Explicit VR Big Endian, which become
///   Explicit VR Little Endian (PS3.18 §8.7.3: never served over the web);
/// - none: Explicit VR Little Endian for native and decodable compressed data; compressed data
///   this server cannot decode is served as stored (with its transfer syntax in the part);
/// - an explicit UID: Implicit VR LE / Explicit VR BE are 406; otherwise as stored when equal,
///   transcoded when the target can be encoded and the source decoded, else 406.
pub(crate) fn plan(
    requested: Option<&str>,
    locations: &[InstanceLocation],
) -> Result<Vec<Delivery>, Problem> {
    match requested {
        Some(requested)
            if requested != "*" && strata_imaging::is_never_served_on_web(requested) =>
        {
            return Err(Problem::not_acceptable(format!(
                "transfer syntax {requested} ({}) is never served over the web (PS3.18 8.7.3); ask for {EXPLICIT_VR_LITTLE_ENDIAN} or *",
                strata_imaging::transfer_syntax_name(requested)
            )));
        }
        Some(requested)
            if requested != "*"
                && !strata_imaging::can_encode(requested)
                && locations
                    .iter()
                    .any(|location| location.transfer_syntax_uid != requested) =>
        {
            return Err(Problem::not_acceptable(format!(
                "this server cannot transcode to transfer syntax {requested}; ask for transfer-syntax=* or {EXPLICIT_VR_LITTLE_ENDIAN}"
            )));
        }
        _ => {}
    }
    locations
        .iter()
        .map(|location| {
            let stored = location.transfer_syntax_uid.as_str();
            match requested {
                Some("*") => Ok(if strata_imaging::is_never_served_on_web(stored) {
                    Delivery::Transcode(EXPLICIT_VR_LITTLE_ENDIAN.to_owned())
                } else {
                    Delivery::AsStored
                }),
                None => Ok(if stored == EXPLICIT_VR_LITTLE_ENDIAN || !strata_imaging::can_decode(stored) {
                    Delivery::AsStored
                } else {
                    Delivery::Transcode(EXPLICIT_VR_LITTLE_ENDIAN.to_owned())
                }),
                Some(target) if target == stored => Ok(Delivery::AsStored),
                Some(target) => {
                    if !strata_imaging::can_decode(stored) {
                        return Err(Problem::not_acceptable(format!(
                            "instance {} is stored in transfer syntax {stored}, which this server cannot decode, so it \
                             cannot be transcoded to {target}; ask for transfer-syntax=* to get it as stored",
                            location.sop_instance_uid
                        )));
                    }
                    Ok(Delivery::Transcode(target.to_owned()))
                }
            }
        })
        .collect()
}

/// Maps an imaging failure of a transcoding or rendering to the response status.
pub(crate) fn imaging_problem(error: &ImagingError) -> Problem {
    match error.kind {
        ImagingErrorKind::UnsupportedTransferSyntax
        | ImagingErrorKind::CannotTranscode
        | ImagingErrorKind::InvalidObject => {
            tracing::info!(error = %error, cause = ?std::error::Error::source(error).map(ToString::to_string), "imaging request not acceptable");
            Problem::not_acceptable(error.message().to_owned())
        }
        ImagingErrorKind::NotAnImage | ImagingErrorKind::UnsupportedImage => {
            Problem::bad_request(error.message().to_owned())
        }
        ImagingErrorKind::FrameOutOfRange => Problem::not_found(error.message().to_owned()),
        ImagingErrorKind::Io => Problem::unavailable(error),
    }
}

/// A directory under the node's spool (never the shared system temp: these copies hold patient
/// data), removed on drop; one left by a killed process is removed at the next start
/// (`wado-` prefix, strata-serve's spool cleaning).
pub(crate) fn spool_dir(state: &DicomwebState) -> Result<Arc<tempfile::TempDir>, Problem> {
    let base = &state.pipeline.settings().spool_dir;
    std::fs::create_dir_all(base).map_err(|error| Problem::unavailable(&error))?;
    tempfile::Builder::new()
        .prefix("wado-")
        .tempdir_in(base)
        .map(Arc::new)
        .map_err(|error| Problem::unavailable(&error))
}

/// Copies a stored object into `path`, streaming.
pub(crate) async fn spool_object(
    store: &Arc<dyn BlobStore>,
    key: &ObjectKey,
    path: &Path,
) -> Result<(), Problem> {
    let (_, mut stream) = store
        .get(key)
        .await
        .map_err(|error| Problem::unavailable(&error))?;
    let mut file = tokio::fs::File::create(path)
        .await
        .map_err(|error| Problem::unavailable(&error))?;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|error| Problem::unavailable(&error))?;
        file.write_all(&chunk)
            .await
            .map_err(|error| Problem::unavailable(&error))?;
    }
    file.flush()
        .await
        .map_err(|error| Problem::unavailable(&error))?;
    Ok(())
}

/// Spools one stored object and transcodes it to `target`; returns the transcoded file
/// (inside `spool`) and its size.
pub(crate) async fn transcode_object(
    state: &DicomwebState,
    location: &InstanceLocation,
    target: &str,
    spool: &Arc<tempfile::TempDir>,
) -> Result<(PathBuf, u64), Problem> {
    let unique = uuid::Uuid::new_v4().simple().to_string();
    let source = spool.path().join(format!("{unique}.src.dcm"));
    let destination = spool.path().join(format!("{unique}.out.dcm"));
    spool_object(&state.store, &location.object.key, &source).await?;
    let target_uid = target.to_owned();
    let (source_path, destination_path) = (source.clone(), destination.clone());
    let outcome = tokio::task::spawn_blocking(move || {
        strata_imaging::transcode_file(&source_path, &destination_path, &target_uid)
    })
    .await
    .map_err(|error| Problem::unavailable(&error))?;
    let _ = tokio::fs::remove_file(&source).await;
    outcome.map_err(|error| imaging_problem(&error))?;
    let size = tokio::fs::metadata(&destination)
        .await
        .map_err(|error| Problem::unavailable(&error))?
        .len();
    tracing::debug!(sop_instance_uid = %location.sop_instance_uid, from = %location.transfer_syntax_uid, to = %target, "instance transcoded");
    Ok((destination, size))
}

/// Streams the instances as `multipart/related; type="application/dicom"`, transcoding those
/// whose delivery says so, one at a time. The first transcoding runs before the response
/// starts, so a failure there is still a 406 rather than a broken stream.
pub(crate) async fn multipart_response(
    state: &DicomwebState,
    locations: Vec<InstanceLocation>,
    deliveries: Vec<Delivery>,
) -> Result<Response, Problem> {
    let spool = spool_dir(state)?;
    let mut first_transcoded: Option<(usize, PathBuf, u64)> = None;
    if let Some(index) = deliveries
        .iter()
        .position(|delivery| matches!(delivery, Delivery::Transcode(_)))
    {
        let Delivery::Transcode(target) = &deliveries[index] else {
            unreachable!("position matched a transcode")
        };
        let (path, size) = transcode_object(state, &locations[index], target, &spool).await?;
        first_transcoded = Some((index, path, size));
    }
    let boundary = format!("strata-{}", uuid::Uuid::new_v4().simple());
    let closing = Bytes::from(format!("--{boundary}--\r\n"));
    let state = state.clone();
    let part_boundary = boundary.clone();
    let first_transcoded = Arc::new(std::sync::Mutex::new(first_transcoded));
    let parts = futures::stream::iter(locations.into_iter().zip(deliveries).enumerate()).then(move |(index, (location, delivery))| {
        let state = state.clone();
        let spool = spool.clone();
        let part_boundary = part_boundary.clone();
        let first_transcoded = first_transcoded.clone();
        async move {
            let part: Result<(String, u64, futures::stream::BoxStream<'static, std::io::Result<Bytes>>), std::io::Error> = match delivery {
                Delivery::AsStored => match state.store.get(&location.object.key).await {
                    Ok((size, stream)) => Ok((
                        location.transfer_syntax_uid.clone(),
                        size,
                        stream.map_err(std::io::Error::other).boxed(),
                    )),
                    Err(error) => {
                        tracing::error!(%error, object_key = %location.object.key, "object missing during retrieval");
                        Err(std::io::Error::other(error))
                    }
                },
                Delivery::Transcode(target) => {
                    let ready = {
                        let mut guard = first_transcoded.lock().expect("spool bookkeeping lock is never poisoned");
                        match guard.take() {
                            Some((ready_index, path, size)) if ready_index == index => Some((path, size)),
                            other => {
                                *guard = other;
                                None
                            }
                        }
                    };
                    let transcoded = match ready {
                        Some(ready) => Ok(ready),
                        None => transcode_object(&state, &location, &target, &spool).await,
                    };
                    match transcoded {
                        Ok((path, size)) => match tokio::fs::File::open(&path).await {
                            Ok(file) => {
                                // Unlink now: the open handle keeps the data until the part is sent.
                                let _ = tokio::fs::remove_file(&path).await;
                                Ok((target, size, tokio_util::io::ReaderStream::new(file).boxed()))
                            }
                            Err(error) => Err(error),
                        },
                        Err(problem) => {
                            tracing::warn!(sop_instance_uid = %location.sop_instance_uid, detail = %problem.detail, "transcoding failed mid-stream");
                            Err(std::io::Error::other(problem.detail))
                        }
                    }
                }
            };
            let (transfer_syntax, size, body) = match part {
                Ok(part) => part,
                Err(error) => return futures::stream::once(async move { Err(error) }).boxed(),
            };
            let header = Bytes::from(format!(
                "--{part_boundary}\r\nContent-Type: application/dicom; transfer-syntax={transfer_syntax}\r\nContent-Length: {size}\r\n\r\n"
            ));
            let _keep_spool = spool;
            futures::stream::once(async move { Ok::<Bytes, std::io::Error>(header) })
                .chain(body)
                .chain(futures::stream::once(async move {
                    drop(_keep_spool);
                    Ok(Bytes::from_static(b"\r\n"))
                }))
                .boxed()
        }
    });
    let stream = parts
        .flatten()
        .chain(futures::stream::once(async move { Ok(closing) }));
    Ok((
        [(
            http::header::CONTENT_TYPE,
            format!("multipart/related; type=\"application/dicom\"; boundary={boundary}"),
        )],
        Body::from_stream(stream),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_catalog::StoredObject;

    fn location(transfer_syntax_uid: &str) -> InstanceLocation {
        InstanceLocation {
            study_instance_uid: strata_types::StudyUid::parse("1.2.3").unwrap(),
            series_instance_uid: strata_types::SeriesUid::parse("1.2.3.4").unwrap(),
            sop_instance_uid: strata_types::SopInstanceUid::parse("1.2.3.4.5").unwrap(),
            sop_class_uid: "1.2.840.10008.5.1.4.1.1.2".to_owned(),
            transfer_syntax_uid: transfer_syntax_uid.to_owned(),
            object: StoredObject {
                key: ObjectKey::from_stored("objects/test"),
                size_bytes: 0,
                sha256: String::new(),
            },
        }
    }

    const IMPLICIT: &str = "1.2.840.10008.1.2";
    const BIG_ENDIAN: &str = "1.2.840.10008.1.2.2";
    const JPEG_2000_LOSSLESS: &str = "1.2.840.10008.1.2.4.90";
    const JPEG_LS_LOSSLESS: &str = "1.2.840.10008.1.2.4.80";
    const MPEG2: &str = "1.2.840.10008.1.2.4.100";

    #[test]
    fn test_star_never_yields_implicit_or_big_endian() {
        let locations = [
            location(IMPLICIT),
            location(BIG_ENDIAN),
            location(JPEG_2000_LOSSLESS),
            location(MPEG2),
        ];
        let deliveries = plan(Some("*"), &locations).unwrap();
        assert_eq!(
            deliveries,
            vec![
                Delivery::Transcode(EXPLICIT_VR_LITTLE_ENDIAN.to_owned()),
                Delivery::Transcode(EXPLICIT_VR_LITTLE_ENDIAN.to_owned()),
                Delivery::AsStored,
                Delivery::AsStored,
            ]
        );
    }

    #[test]
    fn test_default_is_explicit_little_endian() {
        let locations = [
            location(IMPLICIT),
            location(EXPLICIT_VR_LITTLE_ENDIAN),
            location(JPEG_2000_LOSSLESS),
            location(MPEG2),
        ];
        let deliveries = plan(None, &locations).unwrap();
        assert_eq!(
            deliveries[0],
            Delivery::Transcode(EXPLICIT_VR_LITTLE_ENDIAN.to_owned())
        );
        assert_eq!(deliveries[1], Delivery::AsStored);
        assert_eq!(
            deliveries[2],
            Delivery::Transcode(EXPLICIT_VR_LITTLE_ENDIAN.to_owned())
        );
        assert_eq!(deliveries[3], Delivery::AsStored);
    }

    #[test]
    fn test_explicit_requests_are_checked() {
        let locations = [location(EXPLICIT_VR_LITTLE_ENDIAN)];
        for forbidden in [IMPLICIT, BIG_ENDIAN] {
            let problem = plan(Some(forbidden), &locations).unwrap_err();
            assert_eq!(problem.status, http::StatusCode::NOT_ACCEPTABLE);
            assert!(problem.detail.contains(forbidden));
        }
        assert_eq!(
            plan(Some(JPEG_2000_LOSSLESS), &locations)
                .unwrap_err()
                .status,
            http::StatusCode::NOT_ACCEPTABLE
        );
        assert_eq!(
            plan(Some(JPEG_2000_LOSSLESS), &[location(JPEG_2000_LOSSLESS)]).unwrap(),
            vec![Delivery::AsStored]
        );
        assert_eq!(
            plan(Some(JPEG_LS_LOSSLESS), &locations).unwrap(),
            vec![Delivery::Transcode(JPEG_LS_LOSSLESS.to_owned())]
        );
        assert_eq!(
            plan(Some(EXPLICIT_VR_LITTLE_ENDIAN), &[location(MPEG2)])
                .unwrap_err()
                .status,
            http::StatusCode::NOT_ACCEPTABLE
        );
    }
}
