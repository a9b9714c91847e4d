//! `query`: the QIDO-RS / C-FIND search at study, series or instance level.
//!
//! One statement selects the page of matching entities, ordered by the level's primary key
//! (insertion order) or by study date (FHIR `_sort`), with LIMIT / OFFSET in SQL; the count
//! (FHIR `Bundle.total`) runs the same FROM / WHERE. The computed attributes that are not kept as
//! counters (ModalitiesInStudy, SOPClassesInStudy), the request attribute items and the
//! representative metadata are then read for that page by key, in the same read transaction.

use std::collections::{BTreeSet, HashMap};

use sqlx::AnyConnection;
use sqlx::any::AnyRow;

use crate::{
    CatalogError, CatalogQuery, CatalogResult, InstanceAttributes, MatchKey, Matcher,
    PatientAttributes, QueryMatch, QueryOrder, RequestAttributes, SeriesAttributes,
    StudyAttributes,
};

use super::builder::SqlBuilder;
use super::filter::{
    Entity, is_request_attribute_key, push_filter, push_request_attribute_filters,
};
use super::{Engine, SqlCatalog, rows};

/// Keys per `IN (...)` list; well under the bind limits of SQLite (32766) and PostgreSQL (65535).
const KEYS_PER_STATEMENT: usize = 500;

const PATIENT_COLUMNS: &str = "p.patient_pk, p.patient_id, p.issuer_of_patient_id, p.patient_name, p.patient_birth_date, p.patient_sex";
const STUDY_COLUMNS: &str = "st.study_pk, st.study_instance_uid, st.study_date, st.study_time, \
     st.accession_number, st.referring_physician_name, st.study_id, st.study_description, \
     st.timezone_offset_from_utc, st.num_series, st.num_instances AS study_num_instances";
const SERIES_COLUMNS: &str = "se.series_pk, se.series_instance_uid, se.modality, \
     se.series_number, se.series_description, se.body_part_examined, \
     se.performed_procedure_step_start_date, se.performed_procedure_step_start_time, \
     se.num_instances AS series_num_instances";
const INSTANCE_COLUMNS: &str = "i.instance_pk, i.sop_instance_uid, i.sop_class_uid, \
     i.instance_number, i.image_rows, i.image_columns, i.bits_allocated, i.number_of_frames, i.title, \
     i.transfer_syntax_uid, i.specific_character_set";

/// One row of the main statement, with the keys needed to fill in computed attributes.
struct FoundEntity {
    study_pk: i64,
    series_pk: Option<i64>,
    found: QueryMatch,
}

/// Runs a query; see [`crate::Catalog::query`].
pub(crate) async fn run_query(
    catalog: &SqlCatalog,
    query: &CatalogQuery,
    order: QueryOrder,
) -> CatalogResult<Vec<QueryMatch>> {
    let level = Entity::of_level(query.level);
    let query_error = |error| CatalogError::from_sqlx("run a catalog query", error);
    let builder = main_statement(catalog.engine, query, order);
    let mut transaction = catalog.begin_read().await.map_err(query_error)?;
    let connection: &mut AnyConnection = &mut transaction;
    let found_rows = builder
        .build()
        .fetch_all(&mut *connection)
        .await
        .map_err(query_error)?;
    let mut entities = found_rows
        .iter()
        .map(|row| decode_entity(row, level, query.with_metadata))
        .collect::<CatalogResult<Vec<_>>>()?;
    fill_computed(connection, level, query.with_metadata, &mut entities).await?;
    transaction.commit().await.map_err(query_error)?;
    Ok(entities.into_iter().map(|entity| entity.found).collect())
}

