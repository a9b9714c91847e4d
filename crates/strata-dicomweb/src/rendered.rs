//! Rendered and thumbnail resources (PS3.18 §8.3.5, §9.5): one frame as `image/jpeg` or
//! `image/png`, with the `window`, `viewport` and `quality` parameters.
//!
//! A study or series renders its representative instance: the middle instance (in the
//! catalog's order: series number, then instance number) of the first series that has pixel
//! data; an instance renders its first frame. Decoding and encoding run in `spawn_blocking`.

use axum::extract::{Path, RawQuery, State};
use axum::response::{IntoResponse, Response};
use http::HeaderMap;
use strata_catalog::InstanceLocation;
use strata_imaging::{
    ImageFormat, ImagingErrorKind, RenderParams, SourceRect, Viewport, VoiFunction, WindowParam,
};
use strata_types::{SeriesUid, SopInstanceUid, StudyUid};

use crate::media::MediaType;
use crate::transcode::{imaging_problem, spool_dir, spool_object};
use crate::{DicomwebState, Problem};

/// Largest viewport side served, to bound memory and CPU per request.
pub(crate) const MAX_VIEWPORT_SIDE: u32 = 4096;
/// Viewport of a thumbnail when the client gives none.
const DEFAULT_THUMBNAIL_SIDE: u32 = 128;
/// Instances tried when a study or series' representative has no pixel data.
const MAX_REPRESENTATIVE_CANDIDATES: usize = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Resource {
    Rendered,
    Thumbnail,
}

/// `GET …/rendered` at every level: the path parameters (study, series, instance, frames)
/// arrive in order, as many as the route has.
pub(crate) async fn rendered(
    State(state): State<DicomwebState>,
    Path(parameters): Path<Vec<String>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    respond(state, Resource::Rendered, parameters, query, headers).await
}

/// `GET …/thumbnail` at every level (see [`rendered`]).
pub(crate) async fn thumbnail(
    State(state): State<DicomwebState>,
    Path(parameters): Path<Vec<String>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    respond(state, Resource::Thumbnail, parameters, query, headers).await
}

type TargetPath = (String, Option<String>, Option<String>, Option<String>);

