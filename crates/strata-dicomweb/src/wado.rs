//! WADO-RS retrieval of instances and metadata (PS3.18 §10.4).

use axum::body::Body;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use http::HeaderMap;
use strata_catalog::InstanceLocation;
use strata_dicom::BULK_DATA_PLACEHOLDER;
use strata_types::{SeriesUid, SopInstanceUid, StudyUid};

use crate::media::MediaType;
use crate::{DicomwebState, Problem, base_url};

/// The UIDs of a WADO-RS target.
struct Target {
    study: StudyUid,
    series: Option<SeriesUid>,
    instance: Option<SopInstanceUid>,
}

impl Target {
    fn parse(study: &str, series: Option<&str>, instance: Option<&str>) -> Result<Self, Problem> {
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

    fn describe(&self) -> String {
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

/// Checks the Accept header of an instance retrieval. Returns the requested transfer syntax
/// (`None`: as stored). Objects are served as stored; transcoding is not offered, so a request
/// for another explicit transfer syntax is answered 406.
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
        return Ok(range
            .param("transfer-syntax")
            .filter(|ts| *ts != "*")
            .map(str::to_owned));
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
        let requested_ts = accepted_transfer_syntax(&headers)?;
        let locations = locations(&state, &target).await?;
        if let Some(requested) = &requested_ts
            && let Some(other) = locations.iter().find(|location| &location.transfer_syntax_uid != requested) {
                return Err(Problem::not_acceptable(format!(
                    "instance {} is stored in transfer syntax {} and transcoding to {requested} is not offered; \
                     ask for transfer-syntax=*",
                    other.sop_instance_uid, other.transfer_syntax_uid
                )));
            }
        Ok(multipart_response(&state, locations))
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

async fn locations(
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

/// Streams the instances as `multipart/related; type="application/dicom"`, one object at a
/// time from the store, never holding a whole instance in memory.
fn multipart_response(state: &DicomwebState, locations: Vec<InstanceLocation>) -> Response {
    let boundary = format!("strata-{}", uuid::Uuid::new_v4().simple());
    let store = state.store.clone();
    let closing = Bytes::from(format!("--{boundary}--\r\n"));
    let part_boundary = boundary.clone();
    let parts = futures::stream::iter(locations).flat_map(move |location| {
        let store = store.clone();
        let header = Bytes::from(format!(
            "--{part_boundary}\r\nContent-Type: application/dicom; transfer-syntax={}\r\nContent-Length: {}\r\n\r\n",
            location.transfer_syntax_uid, location.object.size_bytes
        ));
        let body = futures::stream::once(async move {
            match store.get(&location.object.key).await {
                Ok((_, stream)) => stream.map_err(std::io::Error::other).boxed(),
                Err(error) => {
                    tracing::error!(%error, object_key = %location.object.key, "object missing during retrieval");
                    futures::stream::once(async move { Err(std::io::Error::other(error)) }).boxed()
                }
            }
        })
        .flatten();
        futures::stream::once(async move { Ok::<Bytes, std::io::Error>(header) })
            .chain(body)
            .chain(futures::stream::once(async { Ok(Bytes::from_static(b"\r\n")) }))
    });
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
        let locations = locations(&state, &target).await?;
        let documents = state
            .catalog
            .instance_metadata(&target.study, target.series.as_ref(), target.instance.as_ref())
            .await
            .map_err(|error| Problem::unavailable(&error))?;
        let base = base_url(&state.settings, &headers);
        let mut body = String::with_capacity(documents.iter().map(String::len).sum::<usize>() + 2);
        body.push('[');
        for (index, (document, location)) in documents.iter().zip(&locations).enumerate() {
            if index > 0 {
                body.push(',');
            }
            let instance_url = format!(
                "{base}/studies/{}/series/{}/instances/{}/",
                location.study_instance_uid, location.series_instance_uid, location.sop_instance_uid
            );
            body.push_str(&document.replace(BULK_DATA_PLACEHOLDER, &instance_url));
        }
        body.push(']');
        Ok(([(http::header::CONTENT_TYPE, "application/dicom+json")], body).into_response())
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}
