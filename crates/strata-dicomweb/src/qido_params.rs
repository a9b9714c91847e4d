//! Parsing of QIDO-RS query parameters (PS3.18 §8.3.4) into a catalog query.

use strata_catalog::{CatalogQuery, MatchKey, Matcher, QueryLevel};
use strata_types::validate_uid;

use crate::Problem;

/// How values of a matching key are parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ValueKind {
    Text,
    PersonName,
    Uid,
    Date,
    Time,
    Integer,
}

/// A matching key: its tag (or sequence path), keyword, catalog key, value kind and the
/// highest level it belongs to.
struct KeySpec {
    tags: &'static [u32],
    keyword: &'static str,
    key: MatchKey,
    kind: ValueKind,
    level: QueryLevel,
}

const fn spec(
    tags: &'static [u32],
    keyword: &'static str,
    key: MatchKey,
    kind: ValueKind,
    level: QueryLevel,
) -> KeySpec {
    KeySpec {
        tags,
        keyword,
        key,
        kind,
        level,
    }
}

use QueryLevel::{Instance, Series, Study};
use ValueKind::{Date, Integer, PersonName, Text, Time, Uid};

/// Every key QIDO-RS matches on (PS3.18 Table 10.6.1-5 plus common optional keys).
const KEYS: &[KeySpec] = &[
    spec(
        &[0x0010_0020],
        "PatientID",
        MatchKey::PatientId,
        Text,
        Study,
    ),
    spec(
        &[0x0010_0021],
        "IssuerOfPatientID",
        MatchKey::IssuerOfPatientId,
        Text,
        Study,
    ),
    spec(
        &[0x0010_0010],
        "PatientName",
        MatchKey::PatientName,
        PersonName,
        Study,
    ),
    spec(
        &[0x0010_0030],
        "PatientBirthDate",
        MatchKey::PatientBirthDate,
        Date,
        Study,
    ),
    spec(
        &[0x0010_0040],
        "PatientSex",
        MatchKey::PatientSex,
        Text,
        Study,
    ),
    spec(
        &[0x0020_000D],
        "StudyInstanceUID",
        MatchKey::StudyInstanceUid,
        Uid,
        Study,
    ),
    spec(
        &[0x0008_0020],
        "StudyDate",
        MatchKey::StudyDate,
        Date,
        Study,
    ),
    spec(
        &[0x0008_0030],
        "StudyTime",
        MatchKey::StudyTime,
        Time,
        Study,
    ),
    spec(
        &[0x0008_0050],
        "AccessionNumber",
        MatchKey::AccessionNumber,
        Text,
        Study,
    ),
    spec(
        &[0x0008_0090],
        "ReferringPhysicianName",
        MatchKey::ReferringPhysicianName,
        PersonName,
        Study,
    ),
    spec(&[0x0020_0010], "StudyID", MatchKey::StudyId, Text, Study),
    spec(
        &[0x0008_1030],
        "StudyDescription",
        MatchKey::StudyDescription,
        Text,
        Study,
    ),
    spec(
        &[0x0008_0061],
        "ModalitiesInStudy",
        MatchKey::ModalitiesInStudy,
        Text,
        Study,
    ),
    spec(
        &[0x0020_000E],
        "SeriesInstanceUID",
        MatchKey::SeriesInstanceUid,
        Uid,
        Series,
    ),
    spec(&[0x0008_0060], "Modality", MatchKey::Modality, Text, Series),
    spec(
        &[0x0020_0011],
        "SeriesNumber",
        MatchKey::SeriesNumber,
        Integer,
        Series,
    ),
    spec(
        &[0x0008_103E],
        "SeriesDescription",
        MatchKey::SeriesDescription,
        Text,
        Series,
    ),
    spec(
        &[0x0040_0244],
        "PerformedProcedureStepStartDate",
        MatchKey::PerformedProcedureStepStartDate,
        Date,
        Series,
    ),
    spec(
        &[0x0040_0245],
        "PerformedProcedureStepStartTime",
        MatchKey::PerformedProcedureStepStartTime,
        Time,
        Series,
    ),
    spec(
        &[0x0040_0275, 0x0040_0009],
        "RequestAttributeSequence.ScheduledProcedureStepID",
        MatchKey::ScheduledProcedureStepId,
        Text,
        Series,
    ),
    spec(
        &[0x0040_0275, 0x0040_1001],
        "RequestAttributeSequence.RequestedProcedureID",
        MatchKey::RequestedProcedureId,
        Text,
        Series,
    ),
    spec(
        &[0x0008_0018],
        "SOPInstanceUID",
        MatchKey::SopInstanceUid,
        Uid,
        Instance,
    ),
    spec(
        &[0x0008_0016],
        "SOPClassUID",
        MatchKey::SopClassUid,
        Uid,
        Instance,
    ),
    spec(
        &[0x0020_0013],
        "InstanceNumber",
        MatchKey::InstanceNumber,
        Integer,
        Instance,
    ),
];