/// Builds `SELECT <columns> FROM <the level's joins> WHERE <the query's filters>`; the one
/// place a query's filters become SQL, shared by the page and the count.
fn filtered_statement(engine: Engine, query: &CatalogQuery, count_only: bool) -> SqlBuilder {
    let level = Entity::of_level(query.level);
    let mut columns = vec![PATIENT_COLUMNS, STUDY_COLUMNS];
    let mut from = "FROM study st JOIN patient p ON p.patient_pk = st.patient_pk".to_owned();
    if level >= Entity::Series {
        columns.push(SERIES_COLUMNS);
        from.push_str(" JOIN series se ON se.study_pk = st.study_pk");
    }
    if level == Entity::Instance {
        columns.push(INSTANCE_COLUMNS);
        if query.with_metadata {
            columns.push("i.metadata_json");
        }
        from.push_str(" JOIN instance i ON i.series_pk = se.series_pk");
    }
    let selected = if count_only {
        "COUNT(*) AS num_matches".to_owned()
    } else {
        columns.join(", ")
    };
    let mut builder = SqlBuilder::new(&format!("SELECT {selected} {from} WHERE 1 = 1"));

    let scopes = [
        query
            .study_scope
            .as_ref()
            .map(|uid| (MatchKey::StudyInstanceUid, uid.as_str())),
        query
            .series_scope
            .as_ref()
            .map(|uid| (MatchKey::SeriesInstanceUid, uid.as_str())),
    ];
    for (key, uid) in scopes.into_iter().flatten() {
        push_filter(
            &mut builder,
            engine,
            level,
            key,
            &Matcher::Single(uid.to_owned()),
        );
    }
    let mut request_attribute_filters = Vec::new();
    for (key, matcher) in &query.filters {
        if is_request_attribute_key(*key) {
            request_attribute_filters.push((*key, matcher));
        } else {
            push_filter(&mut builder, engine, level, *key, matcher);
        }
    }
    push_request_attribute_filters(&mut builder, engine, level, &request_attribute_filters);
    builder
}

/// Counts the entities a query matches; see [`crate::Catalog::count_matches`].
pub(crate) async fn count_matches(
    catalog: &SqlCatalog,
    query: &CatalogQuery,
) -> CatalogResult<u64> {
    let builder = filtered_statement(catalog.engine, query, true);
    let row = builder
        .build()
        .fetch_one(&catalog.pool)
        .await
        .map_err(|error| CatalogError::from_sqlx("count catalog query matches", error))?;
    u64::try_from(rows::integer(&row, "num_matches")?)
        .map_err(|_| CatalogError::corrupted("match count"))
}

/// Builds the statement that selects the page of matching entities.
fn main_statement(engine: Engine, query: &CatalogQuery, order: QueryOrder) -> SqlBuilder {
    let level = Entity::of_level(query.level);
    let mut builder = filtered_statement(engine, query, false);
    // Studies without a date sort last in both directions; the primary keys make it total.
    let level_key = match level {
        Entity::Instance => "i.instance_pk",
        Entity::Series => "se.series_pk",
        _ => "st.study_pk",
    };
    let study_date_order = |direction: &str| {
        let mut order_by = format!(
            " ORDER BY CASE WHEN st.study_date = '' THEN 1 ELSE 0 END, \
             st.study_date {direction}, st.study_time {direction}, st.study_pk {direction}"
        );
        if level > Entity::Study {
            order_by.push_str(&format!(", {level_key}"));
        }
        order_by
    };
    let order_by = match order {
        QueryOrder::Storage => format!(" ORDER BY {level_key}"),
        QueryOrder::StudyDateAscending => study_date_order("ASC"),
        QueryOrder::StudyDateDescending => study_date_order("DESC"),
    };
    builder.push(&order_by);
    let offset = i64::try_from(query.offset).unwrap_or(i64::MAX);
    match (query.limit, engine) {
        (Some(limit), _) => {
            builder
                .push(" LIMIT ")
                .push_bind(i64::try_from(limit).unwrap_or(i64::MAX));
        }
        // SQLite only accepts OFFSET after a LIMIT; a negative LIMIT means none.
        (None, Engine::Sqlite) => {
            builder.push(" LIMIT -1");
        }
        (None, Engine::Postgres) => {}
    }
    builder.push(" OFFSET ").push_bind(offset);
    builder
}

