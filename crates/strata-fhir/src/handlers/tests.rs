//! Handler tests: `router(state).oneshot(request)` on a SQLite catalog filled with synthetic
//! records.

use std::sync::Arc;

use axum::body::Body;
use http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::Value;
use strata_catalog::conformance::synthetic_record;
use strata_catalog::{Catalog, InstanceRecord, SqlCatalog};
use tower::ServiceExt;

use crate::{FhirSettings, FhirState, router};

struct Fixture {
    state: FhirState,
    _directory: tempfile::TempDir,
}

/// Three studies: 1 (CT, 2 series, 2024-02-02) and 3 (MR, 2024-04-04) of patient SYN-0001,
/// 2 (CT, 2024-03-03) of SYN-0002.
async fn fixture() -> Fixture {
    let directory = tempfile::tempdir().expect("temporary directory");
    let uri = format!("sqlite://{}/catalog.db", directory.path().display());
    let catalog = SqlCatalog::connect(&uri, 2).await.expect("catalog opens");
    let mut records: Vec<InstanceRecord> = vec![
        synthetic_record(1, 1, 1),
        synthetic_record(1, 1, 2),
        synthetic_record(1, 2, 1),
        synthetic_record(2, 1, 1),
        synthetic_record(3, 1, 1),
    ];
    records[4].patient = records[0].patient.clone();
    records[4].series.modality = "MR".to_owned();
    for record in &mut records {
        record.patient.issuer_of_patient_id = "1.2.840.99".to_owned();
    }
    for record in &records {
        catalog.store_instance(record).await.expect("stored");
    }
    Fixture {
        state: FhirState {
            catalog: Arc::new(catalog),
            settings: Arc::new(FhirSettings {
                public_base_url: Some("http://archive.test/fhir".to_owned()),
                dicomweb_base_url: Some("http://archive.test/dicomweb".to_owned()),
                default_page_size: 20,
                max_page_size: 50,
            }),
        },
        _directory: directory,
    }
}

async fn get(fixture: &Fixture, uri: &str) -> (StatusCode, http::HeaderMap, Value) {
    get_with(
        fixture,
        Request::get(uri).body(Body::empty()).expect("request"),
    )
    .await
}

async fn get_with(
    fixture: &Fixture,
    request: Request<Body>,
) -> (StatusCode, http::HeaderMap, Value) {
    let response = router(fixture.state.clone())
        .oneshot(request)
        .await
        .expect("infallible");
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).expect("json body")
    };
    (status, headers, body)
}

