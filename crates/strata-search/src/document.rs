//! Builds the one search document of a study from the DICOM JSON of its instances.
//!
//! Pure functions, no I/O: the indexer feeds them what `Catalog::instance_metadata` returns.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Value representations whose values are words worth searching. Numbers (IS, DS, US, ...),
/// dates and times (filtered through dedicated fields) and UIDs are left out.
const TEXT_VRS: &[&str] = &["AE", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UT"];

/// Attributes that are text by VR but only noise for a reader: Specific Character Set and the
/// codes of code sequences (their meanings are kept).
const SKIPPED_TAGS: &[&str] = &[
    "00080005", // SpecificCharacterSet
    "00080100", // CodeValue
    "00080102", // CodingSchemeDesignator
    "00080103", // CodingSchemeVersion
    "0040A040", // ValueType (SR)
    "0040A010", // RelationshipType (SR)
];

const TAG_STUDY_DATE: &str = "00080020";
const TAG_MODALITY: &str = "00080060";
const TAG_INSTITUTION_NAME: &str = "00080080";
const TAG_STUDY_DESCRIPTION: &str = "00081030";
const TAG_SERIES_DESCRIPTION: &str = "0008103E";
const TAG_ACCESSION_NUMBER: &str = "00080050";
const TAG_PATIENT_NAME: &str = "00100010";
const TAG_PATIENT_ID: &str = "00100020";
const TAG_ISSUER_OF_PATIENT_ID: &str = "00100021";
const TAG_SOURCE_APPLICATION_ENTITY_TITLE: &str = "00020016";
const TAG_SERIES_INSTANCE_UID: &str = "0020000E";

/// What the document builder may read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DocumentSettings {
    /// Indexes the text of private tags (odd groups) too. Off by default: private tags often
    /// hold vendor noise, and sometimes identifiers a site did not expect to be searchable.
    pub include_private_tags: bool,
}

/// The search document of one study: every distinct text value of every instance, rolled up.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StudyDocument {
    pub study_instance_uid: String,
    /// Distinct text values (descriptions, codes' meanings, SR text, names, ...), in first-seen
    /// order so that the study's own description comes first in snippets.
    pub text_values: Vec<String>,
    /// Every component of every person name (patient, referring, performing, ...).
    pub person_names: Vec<String>,
    /// Study Date as `YYYYMMDD`, when valid.
    pub study_date: Option<u64>,
    pub modalities: BTreeSet<String>,
    /// Issuer of Patient ID and Source AE Title values: where the study came from.
    pub sources: BTreeSet<String>,
    pub institutions: BTreeSet<String>,
    pub summary: StudySummary,
}

/// What a search result shows of a study without reading the catalog (stored in the index).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StudySummary {
    pub patient_name: String,
    pub patient_id: String,
    pub study_description: String,
    pub accession_number: String,
    pub num_instances: u64,
    pub series: Vec<SeriesSummary>,
}

/// One series of a study, as results list them (series-level hits are rolled up per study).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeriesSummary {
    pub series_instance_uid: String,
    pub modality: String,
    pub series_description: String,
    pub num_instances: u64,
}

/// Builds the document of study `study_instance_uid` from the DICOM JSON (PS3.18 Annex F) of
/// its instances. Instances that are not valid JSON objects are skipped; returns `None` when
/// no instance is left (the study is gone).
pub fn build_study_document(
    study_instance_uid: &str,
    instances_json: &[String],
    settings: DocumentSettings,
) -> Option<StudyDocument> {
    let mut rollup = StudyRollup::new(study_instance_uid, settings);
    for instance_json in instances_json {
        rollup.add_instance(instance_json);
    }
    rollup.document()
}

/// The document of one study being rolled up instance by instance: what
/// [`build_study_document`] folds over, kept so that instances stored later are added without
/// reading the earlier ones again. Adding the same instances in any order gives the same
/// fields; only the order of `text_values` (first seen first) follows the order of adding.
#[derive(Debug, Clone)]
pub struct StudyRollup {
    settings: DocumentSettings,
    document: StudyDocument,
    num_instances: u64,
    seen_text: BTreeSet<String>,
    seen_names: BTreeSet<String>,
    series: BTreeMap<String, SeriesSummary>,
}

impl StudyRollup {
    /// An empty rollup of study `study_instance_uid`.
    pub fn new(study_instance_uid: &str, settings: DocumentSettings) -> Self {
        Self {
            settings,
            document: StudyDocument {
                study_instance_uid: study_instance_uid.to_owned(),
                ..StudyDocument::default()
            },
            num_instances: 0,
            seen_text: BTreeSet::new(),
            seen_names: BTreeSet::new(),
            series: BTreeMap::new(),
        }
    }