/// What a QIDO-RS request asks for, beyond the catalog query.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct QidoRequest {
    /// Extra attributes to return (`includefield`), as 8-digit hex tags.
    pub include_tags: Vec<String>,
    /// `includefield=all`.
    pub include_all: bool,
    /// Texts for the `Warning` response header.
    pub warnings: Vec<String>,
    /// `fuzzymatching=true`: person names match fuzzily.
    pub fuzzy_matching: bool,
}

fn level_rank(level: QueryLevel) -> u8 {
    match level {
        Study => 0,
        Series => 1,
        Instance => 2,
    }
}

/// Parses the raw query string of a QIDO-RS request at `level`. Percent-encoding and `+` are
/// decoded before matching. Errors name the offending parameter.
pub(crate) fn parse_query(
    raw_query: Option<&str>,
    level: QueryLevel,
    default_limit: u64,
) -> Result<(CatalogQuery, QidoRequest), Problem> {
    let mut query = CatalogQuery {
        level,
        study_scope: None,
        series_scope: None,
        filters: Vec::new(),
        limit: Some(default_limit),
        offset: 0,
        with_metadata: false,
    };
    let mut request = QidoRequest::default();
    let mut unsupported = Vec::new();
    for (name, value) in url::form_urlencoded::parse(raw_query.unwrap_or_default().as_bytes()) {
        let name = name.trim();
        let value = value.trim();
        match name {
            "limit" => {
                let limit: u64 = value.parse().map_err(|_| {
                    Problem::bad_request(format!(
                        "parameter `limit`: `{value}` is not a non-negative integer"
                    ))
                })?;
                query.limit = Some(limit.min(default_limit));
            }
            "offset" => {
                query.offset = value.parse().map_err(|_| {
                    Problem::bad_request(format!(
                        "parameter `offset`: `{value}` is not a non-negative integer"
                    ))
                })?;
            }
            "fuzzymatching" => match value {
                "false" => request.fuzzy_matching = false,
                "true" => request.fuzzy_matching = true,
                _ => {
                    return Err(Problem::bad_request(format!(
                        "parameter `fuzzymatching`: `{value}` is neither true nor false"
                    )));
                }
            },
            "includefield" => {
                for field in value
                    .split(',')
                    .map(str::trim)
                    .filter(|field| !field.is_empty())
                {
                    if field == "all" {
                        request.include_all = true;
                    } else {
                        let tag = resolve_tag_path(field).ok_or_else(|| {
                            Problem::bad_request(format!(
                                "parameter `includefield`: unknown attribute `{field}`"
                            ))
                        })?;
                        request.include_tags.push(tag);
                    }
                }
            }
            _ => {
                let spec = find_key(name).ok_or_else(|| {
                    Problem::bad_request(format!("unknown query parameter or attribute `{name}`"))
                })?;
                if spec.is_none() {
                    // A valid DICOM attribute that is not a matching key: returned, not matched.
                    unsupported.push(name.to_owned());
                    if let Some(tag) = resolve_tag_path(name) {
                        request.include_tags.push(tag);
                    }
                    continue;
                }
                let spec = spec.expect("checked above");
                if level_rank(spec.level) > level_rank(level) {
                    unsupported.push(name.to_owned());
                    continue;
                }
                if let Some(matcher) = parse_matcher(name, value, spec.kind)? {
                    query.filters.push((spec.key, matcher));
                }
            }
        }
    }
    if !unsupported.is_empty() {
        request.warnings.push(format!(
            "299 strata \"The following attributes are not supported for matching at this level: {}\"",
            unsupported.join(", ")
        ));
    }
    if request.fuzzy_matching {
        // Person names match word by word, case-, accent- and order-insensitively, each query
        // word a prefix of a name word (docs/dicomweb.md, "Fuzzy matching").
        for (key, _) in &mut query.filters {
            *key = match *key {
                MatchKey::PatientName => MatchKey::PatientNameFuzzy,
                MatchKey::ReferringPhysicianName => MatchKey::ReferringPhysicianNameFuzzy,
                other => other,
            };
        }
    }
    query.with_metadata = request.include_all || !request.include_tags.is_empty();
    Ok((query, request))
}