fn decode_entity(row: &AnyRow, level: Entity, with_metadata: bool) -> CatalogResult<FoundEntity> {
    let patient = PatientAttributes {
        patient_id: rows::text(row, "patient_id")?,
        issuer_of_patient_id: rows::text(row, "issuer_of_patient_id")?,
        patient_name: rows::text(row, "patient_name")?,
        patient_birth_date: rows::text(row, "patient_birth_date")?,
        patient_sex: rows::text(row, "patient_sex")?,
    };
    let study = StudyAttributes {
        study_instance_uid: rows::uid(row, "study_instance_uid")?,
        study_date: rows::text(row, "study_date")?,
        study_time: rows::text(row, "study_time")?,
        accession_number: rows::text(row, "accession_number")?,
        referring_physician_name: rows::text(row, "referring_physician_name")?,
        study_id: rows::text(row, "study_id")?,
        study_description: rows::text(row, "study_description")?,
        timezone_offset_from_utc: rows::text(row, "timezone_offset_from_utc")?,
    };
    let (series_pk, series, num_series_instances) = if level >= Entity::Series {
        let series = SeriesAttributes {
            series_instance_uid: rows::uid(row, "series_instance_uid")?,
            modality: rows::text(row, "modality")?,
            series_number: rows::optional_integer(row, "series_number")?,
            series_description: rows::text(row, "series_description")?,
            body_part_examined: rows::text(row, "body_part_examined")?,
            performed_procedure_step_start_date: rows::text(
                row,
                "performed_procedure_step_start_date",
            )?,
            performed_procedure_step_start_time: rows::text(
                row,
                "performed_procedure_step_start_time",
            )?,
            request_attributes: Vec::new(),
        };
        let series_pk = rows::integer(row, "series_pk")?;
        (
            Some(series_pk),
            Some(series),
            Some(rows::integer(row, "series_num_instances")?),
        )
    } else {
        (None, None, None)
    };
    let (instance, metadata_json) = if level == Entity::Instance {
        let instance = InstanceAttributes {
            sop_instance_uid: rows::uid(row, "sop_instance_uid")?,
            sop_class_uid: rows::text(row, "sop_class_uid")?,
            instance_number: rows::optional_integer(row, "instance_number")?,
            rows: rows::optional_integer(row, "image_rows")?,
            columns: rows::optional_integer(row, "image_columns")?,
            bits_allocated: rows::optional_integer(row, "bits_allocated")?,
            number_of_frames: rows::optional_integer(row, "number_of_frames")?,
            title: rows::text(row, "title")?,
            transfer_syntax_uid: rows::text(row, "transfer_syntax_uid")?,
            specific_character_set: rows::text(row, "specific_character_set")?,
        };
        let metadata_json = if with_metadata {
            Some(rows::text(row, "metadata_json")?)
        } else {
            None
        };
        (Some(instance), metadata_json)
    } else {
        (None, None)
    };
    Ok(FoundEntity {
        study_pk: rows::integer(row, "study_pk")?,
        series_pk,
        found: QueryMatch {
            patient_key: rows::integer(row, "patient_pk")?,
            patient,
            study,
            series,
            instance,
            num_study_series: rows::integer(row, "num_series")?,
            num_study_instances: rows::integer(row, "study_num_instances")?,
            num_series_instances,
            modalities_in_study: Vec::new(),
            sop_classes_in_study: Vec::new(),
            metadata_json,
            last_updated_ms: 0,
        },
    })
}

/// Fills in ModalitiesInStudy, SOPClassesInStudy, the request attribute items and, for study
/// and series level, the metadata of the entity's first stored instance.
async fn fill_computed(
    connection: &mut AnyConnection,
    level: Entity,
    with_metadata: bool,
    entities: &mut [FoundEntity],
) -> CatalogResult<()> {
    let study_pks = distinct(entities.iter().map(|entity| entity.study_pk));
    let series_pks = distinct(entities.iter().filter_map(|entity| entity.series_pk));

    let modalities = sorted_values_by_key(
        connection,
        "SELECT DISTINCT study_pk AS owner_pk, modality AS value FROM series \
         WHERE modality <> '' AND study_pk IN ",
        &study_pks,
    )
    .await?;
    let sop_classes = sorted_values_by_key(
        connection,
        "SELECT DISTINCT study_pk AS owner_pk, sop_class_uid AS value FROM instance \
         WHERE sop_class_uid <> '' AND study_pk IN ",
        &study_pks,
    )
    .await?;
    let mut last_updated_ms: HashMap<i64, i64> = HashMap::new();
    for row in fetch_by_keys(
        connection,
        "SELECT study_pk, MAX(created_at_ms) AS last_updated_ms FROM instance WHERE study_pk IN ",
        &study_pks,
        " GROUP BY study_pk",
    )
    .await?
    {
        last_updated_ms.insert(
            rows::integer(&row, "study_pk")?,
            rows::integer(&row, "last_updated_ms")?,
        );
    }
    let mut request_attributes: HashMap<i64, Vec<RequestAttributes>> = HashMap::new();
    for row in fetch_by_keys(
        connection,
        "SELECT series_pk, scheduled_procedure_step_id, requested_procedure_id \
         FROM series_request_attribute WHERE series_pk IN ",
        &series_pks,
        " ORDER BY request_attribute_pk",
    )
    .await?
    {
        request_attributes
            .entry(rows::integer(&row, "series_pk")?)
            .or_default()
            .push(RequestAttributes {
                scheduled_procedure_step_id: rows::text(&row, "scheduled_procedure_step_id")?,
                requested_procedure_id: rows::text(&row, "requested_procedure_id")?,
            });
    }
    let representative_metadata = match (with_metadata, level) {
        (true, Entity::Study) => metadata_by_key(connection, "study_pk", &study_pks).await?,
        (true, Entity::Series) => metadata_by_key(connection, "series_pk", &series_pks).await?,
        _ => HashMap::new(),
    };

    for entity in entities.iter_mut() {
        let found = &mut entity.found;
        found.modalities_in_study = modalities
            .get(&entity.study_pk)
            .cloned()
            .unwrap_or_default();
        found.last_updated_ms = last_updated_ms
            .get(&entity.study_pk)
            .copied()
            .unwrap_or_default();
        found.sop_classes_in_study = sop_classes
            .get(&entity.study_pk)
            .cloned()
            .unwrap_or_default();
        if let (Some(series), Some(series_pk)) = (found.series.as_mut(), entity.series_pk) {
            series.request_attributes = request_attributes
                .get(&series_pk)
                .cloned()
                .unwrap_or_default();
        }
        let owner_pk = match level {
            Entity::Series => entity.series_pk,
            _ => Some(entity.study_pk),
        };
        if let Some(metadata_json) = owner_pk.and_then(|pk| representative_metadata.get(&pk)) {
            found.metadata_json = Some(metadata_json.clone());
        }
    }
    Ok(())
}

