//! WADO-RS retrieval of instances and metadata (PS3.18 §10.4).

use axum::body::Body;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use http::HeaderMap;
use strata_catalog::InstanceLocation;
use strata_types::{SeriesUid, SopInstanceUid, StudyUid};

use crate::media::MediaType;
use crate::{DicomwebState, Problem};

/// The UIDs of a WADO-RS target.
pub(crate) struct Target {
    pub(crate) study: StudyUid,
    pub(crate) series: Option<SeriesUid>,
    pub(crate) instance: Option<SopInstanceUid>,
}

impl Target {
    pub(crate) fn parse(
        study: &str,
        series: Option<&str>,
        instance: Option<&str>,
    ) -> Result<Self, Problem> {
        let bad = |what: &str, value: &str, error: strata_types::InvalidUid| {
            Problem::bad_request(format!("{what} UID `{value}` is invalid: {error}"))
        };
        Ok(Self {
            study: StudyUid::parse(study).map_err(|error| bad("study", study, error))?,
            series: series
                .map(|value| SeriesUid::parse(value).map_err(|error| bad("series", value, error)))
                .transpose()?,
            instance: instance
                .map(|value| {
                    SopInstanceUid::parse(value).map_err(|error| bad("instance", value, error))
                })
                .transpose()?,
        })
    }

    /// Returns the first UID of the target that does not follow the DICOM UID syntax.
    fn first_nonconformant(&self) -> Option<String> {
        if !self.study.is_conformant() {
            return Some(self.study.to_string());
        }
        if let Some(series) = self
            .series
            .as_ref()
            .filter(|series| !series.is_conformant())
        {
            return Some(series.to_string());
        }
        self.instance
            .as_ref()
            .filter(|instance| !instance.is_conformant())
            .map(ToString::to_string)
    }

    pub(crate) fn describe(&self) -> String {
        match (&self.series, &self.instance) {
            (Some(series), Some(instance)) => format!(
                "instance {instance} of series {series} of study {}",
                self.study
            ),
            (Some(series), None) => format!("series {series} of study {}", self.study),
            _ => format!("study {}", self.study),
        }
    }
}

pub(crate) async fn retrieve_study(
    State(state): State<DicomwebState>,
    Path(study): Path<String>,
    headers: HeaderMap,
) -> Response {
    retrieve(state, Target::parse(&study, None, None), headers).await
}

