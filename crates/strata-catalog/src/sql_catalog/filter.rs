//! Translates `(MatchKey, Matcher)` filters into SQL conditions (PS3.4 C.2.2.2).
//!
//! The main query of a level joins `patient p`, `study st`, and from series level `series se`,
//! and at instance level `instance i`. A key of that level or above is a condition on the joined
//! column; a key of a lower level (Modality at study level, SOP Class UID at series level, ...)
//! and the sequence keys become `EXISTS` over the children: the entity matches when one of its
//! children does.
//!
//! Matching rules, identical on both engines:
//! - Single: equality. Person names compare the Unicode-uppercased copy column with the
//!   uppercased value; every other text compares case-sensitively.
//! - Wildcard: `*` any run, `?` exactly one character. SQLite uses `GLOB` (always
//!   case-sensitive; `[` escaped as `[[]`), PostgreSQL `LIKE ... ESCAPE '!'` on "C"-collated
//!   columns (`%`, `_` and `!` escaped). Person names again go through the uppercase copies.
//! - Range: inclusive text comparison, either end open; entities with an empty value never
//!   match. For dates and times the upper bound is extended by `~` (above every digit, `.` and
//!   sign) so it includes every value that starts with it: `-1200` includes `120030` (the whole
//!   12:00 minute), and `1000-1200` includes `113000.5`. A lower bound compares as given
//!   (`100000` >= `1000`). Integer keys compare numerically.
//! - List: `IN (...)`; an empty list matches nothing.
//! - Universal matching (empty value, `*`, a range with both ends open) adds no condition.
//! - Sequence matching: the Request Attributes Sequence keys of one query must all match the
//!   same item (PS3.4 C.2.2.2.6), so they go into one `EXISTS`.

use crate::{MatchKey, Matcher, QueryLevel};

use super::Engine;
use super::builder::SqlBuilder;

/// The entities of the information model, top to bottom.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Entity {
    Patient,
    Study,
    Series,
    Instance,
}

impl Entity {
    /// Returns the entity a query level returns.
    pub(crate) fn of_level(level: QueryLevel) -> Self {
        match level {
            QueryLevel::Study => Entity::Study,
            QueryLevel::Series => Entity::Series,
            QueryLevel::Instance => Entity::Instance,
        }
    }

    /// Returns the alias of the entity's table in the main query.
    fn alias(self) -> &'static str {
        match self {
            Entity::Patient => "p",
            Entity::Study => "st",
            Entity::Series => "se",
            Entity::Instance => "i",
        }
    }
}

/// How values of a key compare.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ValueKind {
    Text,
    /// PN: matched through the `*_upper` column, case-insensitively.
    PersonName,
    Date,
    Time,
    Integer,
    /// PN, fuzzily: through the `*_fuzzy` column (` WORD WORD `, see
    /// [`crate::fuzzy_name_words`]); each query word must begin one of its words.
    FuzzyName,
}

/// Where the value of a key lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyTarget {
    Column {
        entity: Entity,
        column: &'static str,
        kind: ValueKind,
    },
    /// ModalitiesInStudy: the modality of any series of the study.
    ModalitiesInStudy,
    /// A column of any Request Attributes Sequence item of the series.
    RequestAttribute { column: &'static str },
    /// The storage time of the newest instance of the study.
    StudyLastUpdated,
}

/// The last-updated time of the study `st`: the storage time of its newest instance.
pub(crate) const STUDY_LAST_UPDATED_SQL: &str =
    "(SELECT MAX(lu.created_at_ms) FROM instance lu WHERE lu.study_pk = st.study_pk)";