async fn respond(
    state: DicomwebState,
    resource: Resource,
    parameters: Vec<String>,
    query: Option<String>,
    headers: HeaderMap,
) -> Response {
    let mut parameters = parameters.into_iter();
    let target: TargetPath = (
        parameters.next().unwrap_or_default(),
        parameters.next(),
        parameters.next(),
        parameters.next(),
    );
    render_resource(state, resource, target, query, headers)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

async fn render_resource(
    state: DicomwebState,
    resource: Resource,
    (study, series, instance, frames): TargetPath,
    query: Option<String>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let pairs: Vec<(String, String)> =
        url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
            .into_owned()
            .collect();
    let mut accept_param = None;
    let mut params = RenderParams::default();
    for (name, value) in &pairs {
        match name.as_str() {
            "accept" => accept_param = Some(value.clone()),
            "window" if resource == Resource::Rendered => {
                params.window = Some(parse_window(value)?)
            }
            "viewport" => params.viewport = Some(parse_viewport(value)?),
            "quality" if resource == Resource::Rendered => {
                params.quality = parse_quality("quality", value)?
            }
            // Burned-in annotation is not drawn (documented); charset and iccprofile only
            // concern annotation text and embedded ICC profiles, which are never produced.
            "annotation" | "charset" | "iccprofile" => {}
            other => {
                return Err(Problem::bad_request(format!(
                    "query parameter `{other}` is not supported by the {} resource",
                    if resource == Resource::Rendered {
                        "rendered"
                    } else {
                        "thumbnail"
                    }
                )));
            }
        }
    }
    let accept = accept_param.or_else(|| {
        headers
            .get(http::header::ACCEPT)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned)
    });
    params.format = negotiate_image_format(accept.as_deref())?;
    if resource == Resource::Thumbnail && params.viewport.is_none() {
        params.viewport = Some(Viewport {
            width: DEFAULT_THUMBNAIL_SIDE,
            height: DEFAULT_THUMBNAIL_SIDE,
            source: None,
        });
    }

    let study_uid = StudyUid::parse(&study).map_err(|error| {
        Problem::bad_request(format!("study UID `{study}` is invalid: {error}"))
    })?;
    let series_uid = series
        .as_deref()
        .map(|value| {
            SeriesUid::parse(value).map_err(|error| {
                Problem::bad_request(format!("series UID `{value}` is invalid: {error}"))
            })
        })
        .transpose()?;
    let instance_uid = instance
        .as_deref()
        .map(|value| {
            SopInstanceUid::parse(value).map_err(|error| {
                Problem::bad_request(format!("instance UID `{value}` is invalid: {error}"))
            })
        })
        .transpose()?;
    let frame_index = frames
        .as_deref()
        .map(parse_single_frame)
        .transpose()?
        .unwrap_or(0);

    let locations = state
        .catalog
        .instance_locations(&study_uid, series_uid.as_ref(), instance_uid.as_ref())
        .await
        .map_err(|error| Problem::unavailable(&error))?;
    if locations.is_empty() {
        let what = match (&series_uid, &instance_uid) {
            (Some(series), Some(instance)) => {
                format!("instance {instance} of series {series} of study {study_uid}")
            }
            (Some(series), None) => format!("series {series} of study {study_uid}"),
            _ => format!("study {study_uid}"),
        };
        return Err(Problem::not_found(format!("{what} is not in the archive")));
    }
    let candidates = representative_candidates(&locations);
    let mut last_problem = None;
    for location in candidates {
        match render_location(&state, location, frame_index, &params).await {
            Ok(bytes) => return Ok(image_response(params.format, bytes)),
            Err(RenderFailure::NotAnImage(problem)) if instance_uid.is_none() => {
                last_problem = Some(problem)
            }
            Err(RenderFailure::NotAnImage(problem) | RenderFailure::Other(problem)) => {
                return Err(problem);
            }
        }
    }
    Err(last_problem.map_or_else(
        || Problem::bad_request("no instance of the target has pixel data to render"),
        |problem| {
            Problem::bad_request(format!(
                "no instance of the target has pixel data to render ({})",
                problem.detail
            ))
        },
    ))
}

pub(crate) fn image_response(format: ImageFormat, bytes: Vec<u8>) -> Response {
    ([(http::header::CONTENT_TYPE, format.media_type())], bytes).into_response()
}

pub(crate) enum RenderFailure {
    NotAnImage(Problem),
    Other(Problem),
}

/// Renders frame `frame_index` (0-based) of one stored instance.
pub(crate) async fn render_location(
    state: &DicomwebState,
    location: &InstanceLocation,
    frame_index: u32,
    params: &RenderParams,
) -> Result<Vec<u8>, RenderFailure> {
    crate::problem::ensure_readable(state, std::slice::from_ref(location))
        .await
        .map_err(RenderFailure::Other)?;
    let spool = spool_dir(state).map_err(RenderFailure::Other)?;
    let path = spool.path().join("instance.dcm");
    spool_object(&state.store, &location.object.key, &path)
        .await
        .map_err(RenderFailure::Other)?;
    let params = params.clone();
    let rendered = tokio::task::spawn_blocking(move || {
        let result = strata_imaging::render_file(&path, frame_index, &params);
        drop(spool);
        result
    })
    .await
    .map_err(|error| RenderFailure::Other(Problem::unavailable(&error)))?;
    rendered.map_err(|error| {
        let problem = imaging_problem(&error);
        if error.kind == ImagingErrorKind::NotAnImage {
            RenderFailure::NotAnImage(problem)
        } else {
            RenderFailure::Other(problem)
        }
    })
}

/// The middle instance of each series, in catalog order, at most a few.
fn representative_candidates(locations: &[InstanceLocation]) -> Vec<&InstanceLocation> {
    let mut candidates = Vec::new();
    let mut start = 0;
    while start < locations.len() && candidates.len() < MAX_REPRESENTATIVE_CANDIDATES {
        let series = &locations[start].series_instance_uid;
        let end = locations[start..]
            .iter()
            .position(|location| &location.series_instance_uid != series)
            .map_or(locations.len(), |offset| start + offset);
        candidates.push(&locations[start + (end - start) / 2]);
        start = end;
    }
    candidates
}