pub(crate) async fn retrieve_series(
    State(state): State<DicomwebState>,
    Path((study, series)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    retrieve(state, Target::parse(&study, Some(&series), None), headers).await
}

pub(crate) async fn retrieve_instance(
    State(state): State<DicomwebState>,
    Path((study, series, instance)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    retrieve(
        state,
        Target::parse(&study, Some(&series), Some(&instance)),
        headers,
    )
    .await
}

pub(crate) async fn study_metadata(
    State(state): State<DicomwebState>,
    Path(study): Path<String>,
    headers: HeaderMap,
) -> Response {
    metadata(state, Target::parse(&study, None, None), headers).await
}

pub(crate) async fn series_metadata(
    State(state): State<DicomwebState>,
    Path((study, series)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    metadata(state, Target::parse(&study, Some(&series), None), headers).await
}

pub(crate) async fn instance_metadata(
    State(state): State<DicomwebState>,
    Path((study, series, instance)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    metadata(
        state,
        Target::parse(&study, Some(&series), Some(&instance)),
        headers,
    )
    .await
}

/// Checks the Accept header of an instance retrieval. Returns the requested transfer syntax:
/// `None` when none is named (Explicit VR Little Endian by default), `Some("*")` for any; see
/// `transcode::plan` for what each gives.
fn accepted_transfer_syntax(headers: &HeaderMap) -> Result<Option<String>, Problem> {
    let Some(accept) = headers
        .get(http::header::ACCEPT)
        .and_then(|value| value.to_str().ok())
    else {
        return Ok(None);
    };
    let ranges = MediaType::parse_accept(accept);
    if ranges.is_empty() {
        return Ok(None);
    }
    for range in &ranges {
        let acceptable_essence = matches!(
            range.essence.as_str(),
            "*/*" | "multipart/*" | "multipart/related"
        );
        if !acceptable_essence {
            continue;
        }
        let part_type = range.param("type").unwrap_or("application/dicom");
        if !matches!(part_type, "application/dicom" | "*/*" | "application/*") {
            continue;
        }
        return Ok(range.param("transfer-syntax").map(str::to_owned));
    }
    Err(Problem::not_acceptable(format!(
        "none of the media types in Accept `{accept}` can be served: use multipart/related; type=\"application/dicom\""
    )))
}

async fn retrieve(
    state: DicomwebState,
    target: Result<Target, Problem>,
    headers: HeaderMap,
) -> Response {
    let result = async {
        let target = target?;
        // `Accept: application/zip` (PS3.18 §8.7.5): the stored Part 10 objects in a zip.
        if crate::zip::prefers_zip(&headers) {
            let locations = locations(&state, &target).await?;
            if let Some(response) = crate::problem::unreadable(&state, &locations).await {
                return Ok(response);
            }
            return Ok(crate::zip::zip_response(&state, &target, locations));
        }
        let requested_ts = accepted_transfer_syntax(&headers)?;
        let locations = locations(&state, &target).await?;
        if let Some(response) = crate::problem::unreadable(&state, &locations).await {
            return Ok(response);
        }
        // Transfer syntax negotiation and transcoding (issue 3): transcode.rs.
        let deliveries = crate::transcode::plan(requested_ts.as_deref(), &locations)?;
        if deliveries
            .iter()
            .all(|delivery| *delivery == crate::transcode::Delivery::AsStored)
        {
            return Ok(multipart_response(&state, locations));
        }
        crate::transcode::multipart_response(&state, locations, deliveries).await
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

pub(crate) async fn locations(
    state: &DicomwebState,
    target: &Target,
) -> Result<Vec<InstanceLocation>, Problem> {
    let locations = state
        .catalog
        .instance_locations(
            &target.study,
            target.series.as_ref(),
            target.instance.as_ref(),
        )
        .await
        .map_err(|error| Problem::unavailable(&error))?;
    if locations.is_empty() {
        // The archive keeps legacy objects whose identifiers do not follow the UID syntax
        // retrievable, so such identifiers are only "malformed" when nothing answers to them.
        if let Some(malformed) = target.first_nonconformant() {
            return Err(Problem::bad_request(format!(
                "`{malformed}` is not a valid DICOM UID"
            )));
        }
        return Err(Problem::not_found(format!(
            "{} is not in the archive",
            target.describe()
        )));
    }
    Ok(locations)
}

/// Instances whose first chunk is read while an earlier one is being sent: keeps the disk (or
/// the object store) and the socket busy at once, with at most this many chunks in memory.
const READ_AHEAD_INSTANCES: usize = 4;

/// Streams the instances as `multipart/related; type="application/dicom"`, chunk by chunk from
/// the store, never holding a whole large instance in memory.
fn multipart_response(state: &DicomwebState, locations: Vec<InstanceLocation>) -> Response {
    let boundary = format!("strata-{}", uuid::Uuid::new_v4().simple());
    let store = state.store.clone();
    let closing = Bytes::from(format!("--{boundary}--\r\n"));
    let part_boundary = boundary.clone();
    let parts = futures::stream::iter(locations)
        .map(move |location| {
            let store = store.clone();
            let header = Bytes::from(format!(
                "--{part_boundary}\r\nContent-Type: application/dicom; transfer-syntax={}\r\nContent-Length: {}\r\n\r\n",
                location.transfer_syntax_uid, location.object.size_bytes
            ));
            // Opens the object and reads its first chunk; run ahead of the part being sent.
            async move {
                let body = match store.get(&location.object.key).await {
                    Ok((_, mut stream)) => {
                        let first = stream.next().await;
                        futures::stream::iter(first)
                            .chain(stream)
                            .map_err(std::io::Error::other)
                            .boxed()
                    }
                    Err(error) => {
                        tracing::error!(%error, object_key = %location.object.key, "object missing during retrieval");
                        futures::stream::once(async move { Err(std::io::Error::other(error)) })
                            .boxed()
                    }
                };
                futures::stream::once(async move { Ok::<Bytes, std::io::Error>(header) })
                    .chain(body)
                    .chain(futures::stream::once(async { Ok(Bytes::from_static(b"\r\n")) }))
            }
        })
        .buffered(READ_AHEAD_INSTANCES)
        .flatten();
    let stream = parts.chain(futures::stream::once(async move { Ok(closing) }));
    (
        [(
            http::header::CONTENT_TYPE,
            format!("multipart/related; type=\"application/dicom\"; boundary={boundary}"),
        )],
        Body::from_stream(stream),
    )
        .into_response()
}

async fn metadata(
    state: DicomwebState,
    target: Result<Target, Problem>,
    headers: HeaderMap,
) -> Response {
    let result = async {
        let target = target?;
        if let Some(accept) = headers.get(http::header::ACCEPT).and_then(|value| value.to_str().ok()) {
            let ranges = MediaType::parse_accept(accept);
            let acceptable = ranges.is_empty()
                || ranges.iter().any(|range| {
                    matches!(range.essence.as_str(), "application/dicom+json" | "application/json" | "application/*" | "*/*")
                });
            if !acceptable {
                return Err(Problem::not_acceptable(format!(
                    "metadata is served as application/dicom+json; Accept `{accept}` does not allow it"
                )));
            }
        }
        crate::series_cache::metadata_response(&state, &target, &headers).await
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}