    /// Adds one instance's DICOM JSON; returns `false` (and adds nothing) when it is not a
    /// JSON object.
    pub fn add_instance(&mut self, instance_json: &str) -> bool {
        let Ok(Value::Object(dataset)) = serde_json::from_str::<Value>(instance_json) else {
            return false;
        };
        self.num_instances += 1;
        self.add_dataset(&dataset);
        true
    }

    /// The number of instances added.
    pub fn num_instances(&self) -> u64 {
        self.num_instances
    }

    /// The document of the instances added so far; `None` when there are none.
    pub fn document(&self) -> Option<StudyDocument> {
        if self.num_instances == 0 {
            return None;
        }
        let mut document = self.document.clone();
        document.summary.num_instances = self.num_instances;
        document.summary.series = self.series.values().cloned().collect();
        Some(document)
    }
}

type Dataset = serde_json::Map<String, Value>;

impl StudyRollup {
    fn add_dataset(&mut self, dataset: &Dataset) {
        let summary = &mut self.document.summary;
        fill_if_empty(
            &mut summary.study_description,
            dataset,
            TAG_STUDY_DESCRIPTION,
        );
        fill_if_empty(&mut summary.accession_number, dataset, TAG_ACCESSION_NUMBER);
        fill_if_empty(&mut summary.patient_id, dataset, TAG_PATIENT_ID);
        if summary.patient_name.is_empty()
            && let Some(name) = person_name_values(dataset, TAG_PATIENT_NAME)
                .into_iter()
                .next()
        {
            summary.patient_name = name;
        }
        if self.document.study_date.is_none() {
            self.document.study_date = first_string(dataset, TAG_STUDY_DATE)
                .filter(|date| date.len() == 8 && date.bytes().all(|byte| byte.is_ascii_digit()))
                .and_then(|date| date.parse().ok());
        }
        let modality = first_string(dataset, TAG_MODALITY).unwrap_or_default();
        if !modality.is_empty() {
            self.document.modalities.insert(modality.to_uppercase());
        }
        for tag in [
            TAG_ISSUER_OF_PATIENT_ID,
            TAG_SOURCE_APPLICATION_ENTITY_TITLE,
        ] {
            if let Some(source) = first_string(dataset, tag) {
                self.document.sources.insert(source);
            }
        }
        if let Some(institution) = first_string(dataset, TAG_INSTITUTION_NAME) {
            self.document.institutions.insert(institution);
        }
        if let Some(series_uid) = first_string(dataset, TAG_SERIES_INSTANCE_UID) {
            let series = self
                .series
                .entry(series_uid.clone())
                .or_insert_with(|| SeriesSummary {
                    series_instance_uid: series_uid,
                    modality: modality.clone(),
                    series_description: first_string(dataset, TAG_SERIES_DESCRIPTION)
                        .unwrap_or_default(),
                    num_instances: 0,
                });
            series.num_instances += 1;
        }
        self.walk(dataset);
    }

    /// Adds every text value of `dataset`, recursing into sequence items (SR content trees,
    /// code sequences, request attributes).
    fn walk(&mut self, dataset: &Dataset) {
        for (tag, element) in dataset {
            if !self.settings.include_private_tags && is_private(tag) {
                continue;
            }
            if SKIPPED_TAGS
                .iter()
                .any(|skipped| skipped.eq_ignore_ascii_case(tag))
            {
                continue;
            }
            let Some(vr) = element.get("vr").and_then(Value::as_str) else {
                continue;
            };
            let Some(values) = element.get("Value").and_then(Value::as_array) else {
                continue;
            };
            match vr {
                "SQ" => {
                    for item in values {
                        if let Value::Object(item) = item {
                            self.walk(item);
                        }
                    }
                }
                "PN" => {
                    for value in values {
                        for group in person_name_groups(value) {
                            self.add_person_name(&group);
                        }
                    }
                }
                _ if TEXT_VRS.contains(&vr) => {
                    for value in values {
                        if let Some(text) = value.as_str() {
                            self.add_text(text);
                        }
                    }
                }
                _ => {}
            }
        }
    }

    fn add_text(&mut self, text: &str) {
        let text = text.trim();
        if text.is_empty() || self.seen_text.contains(text) {
            return;
        }
        self.seen_text.insert(text.to_owned());
        self.document.text_values.push(text.to_owned());
    }

    /// Adds a person name group (`Family^Given^Middle^Prefix^Suffix`) to the name field, one
    /// component per value, and the readable form to the text.
    fn add_person_name(&mut self, group: &str) {
        let readable = group
            .split('^')
            .map(str::trim)
            .filter(|component| !component.is_empty())
            .collect::<Vec<_>>()
            .join(" ");
        for component in group.split('^').map(str::trim) {
            if !component.is_empty() && self.seen_names.insert(component.to_owned()) {
                self.document.person_names.push(component.to_owned());
            }
        }
        self.add_text(&readable);
    }
}

/// Returns whether a `ggggeeee` tag is private (odd group).
fn is_private(tag: &str) -> bool {
    tag.get(3..4)
        .and_then(|digit| u8::from_str_radix(digit, 16).ok())
        .is_some_and(|digit| digit % 2 == 1)
}