/// Picks image/jpeg or image/png from an Accept list; none or `*/*` gives JPEG.
pub(crate) fn negotiate_image_format(accept: Option<&str>) -> Result<ImageFormat, Problem> {
    let Some(accept) = accept.filter(|text| !text.trim().is_empty()) else {
        return Ok(ImageFormat::Jpeg);
    };
    let mut ranges = MediaType::parse_accept(accept);
    // Highest q first; a stable sort keeps the client's order among equals.
    ranges.sort_by(|left, right| quality_of(right).total_cmp(&quality_of(left)));
    for range in ranges.iter().filter(|range| quality_of(range) > 0.0) {
        match range.essence.as_str() {
            "image/jpeg" | "image/jpg" | "image/*" | "*/*" => return Ok(ImageFormat::Jpeg),
            "image/png" => return Ok(ImageFormat::Png),
            _ => {}
        }
    }
    Err(Problem::not_acceptable(format!(
        "rendered resources are served as image/jpeg or image/png; Accept `{accept}` allows neither"
    )))
}

fn quality_of(range: &MediaType) -> f64 {
    range
        .param("q")
        .and_then(|value| value.parse().ok())
        .unwrap_or(1.0)
}

/// Parses `window=center,width[,function]` (PS3.18 §8.3.5.1.4).
pub(crate) fn parse_window(value: &str) -> Result<WindowParam, Problem> {
    let bad = |reason: &str| {
        Problem::bad_request(format!(
            "query parameter `window` must be center,width[,linear|linear-exact|sigmoid]: {reason}"
        ))
    };
    let parts: Vec<&str> = value.split(',').map(str::trim).collect();
    if !(2..=3).contains(&parts.len()) {
        return Err(bad("expected two or three values"));
    }
    let center: f64 = parts[0]
        .parse()
        .ok()
        .filter(|number: &f64| number.is_finite())
        .ok_or_else(|| bad("center is not a number"))?;
    let width: f64 = parts[1]
        .parse()
        .ok()
        .filter(|number: &f64| number.is_finite())
        .ok_or_else(|| bad("width is not a number"))?;
    let function = match parts
        .get(2)
        .map(|name| name.to_ascii_lowercase().replace('_', "-"))
        .as_deref()
    {
        None | Some("linear") => VoiFunction::Linear,
        Some("linear-exact") => VoiFunction::LinearExact,
        Some("sigmoid") => VoiFunction::Sigmoid,
        Some(_) => return Err(bad("unknown function")),
    };
    let minimum_width = if function == VoiFunction::Linear {
        1.0
    } else {
        f64::MIN_POSITIVE
    };
    if width < minimum_width {
        return Err(bad("width must be positive (at least 1 for linear)"));
    }
    Ok(WindowParam {
        center,
        width,
        function,
    })
}

/// Parses `viewport=vw,vh[,sx,sy,sw,sh]` (PS3.18 §8.3.5.1.3).
pub(crate) fn parse_viewport(value: &str) -> Result<Viewport, Problem> {
    let bad = |reason: &str| {
        Problem::bad_request(format!(
            "query parameter `viewport` must be vw,vh[,sx,sy,sw,sh]: {reason}"
        ))
    };
    let parts: Vec<&str> = value.split(',').map(str::trim).collect();
    if parts.len() != 2 && parts.len() != 6 {
        return Err(bad("expected two or six values"));
    }
    let side = |text: &str| -> Result<u32, Problem> {
        text.parse::<u32>()
            .ok()
            .filter(|number| (1..=MAX_VIEWPORT_SIDE).contains(number))
            .ok_or_else(|| {
                bad(&format!(
                    "vw and vh must be integers from 1 to {MAX_VIEWPORT_SIDE}"
                ))
            })
    };
    let width = side(parts[0])?;
    let height = side(parts[1])?;
    let source = if parts.len() == 6 {
        let number = |text: &str| -> Result<i64, Problem> {
            text.parse::<i64>()
                .ok()
                .filter(|number| number.abs() <= 1 << 20)
                .ok_or_else(|| bad("sx, sy, sw and sh must be integers"))
        };
        let source = SourceRect {
            x: number(parts[2])?,
            y: number(parts[3])?,
            width: number(parts[4])?,
            height: number(parts[5])?,
        };
        if source.width == 0 || source.height == 0 {
            return Err(bad("sw and sh must not be zero"));
        }
        Some(source)
    } else {
        None
    };
    Ok(Viewport {
        width,
        height,
        source,
    })
}