fn key_target(key: MatchKey) -> KeyTarget {
    use Entity::{Instance, Patient, Series, Study};
    use ValueKind::{Date, Integer, PersonName, Text, Time};
    let column = |entity, column, kind| KeyTarget::Column {
        entity,
        column,
        kind,
    };
    match key {
        MatchKey::PatientId => column(Patient, "patient_id", Text),
        MatchKey::IssuerOfPatientId => column(Patient, "issuer_of_patient_id", Text),
        MatchKey::PatientName => column(Patient, "patient_name_upper", PersonName),
        MatchKey::PatientBirthDate => column(Patient, "patient_birth_date", Date),
        MatchKey::PatientSex => column(Patient, "patient_sex", Text),
        MatchKey::StudyInstanceUid => column(Study, "study_instance_uid", Text),
        MatchKey::StudyDate => column(Study, "study_date", Date),
        MatchKey::StudyTime => column(Study, "study_time", Time),
        MatchKey::AccessionNumber => column(Study, "accession_number", Text),
        MatchKey::ReferringPhysicianName => {
            column(Study, "referring_physician_name_upper", PersonName)
        }
        MatchKey::StudyId => column(Study, "study_id", Text),
        MatchKey::StudyDescription => column(Study, "study_description", Text),
        MatchKey::ModalitiesInStudy => KeyTarget::ModalitiesInStudy,
        MatchKey::SeriesInstanceUid => column(Series, "series_instance_uid", Text),
        MatchKey::Modality => column(Series, "modality", Text),
        MatchKey::SeriesNumber => column(Series, "series_number", Integer),
        MatchKey::SeriesDescription => column(Series, "series_description", Text),
        MatchKey::PerformedProcedureStepStartDate => {
            column(Series, "performed_procedure_step_start_date", Date)
        }
        MatchKey::PerformedProcedureStepStartTime => {
            column(Series, "performed_procedure_step_start_time", Time)
        }
        MatchKey::ScheduledProcedureStepId => KeyTarget::RequestAttribute {
            column: "scheduled_procedure_step_id",
        },
        MatchKey::RequestedProcedureId => KeyTarget::RequestAttribute {
            column: "requested_procedure_id",
        },
        MatchKey::SopInstanceUid => column(Instance, "sop_instance_uid", Text),
        MatchKey::SopClassUid => column(Instance, "sop_class_uid", Text),
        MatchKey::InstanceNumber => column(Instance, "instance_number", Integer),
        MatchKey::PatientKey => column(Patient, "patient_pk", Integer),
        MatchKey::LastUpdated => KeyTarget::StudyLastUpdated,
        MatchKey::PatientNameFuzzy => column(Patient, "patient_name_fuzzy", ValueKind::FuzzyName),
        MatchKey::ReferringPhysicianNameFuzzy => column(
            Study,
            "referring_physician_name_fuzzy",
            ValueKind::FuzzyName,
        ),
    }
}

/// Appends ` AND <condition>` for one filter of a query returning `level` entities; appends
/// nothing for universal matching.
pub(crate) fn push_filter(
    builder: &mut SqlBuilder,
    engine: Engine,
    level: Entity,
    key: MatchKey,
    matcher: &Matcher,
) {
    if is_universal(matcher) {
        return;
    }
    builder.push(" AND ");
    match key_target(key) {
        KeyTarget::Column {
            entity,
            column,
            kind,
        } if entity <= level => {
            let expression = format!("{}.{column}", entity.alias());
            push_condition(builder, engine, &expression, kind, matcher);
        }
        KeyTarget::Column {
            entity,
            column,
            kind,
        } => {
            let (table, parent_column, parent) = match (level, entity) {
                (Entity::Study, Entity::Series) => ("series", "study_pk", "st.study_pk"),
                (Entity::Study, _) => ("instance", "study_pk", "st.study_pk"),
                _ => ("instance", "series_pk", "se.series_pk"),
            };
            builder.push(&format!(
                "EXISTS (SELECT 1 FROM {table} child WHERE child.{parent_column} = {parent} AND "
            ));
            push_condition(builder, engine, &format!("child.{column}"), kind, matcher);
            builder.push(")");
        }
        KeyTarget::ModalitiesInStudy => {
            builder.push("EXISTS (SELECT 1 FROM series sm WHERE sm.study_pk = st.study_pk AND ");
            push_condition(builder, engine, "sm.modality", ValueKind::Text, matcher);
            builder.push(")");
        }
        KeyTarget::RequestAttribute { .. } => {
            push_request_attribute_condition(builder, engine, level, &[(key, matcher)]);
        }
        KeyTarget::StudyLastUpdated => {
            push_condition(
                builder,
                engine,
                STUDY_LAST_UPDATED_SQL,
                ValueKind::Integer,
                matcher,
            );
        }
    }
}

/// Returns whether `key` matches inside the Request Attributes Sequence.
pub(crate) fn is_request_attribute_key(key: MatchKey) -> bool {
    matches!(key_target(key), KeyTarget::RequestAttribute { .. })
}

