//! The one catalog query behind QIDO-RS, C-FIND and FHIR search.
//!
//! See PS3.18 §8.3.4 and PS3.4 Annex C.2.2.2 for the matching rules.

use strata_types::{SeriesUid, StudyUid};

/// The level a query returns entities of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueryLevel {
    Study,
    Series,
    Instance,
}

/// The attributes a query can match on. Each is bound to one level (or to a lower level, in
/// which case a higher-level entity matches when one of its children matches, e.g.
/// `ModalitiesInStudy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MatchKey {
    // patient
    PatientId,
    IssuerOfPatientId,
    PatientName,
    PatientBirthDate,
    PatientSex,
    // study
    StudyInstanceUid,
    StudyDate,
    StudyTime,
    AccessionNumber,
    ReferringPhysicianName,
    StudyId,
    StudyDescription,
    /// Matches a study if any of its series has the modality.
    ModalitiesInStudy,
    // series
    SeriesInstanceUid,
    Modality,
    SeriesNumber,
    SeriesDescription,
    PerformedProcedureStepStartDate,
    PerformedProcedureStepStartTime,
    /// RequestAttributeSequence > ScheduledProcedureStepID (sequence matching).
    ScheduledProcedureStepId,
    /// RequestAttributeSequence > RequestedProcedureID (sequence matching).
    RequestedProcedureId,
    // instance
    SopInstanceUid,
    SopClassUid,
    InstanceNumber,
    // computed
    /// The catalog's own key of a patient ([`QueryMatch::patient_key`]); FHIR Patient ids.
    /// Matched as an integer.
    PatientKey,
    /// When the study last changed: the storage time (Unix milliseconds) of its newest
    /// instance ([`QueryMatch::last_updated_ms`]). Matched as an integer; ranges are inclusive.
    LastUpdated,
    // fuzzy person-name matching (QIDO-RS `fuzzymatching=true`)
    /// PatientName, fuzzily: every word of the value (wildcards are word breaks) must begin a
    /// word of any component of the name, compared case- and accent-insensitively and in any
    /// order (`jurgen mull` finds `Müller^Jürgen`). See [`fuzzy_name_words`].
    PatientNameFuzzy,
    /// ReferringPhysicianName, fuzzily (as [`MatchKey::PatientNameFuzzy`]).
    ReferringPhysicianNameFuzzy,
}

/// The words of a person name (or of a fuzzy query value) as fuzzy matching compares them:
/// decomposed (NFD), combining marks dropped, upper-cased, split on everything that is not a
/// letter or a digit (`^`, `=`, spaces, hyphens, wildcards). `Müller-Lüdenscheidt^Jürgen` →
/// `MULLER LUDENSCHEIDT JURGEN`; ideographs are kept as they are.
pub fn fuzzy_name_words(value: &str) -> Vec<String> {
    use unicode_normalization::UnicodeNormalization;
    let folded: String = value
        .nfd()
        .filter(|character| !unicode_normalization::char::is_combining_mark(*character))
        .collect::<String>()
        .to_uppercase();
    folded
        .split(|character: char| !character.is_alphanumeric())
        .filter(|word| !word.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The order a query returns its matches in. Every order ends with the primary key of the
/// level, so that paging never skips or repeats.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum QueryOrder {
    /// Storage order (the primary key of the level).
    #[default]
    Storage,
    /// Study Date then Study Time, oldest first; studies without a date last.
    StudyDateAscending,
    /// Study Date then Study Time, newest first; studies without a date last.
    StudyDateDescending,
}

/// How one key matches, per PS3.4 C.2.2.2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Matcher {
    /// Exact match of the whole value. Person names match case-insensitively.
    Single(String),
    /// `*` matches any run of characters, `?` any one character. Person names match
    /// case-insensitively.
    Wildcard(String),
    /// Inclusive range of dates, times or date-times; either end may be open.
    Range {
        from: Option<String>,
        to: Option<String>,
    },
    /// Any of the listed UIDs (or values).
    List(Vec<String>),
}

/// A query against the catalog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogQuery {
    pub level: QueryLevel,
    /// Restricts the search to one study (series and instance level, nested URIs).
    pub study_scope: Option<StudyUid>,
    /// Restricts the search to one series (instance level, nested URI).
    pub series_scope: Option<SeriesUid>,
    /// All must match (AND).
    pub filters: Vec<(MatchKey, Matcher)>,
    /// Maximum number of results; `None` is unlimited.
    pub limit: Option<u64>,
    pub offset: u64,
    /// Whether each match should carry `metadata_json` of one representative instance (for
    /// `includefield`).
    pub with_metadata: bool,
}

/// One matching entity with every attribute of its level and the levels above it, plus the
/// computed attributes of PS3.18 (numbers of related series and instances, modalities and SOP
/// classes in study).
#[derive(Debug, Clone, PartialEq)]
pub struct QueryMatch {
    /// The catalog's key of the patient: stable for the life of the catalog, and the same for
    /// every study of one (Patient ID, Issuer of Patient ID).
    pub patient_key: i64,
    pub patient: crate::PatientAttributes,
    pub study: crate::StudyAttributes,
    /// Present at series and instance level.
    pub series: Option<crate::SeriesAttributes>,
    /// Present at instance level.
    pub instance: Option<crate::InstanceAttributes>,
    /// NumberOfStudyRelatedSeries.
    pub num_study_series: i64,
    /// NumberOfStudyRelatedInstances.
    pub num_study_instances: i64,
    /// NumberOfSeriesRelatedInstances (series and instance level).
    pub num_series_instances: Option<i64>,
    /// ModalitiesInStudy, distinct, sorted.
    pub modalities_in_study: Vec<String>,
    /// SOPClassesInStudy, distinct, sorted.
    pub sop_classes_in_study: Vec<String>,
    /// DICOM JSON of one instance of the entity, when `with_metadata` was asked.
    pub metadata_json: Option<String>,
    /// Storage time (Unix milliseconds) of the newest instance of the study: when the study
    /// last changed.
    pub last_updated_ms: i64,
}