/// Parses a JPEG quality from 1 to 100.
pub(crate) fn parse_quality(name: &str, value: &str) -> Result<u8, Problem> {
    value
        .trim()
        .parse::<u8>()
        .ok()
        .filter(|quality| (1..=100).contains(quality))
        .ok_or_else(|| {
            Problem::bad_request(format!(
                "query parameter `{name}` must be an integer from 1 to 100"
            ))
        })
}

/// Parses the one frame number of a rendered frame resource (1-based) into a frame index.
fn parse_single_frame(value: &str) -> Result<u32, Problem> {
    if value.contains(',') {
        return Err(Problem::bad_request(
            "rendered frames are served one at a time: give a single frame number in `frames`",
        ));
    }
    value
        .trim()
        .parse::<u32>()
        .ok()
        .filter(|frame| *frame >= 1)
        .map(|frame| frame - 1)
        .ok_or_else(|| {
            Problem::bad_request(format!(
                "frame number `{value}` in `frames` must be an integer from 1"
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_parses_window_and_rejects_bad_values() {
        let window = parse_window("40,400,sigmoid").unwrap();
        assert_eq!(
            (window.center, window.width, window.function),
            (40.0, 400.0, VoiFunction::Sigmoid)
        );
        assert_eq!(
            parse_window("40,400").unwrap().function,
            VoiFunction::Linear
        );
        for bad in ["40", "a,400", "40,0", "40,400,cubic", "1,2,3,4"] {
            let problem = parse_window(bad).unwrap_err();
            assert!(problem.detail.contains("`window`"), "{bad}");
        }
    }

    #[test]
    fn test_parses_viewport() {
        assert_eq!(
            parse_viewport("64,32").unwrap(),
            Viewport {
                width: 64,
                height: 32,
                source: None
            }
        );
        let cropped = parse_viewport("64,64,10,10,-20,20").unwrap();
        assert_eq!(
            cropped.source,
            Some(SourceRect {
                x: 10,
                y: 10,
                width: -20,
                height: 20
            })
        );
        for bad in ["64", "0,64", "64,64,1,2,3", "64,64,0,0,0,10", "99999,2"] {
            assert!(
                parse_viewport(bad)
                    .unwrap_err()
                    .detail
                    .contains("`viewport`"),
                "{bad}"
            );
        }
    }

    #[test]
    fn test_negotiates_image_formats() {
        assert_eq!(negotiate_image_format(None).unwrap(), ImageFormat::Jpeg);
        assert_eq!(
            negotiate_image_format(Some("image/png")).unwrap(),
            ImageFormat::Png
        );
        assert_eq!(
            negotiate_image_format(Some("image/jpeg;q=0.5, image/png")).unwrap(),
            ImageFormat::Png
        );
        assert_eq!(
            negotiate_image_format(Some("*/*")).unwrap(),
            ImageFormat::Jpeg
        );
        let problem = negotiate_image_format(Some("application/dicom")).unwrap_err();
        assert_eq!(problem.status, http::StatusCode::NOT_ACCEPTABLE);
    }

    #[test]
    fn test_frames_and_quality() {
        assert_eq!(parse_single_frame("3").unwrap(), 2);
        assert!(parse_single_frame("0").is_err());
        assert!(parse_single_frame("1,2").is_err());
        assert_eq!(parse_quality("quality", "75").unwrap(), 75);
        assert!(
            parse_quality("quality", "101")
                .unwrap_err()
                .detail
                .contains("`quality`")
        );
    }
}
