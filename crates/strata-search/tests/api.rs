//! `GET /api/search` through the router: links, facets, and 400 problem+json naming the
//! parameter.

use std::sync::Arc;

use http_body_util::BodyExt;
use strata_search::{DocumentSettings, LocalSearchService, SearchApiState, SearchIndex};
use tower::ServiceExt;

fn state() -> SearchApiState {
    let index = SearchIndex::in_memory(DocumentSettings::default()).expect("index");
    let instance = serde_json::json!({
        "00080060": {"vr": "CS", "Value": ["MR"]},
        "00081030": {"vr": "LO", "Value": ["MR KNEE LEFT"]},
        "00100010": {"vr": "PN", "Value": [{"Alphabetic": "Kowalski^Jan"}]},
    })
    .to_string();
    index.stage_study("1.2.3.4", &[instance]).expect("stage");
    index.commit(1).expect("commit");
    SearchApiState {
        service: Arc::new(LocalSearchService::new(Arc::new(index))),
        dicomweb_base_url: "https://pacs.example.org/dicomweb".to_owned(),
        fhir_base_url: "https://pacs.example.org/fhir".to_owned(),
    }
}

async fn get(uri: &str) -> (http::StatusCode, String, serde_json::Value) {
    let request = http::Request::get(uri)
        .body(axum::body::Body::empty())
        .expect("request");
    let response = strata_search::router(state())
        .oneshot(request)
        .await
        .expect("response");
    let status = response.status();
    let content_type = response
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    (
        status,
        content_type,
        serde_json::from_slice(&body).expect("json"),
    )
}

#[tokio::test]
async fn test_search_returns_links_facets_and_the_indexed_sequence() {
    let (status, _, body) = get("/search?q=kowlaski&modality=mr").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["total"], 1);
    assert_eq!(body["indexed_sequence"], 1);
    assert_eq!(body["facets"]["modality"]["MR"], 1);
    let hit = &body["hits"][0];
    assert_eq!(
        hit["dicomweb_url"],
        "https://pacs.example.org/dicomweb/studies/1.2.3.4"
    );
    assert_eq!(
        hit["fhir_url"],
        "https://pacs.example.org/fhir/ImagingStudy/1.2.3.4"
    );
    assert_eq!(hit["patient_name"], "Kowalski^Jan");
}

#[tokio::test]
async fn test_bad_parameters_are_problem_json_naming_the_parameter() {
    for (query, parameter) in [
        ("limit=500", "limit"),
        ("offset=x", "offset"),
        ("date=2024-13", "date"),
        ("sort=size", "sort"),
        ("q=%22unclosed+AND+(", "q"),
        ("colour=red", "colour"),
    ] {
        let (status, content_type, body) = get(&format!("/search?{query}")).await;
        assert_eq!(status, 400, "{query}: {body}");
        assert_eq!(content_type, "application/problem+json");
        assert!(
            body["detail"].as_str().expect("detail").contains(parameter),
            "{query}: {body}"
        );
    }
}