/// Returns the Alphabetic, Ideographic and Phonetic groups of a PN value.
fn person_name_groups(value: &Value) -> Vec<String> {
    match value {
        Value::Object(groups) => ["Alphabetic", "Ideographic", "Phonetic"]
            .iter()
            .filter_map(|group| groups.get(*group).and_then(Value::as_str))
            .filter(|group| !group.trim().is_empty())
            .map(str::to_owned)
            .collect(),
        Value::String(text) => text.split('=').map(str::to_owned).collect(),
        _ => Vec::new(),
    }
}

fn person_name_values(dataset: &Dataset, tag: &str) -> Vec<String> {
    dataset
        .get(tag)
        .and_then(|element| element.get("Value"))
        .and_then(Value::as_array)
        .map(|values| values.iter().flat_map(person_name_groups).collect())
        .unwrap_or_default()
}

fn first_string(dataset: &Dataset, tag: &str) -> Option<String> {
    dataset
        .get(tag)
        .and_then(|element| element.get("Value"))
        .and_then(Value::as_array)
        .and_then(|values| values.first())
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|text| !text.is_empty())
        .map(str::to_owned)
}

fn fill_if_empty(slot: &mut String, dataset: &Dataset, tag: &str) {
    if slot.is_empty()
        && let Some(value) = first_string(dataset, tag)
    {
        *slot = value;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SR_INSTANCE: &str = r#"{
        "00080020": {"vr": "DA", "Value": ["20240315"]},
        "00080060": {"vr": "CS", "Value": ["SR"]},
        "00080080": {"vr": "LO", "Value": ["Hôpital Nord"]},
        "00080005": {"vr": "CS", "Value": ["ISO_IR 192"]},
        "00081030": {"vr": "LO", "Value": ["Chest report"]},
        "00100010": {"vr": "PN", "Value": [{"Alphabetic": "Buc^Jérôme", "Ideographic": "山田^太郎"}]},
        "00100021": {"vr": "LO", "Value": ["HOSP-A"]},
        "0020000E": {"vr": "UI", "Value": ["1.2.3.4"]},
        "00091001": {"vr": "LO", "Value": ["vendor secret"]},
        "00280010": {"vr": "US", "Value": [512]},
        "0040A730": {"vr": "SQ", "Value": [
            {"0040A160": {"vr": "UT", "Value": ["Small nodule in the left lower lobe"]},
             "0040A043": {"vr": "SQ", "Value": [{"00080100": {"vr": "SH", "Value": ["121071"]},
                                                  "00080104": {"vr": "LO", "Value": ["Finding"]}}]}}
        ]}
    }"#;

    #[test]
    fn test_document_holds_text_names_codes_and_sr_content() {
        let document = build_study_document(
            "1.2",
            &[SR_INSTANCE.to_owned()],
            DocumentSettings::default(),
        )
        .expect("one instance");
        assert!(
            document
                .text_values
                .contains(&"Small nodule in the left lower lobe".to_owned())
        );
        assert!(document.text_values.contains(&"Finding".to_owned()));
        assert!(!document.text_values.contains(&"121071".to_owned()));
        assert!(!document.text_values.contains(&"ISO_IR 192".to_owned()));
        assert!(
            !document
                .text_values
                .iter()
                .any(|text| text.contains("vendor"))
        );
        assert_eq!(document.person_names, ["Buc", "Jérôme", "山田", "太郎"]);
        assert_eq!(document.study_date, Some(20240315));
        assert!(document.modalities.contains("SR"));
        assert!(document.sources.contains("HOSP-A"));
        assert!(document.institutions.contains("Hôpital Nord"));
        assert_eq!(document.summary.patient_name, "Buc^Jérôme");
        assert_eq!(document.summary.series.len(), 1);
    }

    #[test]
    fn test_private_tags_are_opt_in() {
        let settings = DocumentSettings {
            include_private_tags: true,
        };
        let document =
            build_study_document("1.2", &[SR_INSTANCE.to_owned()], settings).expect("instance");
        assert!(document.text_values.contains(&"vendor secret".to_owned()));
    }

    #[test]
    fn test_instances_roll_up_without_repeating_values() {
        let instances = vec![SR_INSTANCE.to_owned(), SR_INSTANCE.to_owned()];
        let document = build_study_document("1.2", &instances, DocumentSettings::default())
            .expect("two instances");
        assert_eq!(document.summary.num_instances, 2);
        assert_eq!(document.summary.series[0].num_instances, 2);
        let num_findings = document
            .text_values
            .iter()
            .filter(|text| *text == "Finding")
            .count();
        assert_eq!(num_findings, 1);
    }

    #[test]
    fn test_no_instances_means_no_document() {
        assert!(build_study_document("1.2", &[], DocumentSettings::default()).is_none());
    }
}
