//! The privacy rule of issue 7: no patient identifier in any telemetry.
//!
//! The rule is kept at the source (spans carry route templates and UIDs, never PatientName,
//! PatientID or PatientBirthDate); this module is the second line: fields and attributes whose
//! *name* designates a patient identifier are dropped before export and redacted in logs.

use std::time::Duration;

use opentelemetry::Context;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{Span, SpanData, SpanProcessor};

/// Returns whether a field or attribute named `name` would carry a patient identifier
/// (`patient_name`, `PatientID`, `patient.birth_date`, `OtherPatientIDs`, …).
pub fn is_patient_identifier_field(name: &str) -> bool {
    let normalized: String = name
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|character| character.to_ascii_lowercase())
        .collect();
    [
        "patientname",
        "patientid",
        "birthdate",
        "patientbirth",
        "patientaddress",
        "patientsname",
    ]
    .iter()
    .any(|forbidden| normalized.contains(forbidden))
}

/// Drops span and span-event attributes named like patient identifiers, then hands the span
/// to the exporting processor.
#[derive(Debug)]
pub(crate) struct RedactingSpanProcessor<P> {
    inner: P,
}

impl<P> RedactingSpanProcessor<P> {
    pub(crate) fn new(inner: P) -> Self {
        Self { inner }
    }
}

impl<P: SpanProcessor> SpanProcessor for RedactingSpanProcessor<P> {
    fn on_start(&self, span: &mut Span, cx: &Context) {
        self.inner.on_start(span, cx);
    }

    fn on_end(&self, mut span: SpanData) {
        span.attributes
            .retain(|attribute| !is_patient_identifier_field(attribute.key.as_str()));
        for event in span.events.events.iter_mut() {
            event
                .attributes
                .retain(|attribute| !is_patient_identifier_field(attribute.key.as_str()));
        }
        self.inner.on_end(span);
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_patient_identifier_field_names_are_recognised() {
        for name in [
            "patient_name",
            "PatientName",
            "patient.id",
            "PatientID",
            "patient_birth_date",
            "PatientBirthDate",
            "other_patient_ids",
        ] {
            assert!(is_patient_identifier_field(name), "{name}");
        }
        for name in [
            "sop_instance_uid",
            "study_instance_uid",
            "http.route",
            "calling_ae_title",
            "object_key",
        ] {
            assert!(!is_patient_identifier_field(name), "{name}");
        }
    }
}
