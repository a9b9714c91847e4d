//! Latency of an ImagingStudy search by patient on a catalog of 10,000 studies (issue 6).
//!
//! Ignored by default (filling the catalog takes a while):
//! `cargo test -p strata-fhir --test latency -- --ignored --nocapture`.
//! The figure is recorded in docs/fhir.md.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use strata_catalog::conformance::synthetic_record;
use strata_catalog::{Catalog, SqlCatalog};
use strata_fhir::{FhirSettings, FhirState, router};
use tower::ServiceExt;

const NUM_STUDIES: u32 = 10_000;
/// Ten studies per patient.
const NUM_PATIENTS: u32 = 1_000;
const NUM_SEARCHES: usize = 200;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "fills a 10,000-study catalog; run with --ignored to measure"]
async fn test_search_by_patient_latency_on_10000_studies() {
    let directory = tempfile::tempdir().expect("temporary directory");
    let uri = format!("sqlite://{}/catalog.db", directory.path().display());
    let catalog = SqlCatalog::connect(&uri, 4).await.expect("catalog opens");
    let fill_started = Instant::now();
    for study in 1..=NUM_STUDIES {
        let mut record = synthetic_record(study, 1, 1);
        let patient_number = study % NUM_PATIENTS + 1;
        record.patient = synthetic_record(patient_number, 1, 1).patient;
        catalog.store_instance(&record).await.expect("stored");
    }
    eprintln!(
        "filled {NUM_STUDIES} studies ({NUM_PATIENTS} patients) in {:.1} s",
        fill_started.elapsed().as_secs_f64()
    );
    let state = FhirState {
        catalog: Arc::new(catalog),
        settings: Arc::new(FhirSettings::default()),
    };
    let app = router(state);

    for (label, uri_of) in [
        (
            "patient=Patient/{key}",
            Box::new(|number: usize| {
                format!("/ImagingStudy?patient=Patient/{}", number % 1_000 + 1)
            }) as Box<dyn Fn(usize) -> String>,
        ),
        (
            "patient.identifier=SYN-{n}",
            Box::new(|number: usize| {
                format!(
                    "/ImagingStudy?patient.identifier=SYN-{:04}",
                    number % 1_000 + 1
                )
            }),
        ),
    ] {
        let mut latencies: Vec<Duration> = Vec::with_capacity(NUM_SEARCHES);
        for number in 0..NUM_SEARCHES {
            let request = Request::get(uri_of(number))
                .body(Body::empty())
                .expect("request");
            let started = Instant::now();
            let response = app.clone().oneshot(request).await.expect("infallible");
            assert_eq!(response.status(), StatusCode::OK);
            let body = response
                .into_body()
                .collect()
                .await
                .expect("body")
                .to_bytes();
            latencies.push(started.elapsed());
            let bundle: serde_json::Value = serde_json::from_slice(&body).expect("json");
            assert_eq!(bundle["total"], 10, "ten studies per patient");
        }
        latencies.sort();
        let percentile = |fraction: f64| {
            latencies[((latencies.len() as f64 * fraction) as usize).min(latencies.len() - 1)]
        };
        eprintln!(
            "ImagingStudy?{label} on {NUM_STUDIES} studies, {NUM_SEARCHES} searches: \
             p50 {:.2} ms, p95 {:.2} ms, max {:.2} ms",
            percentile(0.5).as_secs_f64() * 1e3,
            percentile(0.95).as_secs_f64() * 1e3,
            latencies[latencies.len() - 1].as_secs_f64() * 1e3,
        );
    }
}