fn study_ids(bundle: &Value) -> Vec<String> {
    bundle["entry"]
        .as_array()
        .map(|entries| {
            entries
                .iter()
                .filter(|entry| entry["resource"]["resourceType"] == "ImagingStudy")
                .map(|entry| entry["resource"]["id"].as_str().expect("id").to_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn uid(study: u32) -> String {
    strata_catalog::conformance::synthetic_study_uid(study).to_string()
}

#[tokio::test]
async fn test_read_imaging_study_with_series_and_etag() {
    let fixture = fixture().await;
    let (status, headers, study) = get(&fixture, &format!("/ImagingStudy/{}", uid(1))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::CONTENT_TYPE], "application/fhir+json");
    assert_eq!(study["resourceType"], "ImagingStudy");
    assert_eq!(study["numberOfSeries"], 2);
    assert_eq!(study["numberOfInstances"], 3);
    assert_eq!(study["series"].as_array().expect("series").len(), 2);
    assert_eq!(
        study["series"][0]["instance"]
            .as_array()
            .expect("instances")
            .len(),
        2
    );
    assert_eq!(
        study["identifier"][0]["value"],
        format!("urn:oid:{}", uid(1))
    );
    assert_eq!(study["modality"][0]["code"], "CT");
    assert_eq!(study["started"], "2024-02-02T10:30:00+00:00");
    let etag = headers[header::ETAG].to_str().expect("etag").to_owned();
    assert!(etag.starts_with("W/\""));
    assert_eq!(study["meta"]["versionId"], etag[3..etag.len() - 1]);

    let conditional = Request::get(format!("/ImagingStudy/{}", uid(1)))
        .header(header::IF_NONE_MATCH, &etag)
        .body(Body::empty())
        .expect("request");
    let (status, _, _) = get_with(&fixture, conditional).await;
    assert_eq!(status, StatusCode::NOT_MODIFIED);

    let (status, _, outcome) = get(&fixture, "/ImagingStudy/9.9.9").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(outcome["resourceType"], "OperationOutcome");
}

#[tokio::test]
async fn test_search_by_patient_reference_and_chained_identifier() {
    let fixture = fixture().await;
    let (_, _, study) = get(&fixture, &format!("/ImagingStudy/{}", uid(1))).await;
    let patient_reference = study["subject"]["reference"]
        .as_str()
        .expect("reference")
        .to_owned();
    let (status, _, bundle) = get(
        &fixture,
        &format!("/ImagingStudy?patient={patient_reference}&_include=ImagingStudy:patient&_include=ImagingStudy:endpoint"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(bundle["total"], 2);
    assert_eq!(study_ids(&bundle), [uid(1), uid(3)]);
    let modes: Vec<&str> = bundle["entry"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|entry| entry["search"]["mode"].as_str().expect("mode"))
        .collect();
    assert_eq!(modes, ["match", "match", "include", "include"]);

    let (_, _, chained) = get(
        &fixture,
        "/ImagingStudy?patient.identifier=urn:oid:1.2.840.99%7CSYN-0001",
    )
    .await;
    assert_eq!(study_ids(&chained), [uid(1), uid(3)]);
    let (_, _, other_issuer) = get(
        &fixture,
        "/ImagingStudy?patient.identifier=urn:oid:1.2.840.98%7CSYN-0001",
    )
    .await;
    assert_eq!(other_issuer["total"], 0);

    let patient_id = patient_reference.trim_start_matches("Patient/");
    let (status, headers, patient) = get(&fixture, &format!("/Patient/{patient_id}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(patient["identifier"][0]["system"], "urn:oid:1.2.840.99");
    assert_eq!(patient["identifier"][0]["value"], "SYN-0001");
    assert_eq!(patient["name"][0]["family"], "Synthetic");
    assert!(headers.contains_key(header::ETAG));
    let (_, _, by_name) = get(&fixture, "/Patient?name=synth").await;
    assert_eq!(by_name["total"], 2);
    let (_, _, by_identifier) = get(&fixture, "/Patient?identifier=SYN-0002").await;
    assert_eq!(by_identifier["total"], 1);
}

#[tokio::test]
async fn test_search_parameters_sort_and_paging() {
    let fixture = fixture().await;
    let ids = |query: &str| {
        let query = query.to_owned();
        let fixture = &fixture;
        async move { study_ids(&get(fixture, &format!("/ImagingStudy?{query}")).await.2) }
    };
    assert_eq!(ids("modality=MR").await, [uid(3)]);
    assert_eq!(
        ids("modality=http://dicom.nema.org/resources/ontology/DCM%7CCT").await,
        [uid(1), uid(2)]
    );
    assert_eq!(ids("started=ge2024-03-03").await, [uid(2), uid(3)]);
    assert_eq!(ids("started=gt2024-03-03").await, [uid(3)]);
    assert_eq!(ids("started=lt2024-03-03").await, [uid(1)]);
    assert_eq!(ids("started=le2024-03").await, [uid(1), uid(2)]);
    assert_eq!(ids("started=2024-03").await, [uid(2)]);
    assert_eq!(ids(&format!("_id={}", uid(2))).await, [uid(2)]);
    assert_eq!(ids("identifier=ACC00002").await, [uid(2)]);
    assert_eq!(
        ids(&format!(
            "series={}",
            strata_catalog::conformance::synthetic_series_uid(1, 2)
        ))
        .await,
        [uid(1)]
    );
    assert_eq!(
        ids("dicom-class=urn:oid:1.2.840.10008.5.1.4.1.1.2")
            .await
            .len(),
        3
    );
    assert_eq!(ids("status=available").await.len(), 3);
    assert!(ids("status=cancelled").await.is_empty());
    assert_eq!(ids("_sort=-started").await, [uid(3), uid(2), uid(1)]);
    assert_eq!(ids("_lastUpdated=ge2000-01-01").await.len(), 3);
    assert!(ids("_lastUpdated=lt2000-01-01").await.is_empty());

    let (_, _, first) = get(&fixture, "/ImagingStudy?_sort=started&_count=2").await;
    assert_eq!(study_ids(&first), [uid(1), uid(2)]);
    let next = first["link"]
        .as_array()
        .expect("links")
        .iter()
        .find(|link| link["relation"] == "next")
        .expect("a next link")["url"]
        .as_str()
        .expect("url")
        .trim_start_matches("http://archive.test/fhir")
        .to_owned();
    let (_, _, second) = get(&fixture, &next).await;
    assert_eq!(study_ids(&second), [uid(3)]);
    assert!(
        second["link"]
            .as_array()
            .expect("links")
            .iter()
            .any(|link| link["relation"] == "previous")
    );
    assert!(
        !second["link"]
            .as_array()
            .expect("links")
            .iter()
            .any(|link| link["relation"] == "next")
    );
}

#[tokio::test]
async fn test_errors_are_operation_outcomes() {
    let fixture = fixture().await;
    for (query, status, code) in [
        ("foo=bar", StatusCode::BAD_REQUEST, "not-supported"),
        ("started=ne2024", StatusCode::BAD_REQUEST, "not-supported"),
        ("started=2024-13", StatusCode::BAD_REQUEST, "invalid"),
        ("_count=x", StatusCode::BAD_REQUEST, "invalid"),
        ("_sort=modality", StatusCode::BAD_REQUEST, "not-supported"),
        ("_format=xml", StatusCode::NOT_ACCEPTABLE, "not-supported"),
    ] {
        let (actual_status, headers, outcome) =
            get(&fixture, &format!("/ImagingStudy?{query}")).await;
        assert_eq!(actual_status, status, "{query}");
        assert_eq!(headers[header::CONTENT_TYPE], "application/fhir+json");
        assert_eq!(outcome["resourceType"], "OperationOutcome");
        assert_eq!(outcome["issue"][0]["code"], code, "{query}");
    }
    let xml = Request::get("/ImagingStudy")
        .header(header::ACCEPT, "application/fhir+xml")
        .body(Body::empty())
        .expect("request");
    assert_eq!(get_with(&fixture, xml).await.0, StatusCode::NOT_ACCEPTABLE);
    let (status, _, capability) = get(&fixture, "/metadata").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(capability["fhirVersion"], "4.0.1");
    let (status, _, endpoint) = get(&fixture, "/Endpoint/dicomweb").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(endpoint["address"], "http://archive.test/dicomweb");
    assert_eq!(endpoint["connectionType"]["code"], "dicom-wado-rs");
}
