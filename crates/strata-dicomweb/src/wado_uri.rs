//! WADO-URI (PS3.18 §9, "URI service"): `GET /dicomweb/wado?requestType=WADO&studyUID=…&
//! seriesUID=…&objectUID=…` returning one instance as `application/dicom`, `image/jpeg` or
//! `image/png`.

use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::response::{IntoResponse, Response};
use futures::TryStreamExt;
use strata_imaging::{ImageFormat, RenderParams, Viewport, VoiFunction, WindowParam};
use strata_types::{SeriesUid, SopInstanceUid, StudyUid};

use crate::rendered::{MAX_VIEWPORT_SIDE, RenderFailure, parse_quality, render_location};
use crate::transcode::{Delivery, plan, spool_dir, transcode_object};
use crate::{DicomwebState, Problem};

/// What a WADO-URI request asks for.
#[derive(Debug, Clone, PartialEq)]
enum Wanted {
    Dicom {
        transfer_syntax: Option<String>,
    },
    Image {
        frame_index: u32,
        params: RenderParams,
    },
}

#[derive(Debug, Clone, PartialEq)]
struct WadoUriRequest {
    study: StudyUid,
    series: SeriesUid,
    instance: SopInstanceUid,
    wanted: Wanted,
}

pub(crate) async fn retrieve(
    State(state): State<DicomwebState>,
    RawQuery(query): RawQuery,
) -> Response {
    let result = async {
        let request = parse_request(query.as_deref().unwrap_or_default())?;
        let locations = state
            .catalog
            .instance_locations(
                &request.study,
                Some(&request.series),
                Some(&request.instance),
            )
            .await
            .map_err(|error| Problem::unavailable(&error))?;
        let Some(location) = locations.into_iter().next() else {
            return Err(Problem::not_found(format!(
                "instance {} of series {} of study {} is not in the archive",
                request.instance, request.series, request.study
            )));
        };
        crate::problem::ensure_readable(&state, std::slice::from_ref(&location)).await?;
        match request.wanted {
            Wanted::Image {
                frame_index,
                params,
            } => match render_location(&state, &location, frame_index, &params).await {
                Ok(bytes) => Ok(crate::rendered::image_response(params.format, bytes)),
                Err(RenderFailure::NotAnImage(problem) | RenderFailure::Other(problem)) => {
                    Err(problem)
                }
            },
            Wanted::Dicom { transfer_syntax } => {
                let delivery = plan(transfer_syntax.as_deref(), std::slice::from_ref(&location))?
                    .pop()
                    .expect("one delivery per location");
                match delivery {
                    Delivery::AsStored => {
                        let (size, stream) = state
                            .store
                            .get(&location.object.key)
                            .await
                            .map_err(|error| Problem::unavailable(&error))?;
                        Ok((
                            [
                                (http::header::CONTENT_TYPE, "application/dicom".to_owned()),
                                (http::header::CONTENT_LENGTH, size.to_string()),
                            ],
                            Body::from_stream(stream.map_err(std::io::Error::other)),
                        )
                            .into_response())
                    }
                    Delivery::Transcode(target) => {
                        let spool = spool_dir(&state)?;
                        let (path, size) =
                            transcode_object(&state, &location, &target, &spool).await?;
                        let file = tokio::fs::File::open(&path)
                            .await
                            .map_err(|error| Problem::unavailable(&error))?;
                        // The open handle keeps the data readable after the spool is removed.
                        drop(spool);
                        Ok((
                            [
                                (http::header::CONTENT_TYPE, "application/dicom".to_owned()),
                                (http::header::CONTENT_LENGTH, size.to_string()),
                            ],
                            Body::from_stream(tokio_util::io::ReaderStream::new(file)),
                        )
                            .into_response())
                    }
                }
            }
        }
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

fn parse_request(query: &str) -> Result<WadoUriRequest, Problem> {
    let pairs: Vec<(String, String)> = url::form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect();
    let get = |name: &str| {
        pairs
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.trim())
    };
    for (name, _) in &pairs {
        match name.as_str() {
            "requestType" | "studyUID" | "seriesUID" | "objectUID" | "contentType" | "charset"
            | "frameNumber" | "rows" | "columns" | "windowCenter" | "windowWidth"
            | "imageQuality" | "transferSyntax" => {}
            "anonymize" | "annotation" | "region" | "presentationUID" | "presentationSeriesUID" => {
                return Err(Problem::bad_request(format!(
                    "WADO-URI parameter `{name}` is not supported by this server"
                )));
            }
            other => {
                return Err(Problem::bad_request(format!(
                    "`{other}` is not a WADO-URI parameter"
                )));
            }
        }
    }
    let required = |name: &str| {
        get(name)
            .filter(|value| !value.is_empty())
            .ok_or_else(|| Problem::bad_request(format!("WADO-URI parameter `{name}` is required")))
    };
    if required("requestType")? != "WADO" {
        return Err(Problem::bad_request(
            "WADO-URI parameter `requestType` must be WADO",
        ));
    }
    let uid_error = |name: &str, error: strata_types::InvalidUid| {
        Problem::bad_request(format!(
            "WADO-URI parameter `{name}` is not a valid UID: {error}"
        ))
    };
    let study =
        StudyUid::parse(required("studyUID")?).map_err(|error| uid_error("studyUID", error))?;
    let series =
        SeriesUid::parse(required("seriesUID")?).map_err(|error| uid_error("seriesUID", error))?;
    let instance = SopInstanceUid::parse(required("objectUID")?)
        .map_err(|error| uid_error("objectUID", error))?;

    let content_type = get("contentType")
        .filter(|value| !value.is_empty())
        .unwrap_or("image/jpeg");
    let chosen = content_type
        .split(',')
        .map(|item| item.split(';').next().unwrap_or_default().trim().to_ascii_lowercase())
        .find_map(|essence| match essence.as_str() {
            "application/dicom" => Some(None),
            "image/jpeg" | "image/jpg" | "image/*" | "*/*" => Some(Some(ImageFormat::Jpeg)),
            "image/png" => Some(Some(ImageFormat::Png)),
            _ => None,
        })
        .ok_or_else(|| {
            Problem::not_acceptable(format!(
                "WADO-URI parameter `contentType` `{content_type}` names no served type (application/dicom, image/jpeg, image/png)"
            ))
        })?;

    let wanted = match chosen {
        None => {
            for image_only in [
                "frameNumber",
                "rows",
                "columns",
                "windowCenter",
                "windowWidth",
                "imageQuality",
            ] {
                if get(image_only).is_some() {
                    return Err(Problem::bad_request(format!(
                        "WADO-URI parameter `{image_only}` only applies to image content types"
                    )));
                }
            }
            Wanted::Dicom {
                transfer_syntax: get("transferSyntax")
                    .filter(|value| !value.is_empty())
                    .map(str::to_owned),
            }
        }
        Some(format) => {
            if get("transferSyntax").is_some() {
                return Err(Problem::bad_request(
                    "WADO-URI parameter `transferSyntax` only applies to contentType application/dicom",
                ));
            }
            let positive = |name: &str, maximum: u32| -> Result<Option<u32>, Problem> {
                get(name)
                    .map(|value| {
                        value
                            .parse::<u32>()
                            .ok()
                            .filter(|number| (1..=maximum).contains(number))
                            .ok_or_else(|| Problem::bad_request(format!("WADO-URI parameter `{name}` must be an integer from 1 to {maximum}")))
                    })
                    .transpose()
            };
            let frame_index = positive("frameNumber", u32::MAX)?.map_or(0, |frame| frame - 1);
            let rows = positive("rows", MAX_VIEWPORT_SIDE)?;
            let columns = positive("columns", MAX_VIEWPORT_SIDE)?;
            let viewport = match (columns, rows) {
                (None, None) => None,
                // A missing side does not constrain: the other one sets the scale.
                (columns, rows) => Some(Viewport {
                    width: columns.unwrap_or(MAX_VIEWPORT_SIDE),
                    height: rows.unwrap_or(MAX_VIEWPORT_SIDE),
                    source: None,
                }),
            };
            let number = |name: &str| -> Result<Option<f64>, Problem> {
                get(name)
                    .map(|value| {
                        value
                            .parse::<f64>()
                            .ok()
                            .filter(|number| number.is_finite())
                            .ok_or_else(|| {
                                Problem::bad_request(format!(
                                    "WADO-URI parameter `{name}` must be a decimal number"
                                ))
                            })
                    })
                    .transpose()
            };
            let window = match (number("windowCenter")?, number("windowWidth")?) {
                (None, None) => None,
                (Some(center), Some(width)) if width >= 1.0 => Some(WindowParam {
                    center,
                    width,
                    function: VoiFunction::Linear,
                }),
                (Some(_), Some(_)) => {
                    return Err(Problem::bad_request(
                        "WADO-URI parameter `windowWidth` must be at least 1",
                    ));
                }
                (Some(_), None) => {
                    return Err(Problem::bad_request(
                        "WADO-URI parameter `windowWidth` is required with `windowCenter`",
                    ));
                }
                (None, Some(_)) => {
                    return Err(Problem::bad_request(
                        "WADO-URI parameter `windowCenter` is required with `windowWidth`",
                    ));
                }
            };
            let quality = get("imageQuality")
                .map(|value| parse_quality("imageQuality", value))
                .transpose()?
                .unwrap_or(90);
            Wanted::Image {
                frame_index,
                params: RenderParams {
                    window,
                    viewport,
                    quality,
                    format,
                },
            }
        }
    };
    Ok(WadoUriRequest {
        study,
        series,
        instance,
        wanted,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const UIDS: &str = "requestType=WADO&studyUID=1.2.3&seriesUID=1.2.3.4&objectUID=1.2.3.4.5";

    #[test]
    fn test_defaults_to_a_jpeg_of_the_first_frame() {
        let request = parse_request(UIDS).unwrap();
        assert_eq!(request.instance.to_string(), "1.2.3.4.5");
        let Wanted::Image {
            frame_index,
            params,
        } = request.wanted
        else {
            panic!("image expected")
        };
        assert_eq!(frame_index, 0);
        assert_eq!(params.format, ImageFormat::Jpeg);
    }

    #[test]
    fn test_parses_image_parameters() {
        let request = parse_request(&format!(
            "{UIDS}&contentType=image%2Fpng&frameNumber=2&rows=64&windowCenter=40&windowWidth=400&imageQuality=50"
        ))
        .unwrap();
        let Wanted::Image {
            frame_index,
            params,
        } = request.wanted
        else {
            panic!("image expected")
        };
        assert_eq!(frame_index, 1);
        assert_eq!(params.format, ImageFormat::Png);
        assert_eq!(params.viewport.unwrap().height, 64);
        assert_eq!(params.window.unwrap().center, 40.0);
        assert_eq!(params.quality, 50);
    }

    #[test]
    fn test_dicom_with_transfer_syntax() {
        let request = parse_request(&format!(
            "{UIDS}&contentType=application/dicom&transferSyntax=1.2.840.10008.1.2.1"
        ))
        .unwrap();
        assert_eq!(
            request.wanted,
            Wanted::Dicom {
                transfer_syntax: Some("1.2.840.10008.1.2.1".to_owned())
            }
        );
    }

    #[test]
    fn test_names_the_bad_parameter() {
        for (query, name) in [
            (
                "studyUID=1.2&seriesUID=1.2.3&objectUID=1.2.3.4",
                "requestType",
            ),
            (
                "requestType=WADO&seriesUID=1.2.3&objectUID=1.2.3.4",
                "studyUID",
            ),
            ("requestType=WADO&studyUID=1.2&seriesUID=1.2.3", "objectUID"),
            (
                "requestType=WADO&studyUID=1.2&seriesUID=1.2%201&objectUID=1.2.3.4",
                "seriesUID",
            ),
            (&format!("{UIDS}&frameNumber=0"), "frameNumber"),
            (&format!("{UIDS}&windowCenter=40"), "windowWidth"),
            (
                &format!("{UIDS}&contentType=application/dicom&rows=10"),
                "rows",
            ),
            (&format!("{UIDS}&imageQuality=0"), "imageQuality"),
            (&format!("{UIDS}&bogus=1"), "bogus"),
        ] {
            let problem = parse_request(query).unwrap_err();
            assert_eq!(problem.status, http::StatusCode::BAD_REQUEST, "{query}");
            assert!(
                problem.detail.contains(&format!("`{name}`")),
                "{query}: {}",
                problem.detail
            );
        }
        let problem = parse_request(&format!("{UIDS}&contentType=text/html")).unwrap_err();
        assert_eq!(problem.status, http::StatusCode::NOT_ACCEPTABLE);
    }
}