/// Appends ` AND EXISTS (...)` requiring one Request Attributes Sequence item of the series
/// (at study level: of any series of the study) to match every filter in `filters` (sequence
/// matching, PS3.4 C.2.2.2.6). Universal filters are left out; nothing is appended when all
/// of them are universal.
pub(crate) fn push_request_attribute_filters(
    builder: &mut SqlBuilder,
    engine: Engine,
    level: Entity,
    filters: &[(MatchKey, &Matcher)],
) {
    let restricting: Vec<(MatchKey, &Matcher)> = filters
        .iter()
        .copied()
        .filter(|(_, matcher)| !is_universal(matcher))
        .collect();
    if restricting.is_empty() {
        return;
    }
    builder.push(" AND ");
    push_request_attribute_condition(builder, engine, level, &restricting);
}

fn push_request_attribute_condition(
    builder: &mut SqlBuilder,
    engine: Engine,
    level: Entity,
    filters: &[(MatchKey, &Matcher)],
) {
    if level >= Entity::Series {
        builder.push(
            "EXISTS (SELECT 1 FROM series_request_attribute ra WHERE ra.series_pk = se.series_pk",
        );
    } else {
        builder.push(
            "EXISTS (SELECT 1 FROM series_request_attribute ra \
             JOIN series sr ON sr.series_pk = ra.series_pk WHERE sr.study_pk = st.study_pk",
        );
    }
    for (key, matcher) in filters {
        let KeyTarget::RequestAttribute { column } = key_target(*key) else {
            debug_assert!(false, "{key:?} is not a request attribute key");
            continue;
        };
        builder.push(" AND ");
        push_condition(
            builder,
            engine,
            &format!("ra.{column}"),
            ValueKind::Text,
            matcher,
        );
    }
    builder.push(")");
}

/// Returns whether `matcher` matches every entity (PS3.4 C.2.2.2.3 universal matching).
pub(crate) fn is_universal(matcher: &Matcher) -> bool {
    match matcher {
        Matcher::Single(value) => value.is_empty(),
        Matcher::Wildcard(pattern) => pattern.chars().all(|character| character == '*'),
        Matcher::Range { from, to } => non_empty(from).is_none() && non_empty(to).is_none(),
        Matcher::List(_) => false,
    }
}

fn push_condition(
    builder: &mut SqlBuilder,
    engine: Engine,
    expression: &str,
    kind: ValueKind,
    matcher: &Matcher,
) {
    let fold = |value: &str| match kind {
        ValueKind::PersonName => fold_person_name(value),
        _ => value.to_owned(),
    };
    if kind == ValueKind::FuzzyName {
        push_fuzzy_name_condition(builder, expression, matcher);
        return;
    }
    match matcher {
        Matcher::Single(value) if kind == ValueKind::Integer => match parse_integer(value) {
            Some(number) => {
                builder.push(&format!("{expression} = ")).push_bind(number);
            }
            None => {
                builder.push("1 = 0");
            }
        },
        Matcher::Single(value) => {
            builder
                .push(&format!("{expression} = "))
                .push_bind(fold(value));
        }
        Matcher::Wildcard(pattern) => {
            let text_expression = match kind {
                ValueKind::Integer => format!("CAST({expression} AS TEXT)"),
                _ => expression.to_owned(),
            };
            let folded_pattern = fold(pattern);
            match engine {
                Engine::Sqlite => {
                    builder
                        .push(&format!("{text_expression} GLOB "))
                        .push_bind(glob_pattern(&folded_pattern));
                }
                Engine::Postgres => {
                    builder
                        .push(&format!("{text_expression} LIKE "))
                        .push_bind(like_pattern(&folded_pattern));
                    builder.push(" ESCAPE '!'");
                }
            }
        }
        Matcher::Range { from, to } if kind == ValueKind::Integer => {
            let bounds = (
                non_empty(from).map(parse_integer),
                non_empty(to).map(parse_integer),
            );
            if matches!(bounds, (Some(None), _) | (_, Some(None))) {
                builder.push("1 = 0");
                return;
            }
            builder.push(&format!("{expression} IS NOT NULL"));
            if let (Some(Some(from)), _) = bounds {
                builder
                    .push(&format!(" AND {expression} >= "))
                    .push_bind(from);
            }
            if let (_, Some(Some(to))) = bounds {
                builder
                    .push(&format!(" AND {expression} <= "))
                    .push_bind(to);
            }
        }
        Matcher::Range { from, to } => {
            builder.push(&format!("{expression} <> ''"));
            if let Some(from) = non_empty(from) {
                builder
                    .push(&format!(" AND {expression} >= "))
                    .push_bind(fold(from));
            }
            if let Some(to) = non_empty(to) {
                let upper_bound = match kind {
                    ValueKind::Date | ValueKind::Time => format!("{to}~"),
                    _ => fold(to),
                };
                builder
                    .push(&format!(" AND {expression} <= "))
                    .push_bind(upper_bound);
            }
        }
        Matcher::List(values) if kind == ValueKind::Integer => {
            let numbers: Vec<i64> = values
                .iter()
                .filter_map(|value| parse_integer(value))
                .collect();
            if numbers.is_empty() {
                builder.push("1 = 0");
            } else {
                builder
                    .push(&format!("{expression} IN "))
                    .push_bind_list(numbers);
            }
        }
        Matcher::List(values) => {
            if values.is_empty() {
                builder.push("1 = 0");
            } else {
                builder
                    .push(&format!("{expression} IN "))
                    .push_bind_list(values.iter().map(|value| fold(value)));
            }
        }
    }
}