/// Returns `{owner_pk -> sorted distinct values}` from a statement selecting `owner_pk, value`.
async fn sorted_values_by_key(
    connection: &mut AnyConnection,
    sql_prefix: &str,
    keys: &[i64],
) -> CatalogResult<HashMap<i64, Vec<String>>> {
    let mut values: HashMap<i64, BTreeSet<String>> = HashMap::new();
    for row in fetch_by_keys(connection, sql_prefix, keys, "").await? {
        values
            .entry(rows::integer(&row, "owner_pk")?)
            .or_default()
            .insert(rows::text(&row, "value")?);
    }
    Ok(values
        .into_iter()
        .map(|(key, set)| (key, set.into_iter().collect()))
        .collect())
}

/// Returns `{owner_pk -> metadata_json}` of the lowest instance pk of each study or series.
async fn metadata_by_key(
    connection: &mut AnyConnection,
    owner_column: &str,
    keys: &[i64],
) -> CatalogResult<HashMap<i64, String>> {
    let sql_prefix = format!(
        "SELECT {owner_column} AS owner_pk, metadata_json FROM instance WHERE instance_pk IN \
         (SELECT MIN(instance_pk) FROM instance WHERE {owner_column} IN "
    );
    let mut metadata = HashMap::with_capacity(keys.len());
    let found_rows = fetch_by_keys(
        connection,
        &sql_prefix,
        keys,
        &format!(" GROUP BY {owner_column})"),
    )
    .await?;
    for row in found_rows {
        metadata.insert(
            rows::integer(&row, "owner_pk")?,
            rows::text(&row, "metadata_json")?,
        );
    }
    Ok(metadata)
}

/// Runs `sql_prefix (k1, k2, ...) sql_suffix` over `keys` in chunks and returns all rows.
async fn fetch_by_keys(
    connection: &mut AnyConnection,
    sql_prefix: &str,
    keys: &[i64],
    sql_suffix: &str,
) -> CatalogResult<Vec<AnyRow>> {
    let mut found_rows = Vec::new();
    for chunk in keys.chunks(KEYS_PER_STATEMENT) {
        let mut builder = SqlBuilder::new(sql_prefix);
        builder
            .push_bind_list(chunk.iter().copied())
            .push(sql_suffix);
        let chunk_rows = builder
            .build()
            .fetch_all(&mut *connection)
            .await
            .map_err(|error| CatalogError::from_sqlx("read computed query attributes", error))?;
        found_rows.extend(chunk_rows);
    }
    Ok(found_rows)
}

fn distinct(keys: impl Iterator<Item = i64>) -> Vec<i64> {
    let mut seen = BTreeSet::new();
    keys.filter(|key| seen.insert(*key)).collect()
}