/// Finds a key by keyword, hex tag or dotted sequence path. `Ok(None)`: a known attribute that
/// is not a matching key. `None`: not an attribute at all.
fn find_key(name: &str) -> Option<Option<&'static KeySpec>> {
    if let Some(spec) = KEYS.iter().find(|spec| spec.keyword == name) {
        return Some(Some(spec));
    }
    let path: Option<Vec<u32>> = name
        .split('.')
        .map(|part| {
            strata_dicom::lookup_tag(part)
                .map(|(group, element)| (u32::from(group) << 16) | u32::from(element))
        })
        .collect();
    let path = path?;
    Some(KEYS.iter().find(|spec| spec.tags == path.as_slice()))
}

/// Resolves an attribute name or dotted path to the hex tag of its first element.
fn resolve_tag_path(name: &str) -> Option<String> {
    let first = name.split('.').next()?;
    let (group, element) = strata_dicom::lookup_tag(first)?;
    Some(format!("{group:04X}{element:04X}"))
}

fn parse_matcher(name: &str, value: &str, kind: ValueKind) -> Result<Option<Matcher>, Problem> {
    if value.is_empty() || value == "*" {
        // Universal matching.
        return Ok(None);
    }
    let bad =
        |reason: &str| Problem::bad_request(format!("parameter `{name}`: `{value}` {reason}"));
    match kind {
        ValueKind::Uid => {
            let uids: Vec<String> = value
                .split([',', '\\'])
                .map(str::trim)
                .filter(|uid| !uid.is_empty())
                .map(str::to_owned)
                .collect();
            for uid in &uids {
                validate_uid(uid)
                    .map_err(|error| bad(&format!("holds an invalid UID: {error}")))?;
            }
            Ok(Some(if uids.len() == 1 {
                Matcher::Single(uids[0].clone())
            } else {
                Matcher::List(uids)
            }))
        }
        ValueKind::Date | ValueKind::Time => {
            let valid = |part: &str| match kind {
                ValueKind::Date => {
                    part.len() == 8 && part.bytes().all(|byte| byte.is_ascii_digit())
                }
                _ => {
                    !part.is_empty()
                        && part.len() <= 16
                        && part
                            .bytes()
                            .all(|byte| byte.is_ascii_digit() || byte == b'.' || byte == b':')
                }
            };
            let normalize = |part: &str| part.replace(':', "");
            let what = if kind == ValueKind::Date {
                "is not a date (YYYYMMDD) or date range"
            } else {
                "is not a time (HHMMSS) or time range"
            };
            if let Some((from, to)) = value.split_once('-') {
                let (from, to) = (from.trim(), to.trim());
                if (from.is_empty() && to.is_empty())
                    || (!from.is_empty() && !valid(from))
                    || (!to.is_empty() && !valid(to))
                {
                    return Err(bad(what));
                }
                if !from.is_empty() && !to.is_empty() && kind == ValueKind::Date && from > to {
                    return Err(bad("is a range whose start is after its end"));
                }
                Ok(Some(Matcher::Range {
                    from: (!from.is_empty()).then(|| normalize(from)),
                    to: (!to.is_empty()).then(|| normalize(to)),
                }))
            } else if valid(value) {
                Ok(Some(Matcher::Single(normalize(value))))
            } else {
                Err(bad(what))
            }
        }
        ValueKind::Integer => {
            let values: Vec<String> = value
                .split([',', '\\'])
                .map(|part| part.trim().to_owned())
                .collect();
            for number in &values {
                number
                    .parse::<i64>()
                    .map_err(|_| bad("is not an integer"))?;
            }
            Ok(Some(if values.len() == 1 {
                Matcher::Single(values[0].clone())
            } else {
                Matcher::List(values)
            }))
        }
        ValueKind::Text | ValueKind::PersonName => {
            if value.contains(['*', '?']) {
                Ok(Some(Matcher::Wildcard(value.to_owned())))
            } else if value.contains('\\') && kind == ValueKind::Text {
                Ok(Some(Matcher::List(
                    value.split('\\').map(str::to_owned).collect(),
                )))
            } else {
                Ok(Some(Matcher::Single(value.to_owned())))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(query: &str, level: QueryLevel) -> Result<(CatalogQuery, QidoRequest), Problem> {
        parse_query(Some(query), level, 1000)
    }

    #[test]
    fn test_percent_encoded_values_are_decoded() {
        let (query, _) = parse("PatientName=DOE%5EJ%2A&AccessionNumber=A%20B", Study).unwrap();
        assert_eq!(
            query.filters[0],
            (
                MatchKey::PatientName,
                Matcher::Wildcard("DOE^J*".to_owned())
            )
        );
        assert_eq!(
            query.filters[1],
            (MatchKey::AccessionNumber, Matcher::Single("A B".to_owned()))
        );
    }

    #[test]
    fn test_keys_by_tag_and_keyword_and_sequence_path() {
        let (query, _) = parse(
            "00100020=123&RequestAttributeSequence.ScheduledProcedureStepID=SPS1",
            Series,
        )
        .unwrap();
        assert_eq!(
            query.filters[0],
            (MatchKey::PatientId, Matcher::Single("123".to_owned()))
        );
        assert_eq!(
            query.filters[1],
            (
                MatchKey::ScheduledProcedureStepId,
                Matcher::Single("SPS1".to_owned())
            )
        );
        let (query, _) = parse("00400275.00401001=RP", Series).unwrap();
        assert_eq!(
            query.filters[0],
            (
                MatchKey::RequestedProcedureId,
                Matcher::Single("RP".to_owned())
            )
        );
    }

    #[test]
    fn test_ranges_lists_and_universal_matching() {
        let (query, _) = parse(
            "StudyDate=20200101-&StudyInstanceUID=1.2,1.3&PatientID=*&Modality=",
            Series,
        )
        .unwrap();
        assert_eq!(
            query.filters,
            vec![
                (
                    MatchKey::StudyDate,
                    Matcher::Range {
                        from: Some("20200101".to_owned()),
                        to: None
                    }
                ),
                (
                    MatchKey::StudyInstanceUid,
                    Matcher::List(vec!["1.2".to_owned(), "1.3".to_owned()])
                ),
            ]
        );
    }

    #[test]
    fn test_bad_values_name_the_parameter() {
        for (query, parameter) in [
            ("offset=-5", "offset"),
            ("limit=ten", "limit"),
            ("StudyDate=2020-01-01", "StudyDate"),
            ("StudyDate=20200201-20200101", "StudyDate"),
            ("StudyInstanceUID=abc%20def", "StudyInstanceUID"),
            ("SeriesNumber=x", "SeriesNumber"),
            ("NotAnAttribute=1", "NotAnAttribute"),
            ("includefield=Bogus", "includefield"),
            ("fuzzymatching=maybe", "fuzzymatching"),
        ] {
            let problem = parse(query, Instance).unwrap_err();
            assert_eq!(problem.status, http::StatusCode::BAD_REQUEST, "{query}");
            assert!(
                problem.detail.contains(parameter),
                "{query}: {}",
                problem.detail
            );
        }
    }

    #[test]
    fn test_lower_level_keys_warn_at_higher_levels() {
        let (query, request) = parse("SOPInstanceUID=1.2.3", Study).unwrap();
        assert!(query.filters.is_empty());
        assert!(request.warnings[0].contains("SOPInstanceUID"));
    }

    #[test]
    fn test_limit_is_capped_and_includefield_collected() {
        let (query, request) = parse(
            "limit=5000&includefield=00081030,StudyDescription&includefield=all",
            Study,
        )
        .unwrap();
        assert_eq!(query.limit, Some(1000));
        assert!(request.include_all);
        assert_eq!(
            request.include_tags,
            vec!["00081030".to_owned(), "00081030".to_owned()]
        );
        assert!(query.with_metadata);
    }
}