/// Fuzzy person-name matching: every word of the value must begin a word of the name (`LIKE
/// '% WORD%'` on the ` WORD WORD ` column; words are letters and digits only, so nothing needs
/// escaping). A list matches when any of its values does; a range never matches a name.
fn push_fuzzy_name_condition(builder: &mut SqlBuilder, expression: &str, matcher: &Matcher) {
    let values: Vec<&str> = match matcher {
        Matcher::Single(value) | Matcher::Wildcard(value) => vec![value.as_str()],
        Matcher::List(values) => values.iter().map(String::as_str).collect(),
        Matcher::Range { .. } => Vec::new(),
    };
    let alternatives: Vec<Vec<String>> = values
        .into_iter()
        .map(crate::fuzzy_name_words)
        .filter(|words| !words.is_empty())
        .collect();
    if alternatives.is_empty() {
        // Only wildcards (universal, never reaches here) or a range: nothing matches.
        builder.push(if matches!(matcher, Matcher::Range { .. }) {
            "1 = 0"
        } else {
            "1 = 1"
        });
        return;
    }
    builder.push("(");
    for (index, words) in alternatives.iter().enumerate() {
        if index > 0 {
            builder.push(" OR ");
        }
        builder.push("(");
        for (word_index, word) in words.iter().enumerate() {
            if word_index > 0 {
                builder.push(" AND ");
            }
            builder
                .push(&format!("{expression} LIKE "))
                .push_bind(format!("% {word}%"));
        }
        builder.push(")");
    }
    builder.push(")");
}

/// The value of a `*_fuzzy` column: the name's fuzzy words between spaces (` MULLER JURGEN `),
/// so that `LIKE '% WORD%'` finds a word start anywhere.
pub(crate) fn fuzzy_name_column(value: &str) -> String {
    let words = crate::fuzzy_name_words(value);
    if words.is_empty() {
        return String::new();
    }
    format!(" {} ", words.join(" "))
}

/// Returns the case-folded form of a person name stored in the `*_upper` columns and used for
/// PN matching: the Unicode uppercase, computed in Rust so both engines agree.
pub(crate) fn fold_person_name(value: &str) -> String {
    value.to_uppercase()
}

fn non_empty(bound: &Option<String>) -> Option<&str> {
    bound.as_deref().filter(|value| !value.is_empty())
}

fn parse_integer(value: &str) -> Option<i64> {
    value.trim().trim_start_matches('+').parse().ok()
}

/// Translates a DICOM wildcard pattern to SQLite GLOB: `*` and `?` keep their meaning, and `[`
/// (the only other GLOB metacharacter outside a set) is matched literally as `[[]`.
fn glob_pattern(pattern: &str) -> String {
    let mut glob = String::with_capacity(pattern.len());
    for character in pattern.chars() {
        match character {
            '[' => glob.push_str("[[]"),
            other => glob.push(other),
        }
    }
    glob
}

