//! Shared by the trace tests: an in-process OTLP/HTTP receiver, an instance with planted
//! patient identifiers, the real archive services, and span helpers.

#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_object::InMemDicomObject;
use dicom_object::meta::FileMetaTableBuilder;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use strata_catalog::Catalog;
use strata_ingest::{IngestPipeline, IngestSettings};
use strata_storage::BlobStore;

pub const PLANTED_PATIENT_NAME: &str = "PLANTEDFAMILY^PLANTEDGIVEN";
pub const PLANTED_PATIENT_ID: &str = "PLANTED-ID-4711";
pub const PLANTED_BIRTH_DATE: &str = "19121224";
pub const STUDY_UID: &str = "2.25.4711000000000000000000000000001";
pub const SERIES_UID: &str = "2.25.4711000000000000000000000000001.1";
pub const SOP_INSTANCE_UID: &str = "2.25.4711000000000000000000000000001.1.1";

#[derive(Clone, Default)]
pub struct Received {
    pub spans: Arc<Mutex<Vec<Span>>>,
    pub num_metric_posts: Arc<Mutex<u32>>,
}

async fn receive_traces(State(received): State<Received>, body: Bytes) -> http::StatusCode {
    let Ok(request) = ExportTraceServiceRequest::decode(body) else {
        return http::StatusCode::BAD_REQUEST;
    };
    let mut spans = received.spans.lock().unwrap();
    for resource_spans in request.resource_spans {
        for scope_spans in resource_spans.scope_spans {
            spans.extend(scope_spans.spans);
        }
    }
    http::StatusCode::OK
}

async fn receive_metrics(State(received): State<Received>) -> http::StatusCode {
    *received.num_metric_posts.lock().unwrap() += 1;
    http::StatusCode::OK
}

/// Starts a minimal OTLP/HTTP (protobuf) receiver on a free loopback port.
pub async fn start_otlp_receiver() -> (String, Received) {
    let received = Received::default();
    let app = Router::new()
        .route("/v1/traces", post(receive_traces))
        .route("/v1/metrics", post(receive_metrics))
        .with_state(received.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{address}"), received)
}

/// A small CT instance with a planted patient name, ID and birth date.
pub fn planted_instance() -> Vec<u8> {
    let text = |tag, vr, value: &str| DataElement::new(tag, vr, PrimitiveValue::from(value));
    let mut object = InMemDicomObject::from_element_iter([
        text(tags::SPECIFIC_CHARACTER_SET, VR::CS, "ISO_IR 192"),
        text(tags::SOP_CLASS_UID, VR::UI, uids::CT_IMAGE_STORAGE),
        text(tags::SOP_INSTANCE_UID, VR::UI, SOP_INSTANCE_UID),
        text(tags::STUDY_DATE, VR::DA, "20240101"),
        text(tags::MODALITY, VR::CS, "CT"),
        text(tags::PATIENT_NAME, VR::PN, PLANTED_PATIENT_NAME),
        text(tags::PATIENT_ID, VR::LO, PLANTED_PATIENT_ID),
        text(tags::PATIENT_BIRTH_DATE, VR::DA, PLANTED_BIRTH_DATE),
        text(tags::STUDY_INSTANCE_UID, VR::UI, STUDY_UID),
        text(tags::SERIES_INSTANCE_UID, VR::UI, SERIES_UID),
        text(tags::SERIES_NUMBER, VR::IS, "1"),
        text(tags::INSTANCE_NUMBER, VR::IS, "1"),
        text(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "MONOCHROME2"),
        DataElement::new(tags::SAMPLES_PER_PIXEL, VR::US, PrimitiveValue::from(1_u16)),
        DataElement::new(tags::ROWS, VR::US, PrimitiveValue::from(4_u16)),
        DataElement::new(tags::COLUMNS, VR::US, PrimitiveValue::from(4_u16)),
        DataElement::new(tags::BITS_ALLOCATED, VR::US, PrimitiveValue::from(16_u16)),
        DataElement::new(tags::BITS_STORED, VR::US, PrimitiveValue::from(12_u16)),
        DataElement::new(tags::HIGH_BIT, VR::US, PrimitiveValue::from(11_u16)),
        DataElement::new(
            tags::PIXEL_REPRESENTATION,
            VR::US,
            PrimitiveValue::from(0_u16),
        ),
    ]);
    object.put(DataElement::new(
        tags::PIXEL_DATA,
        VR::OW,
        PrimitiveValue::from(vec![7_u8; 32]),
    ));
    let file = object
        .with_meta(
            FileMetaTableBuilder::new()
                .transfer_syntax(uids::EXPLICIT_VR_LITTLE_ENDIAN)
                .media_storage_sop_class_uid(uids::CT_IMAGE_STORAGE)
                .media_storage_sop_instance_uid(SOP_INSTANCE_UID),
        )
        .unwrap();
    let mut bytes = Vec::new();
    file.write_all(&mut bytes).unwrap();
    bytes
}

/// The catalog (SQLite), object store (local directory) and ingest pipeline of an embedded
/// archive under `data_dir`.
pub async fn archive_services(
    data_dir: &std::path::Path,
) -> (Arc<dyn Catalog>, Arc<dyn BlobStore>, IngestPipeline) {
    let catalog = strata_catalog::open_catalog(
        &format!("sqlite://{}", data_dir.join("catalog.db").display()),
        4,
    )
    .await
    .unwrap();
    let store: Arc<dyn BlobStore> =
        Arc::new(strata_storage::ObjectStoreBlobStore::local(data_dir.join("objects")).unwrap());
    let spool_dir = data_dir.join("spool");
    std::fs::create_dir_all(&spool_dir).unwrap();
    let pipeline = IngestPipeline::new(
        catalog.clone(),
        store.clone(),
        IngestSettings {
            spool_dir,
            max_object_bytes: 64 * 1024 * 1024,
        },
    );
    (catalog, store, pipeline)
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

pub fn attribute<'span>(span: &'span Span, key: &str) -> Option<&'span any_value::Value> {
    span.attributes
        .iter()
        .find(|attribute| attribute.key == key)
        .and_then(|attribute| attribute.value.as_ref())
        .and_then(|value| value.value.as_ref())
}