/// Translates a DICOM wildcard pattern to SQL LIKE with `!` as the escape character.
fn like_pattern(pattern: &str) -> String {
    let mut like = String::with_capacity(pattern.len());
    for character in pattern.chars() {
        match character {
            '*' => like.push('%'),
            '?' => like.push('_'),
            '%' | '_' | '!' => {
                like.push('!');
                like.push(character);
            }
            other => like.push(other),
        }
    }
    like
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql_catalog::builder::SqlValue;

    fn filter_builder(
        engine: Engine,
        level: QueryLevel,
        key: MatchKey,
        matcher: Matcher,
    ) -> SqlBuilder {
        let mut builder = SqlBuilder::new("WHERE 1 = 1");
        push_filter(&mut builder, engine, Entity::of_level(level), key, &matcher);
        builder
    }

    fn filter_sql(engine: Engine, level: QueryLevel, key: MatchKey, matcher: Matcher) -> String {
        filter_builder(engine, level, key, matcher).sql().to_owned()
    }

    #[test]
    fn test_wildcard_translation_escapes_literals() {
        assert_eq!(like_pattern("a*b?c%d_e!f"), "a%b_c!%d!_e!!f");
        assert_eq!(glob_pattern("a*b?c[d]e%_"), "a*b?c[[]d]e%_");
    }

    #[test]
    fn test_person_names_fold_with_unicode_uppercase() {
        assert_eq!(
            fold_person_name("müller^jürgen=ミュラー"),
            "MÜLLER^JÜRGEN=ミュラー"
        );
    }

    #[test]
    fn test_universal_matchers_add_no_condition() {
        for matcher in [
            Matcher::Single(String::new()),
            Matcher::Wildcard("**".to_owned()),
            Matcher::Range {
                from: None,
                to: Some(String::new()),
            },
        ] {
            let sql = filter_sql(
                Engine::Sqlite,
                QueryLevel::Study,
                MatchKey::StudyDate,
                matcher,
            );
            assert_eq!(sql, "WHERE 1 = 1");
        }
    }

    #[test]
    fn test_engine_specific_wildcards() {
        let matcher = Matcher::Wildcard("CT*".to_owned());
        let sqlite = filter_sql(
            Engine::Sqlite,
            QueryLevel::Series,
            MatchKey::Modality,
            matcher.clone(),
        );
        assert_eq!(sqlite, "WHERE 1 = 1 AND se.modality GLOB $1");
        let postgres = filter_sql(
            Engine::Postgres,
            QueryLevel::Series,
            MatchKey::Modality,
            matcher,
        );
        assert_eq!(postgres, "WHERE 1 = 1 AND se.modality LIKE $1 ESCAPE '!'");
    }

    #[test]
    fn test_lower_level_keys_become_exists() {
        let sql = filter_sql(
            Engine::Postgres,
            QueryLevel::Study,
            MatchKey::SopClassUid,
            Matcher::Single("1.2".to_owned()),
        );
        assert_eq!(
            sql,
            "WHERE 1 = 1 AND EXISTS (SELECT 1 FROM instance child WHERE child.study_pk = st.study_pk \
             AND child.sop_class_uid = $1)"
        );
    }

    #[test]
    fn test_unparsable_integers_match_nothing() {
        let sql = filter_sql(
            Engine::Sqlite,
            QueryLevel::Instance,
            MatchKey::InstanceNumber,
            Matcher::Single("x".to_owned()),
        );
        assert_eq!(sql, "WHERE 1 = 1 AND 1 = 0");
    }

    #[test]
    fn test_time_range_upper_bound_covers_its_precision() {
        let builder = filter_builder(
            Engine::Sqlite,
            QueryLevel::Study,
            MatchKey::StudyTime,
            Matcher::Range {
                from: Some("1000".to_owned()),
                to: Some("1200".to_owned()),
            },
        );
        assert_eq!(
            builder.sql(),
            "WHERE 1 = 1 AND st.study_time <> '' AND st.study_time >= $1 AND st.study_time <= $2"
        );
        assert_eq!(
            builder.values(),
            [SqlValue::from("1000"), SqlValue::from("1200~")]
        );
        assert!("113000.5" >= "1000" && "113000.5" <= "1200~");
        assert!("120059.999999" <= "1200~" && "1201" > "1200~");
    }
}