pub fn string_attribute(span: &Span, key: &str) -> Option<String> {
    match attribute(span, key)? {
        any_value::Value::StringValue(text) => Some(text.clone()),
        _ => None,
    }
}

pub fn value_text(value: &AnyValue) -> String {
    match &value.value {
        Some(any_value::Value::StringValue(text)) => text.clone(),
        Some(any_value::Value::BytesValue(bytes)) => String::from_utf8_lossy(bytes).into_owned(),
        Some(any_value::Value::ArrayValue(array)) => array
            .values
            .iter()
            .map(value_text)
            .collect::<Vec<_>>()
            .join(" "),
        Some(any_value::Value::KvlistValue(list)) => list
            .values
            .iter()
            .map(|pair| {
                format!(
                    "{}={}",
                    pair.key,
                    pair.value.as_ref().map(value_text).unwrap_or_default()
                )
            })
            .collect::<Vec<_>>()
            .join(" "),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

/// Every key and value of a span, its events and links, as text.
pub fn all_attribute_texts(span: &Span) -> Vec<String> {
    let pair_text = |pair: &KeyValue| {
        format!(
            "{}={}",
            pair.key,
            pair.value.as_ref().map(value_text).unwrap_or_default()
        )
    };
    let mut texts = vec![span.name.clone()];
    texts.extend(span.attributes.iter().map(pair_text));
    for event in &span.events {
        texts.push(event.name.clone());
        texts.extend(event.attributes.iter().map(pair_text));
    }
    if let Some(status) = &span.status {
        texts.push(status.message.clone());
    }
    texts
}

/// Returns whether `span` has `ancestor` among its parents in `spans`.
pub fn descends_from(span: &Span, ancestor: &Span, spans: &[Span]) -> bool {
    let parents: HashMap<&[u8], &[u8]> = spans
        .iter()
        .map(|span| (span.span_id.as_slice(), span.parent_span_id.as_slice()))
        .collect();
    let mut current = span.parent_span_id.as_slice();
    for _ in 0..32 {
        if current == ancestor.span_id.as_slice() {
            return true;
        }
        match parents.get(current) {
            Some(parent) => current = parent,
            None => return false,
        }
    }
    false
}

/// Asserts that no span name, attribute, event or status message holds a planted patient
/// identifier.
pub fn assert_no_patient_identifiers(spans: &[Span]) {
    let planted_family = PLANTED_PATIENT_NAME.split('^').next().unwrap();
    for span in spans {
        for text in all_attribute_texts(span) {
            for planted in [planted_family, PLANTED_PATIENT_ID, PLANTED_BIRTH_DATE] {
                assert!(
                    !text.contains(planted),
                    "span `{}` carries a patient identifier: {text}",
                    span.name
                );
            }
        }
    }
}

/// Flushes the exporter until spans named `expected` have all arrived (a span is exported
/// when its last handle closes, which may be just after the response), or 10 s passed.
pub async fn flushed_spans(
    guard: &strata_telemetry::TelemetryGuard,
    received: &Received,
    expected: &[&str],
) -> Vec<Span> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        tokio::task::block_in_place(|| guard.flush());
        let spans = received.spans.lock().unwrap().clone();
        let complete = expected
            .iter()
            .all(|name| spans.iter().any(|span| span.name == *name));
        if complete || std::time::Instant::now() > deadline {
            return spans;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
