//! C-FIND SCP (PS3.4 Annex C): Patient Root and Study Root, answered through the one catalog
//! query shared with QIDO-RS.

use dicom_core::header::Header;
use dicom_core::value::PrimitiveValue;
use dicom_core::{DataElement, Tag, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_encoding::TransferSyntaxIndex;
use dicom_object::InMemDicomObject;
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;
use strata_catalog::{CatalogQuery, MatchKey, Matcher, QueryLevel, QueryMatch};
use tracing::{info, warn};

use crate::error::DimseError;
use crate::listener::AssociationContext;
use crate::message::{Command, DATA_SET_PRESENT, command_field, status};
use crate::scp::AcceptedContext;
use crate::transport::Channel;

/// How a key's value is matched.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Text,
    Uid,
    DateOrTime,
    Integer,
}

/// The keys C-FIND matches on: tag, catalog key, value kind.
const KEYS: &[(Tag, MatchKey, Kind)] = &[
    (tags::PATIENT_ID, MatchKey::PatientId, Kind::Text),
    (
        tags::ISSUER_OF_PATIENT_ID,
        MatchKey::IssuerOfPatientId,
        Kind::Text,
    ),
    (tags::PATIENT_NAME, MatchKey::PatientName, Kind::Text),
    (
        tags::PATIENT_BIRTH_DATE,
        MatchKey::PatientBirthDate,
        Kind::DateOrTime,
    ),
    (tags::PATIENT_SEX, MatchKey::PatientSex, Kind::Text),
    (
        tags::STUDY_INSTANCE_UID,
        MatchKey::StudyInstanceUid,
        Kind::Uid,
    ),
    (tags::STUDY_DATE, MatchKey::StudyDate, Kind::DateOrTime),
    (tags::STUDY_TIME, MatchKey::StudyTime, Kind::DateOrTime),
    (
        tags::ACCESSION_NUMBER,
        MatchKey::AccessionNumber,
        Kind::Text,
    ),
    (
        tags::REFERRING_PHYSICIAN_NAME,
        MatchKey::ReferringPhysicianName,
        Kind::Text,
    ),
    (tags::STUDY_ID, MatchKey::StudyId, Kind::Text),
    (
        tags::STUDY_DESCRIPTION,
        MatchKey::StudyDescription,
        Kind::Text,
    ),
    (
        tags::MODALITIES_IN_STUDY,
        MatchKey::ModalitiesInStudy,
        Kind::Text,
    ),
    (
        tags::SERIES_INSTANCE_UID,
        MatchKey::SeriesInstanceUid,
        Kind::Uid,
    ),
    (tags::MODALITY, MatchKey::Modality, Kind::Text),
    (tags::SERIES_NUMBER, MatchKey::SeriesNumber, Kind::Integer),
    (
        tags::SERIES_DESCRIPTION,
        MatchKey::SeriesDescription,
        Kind::Text,
    ),
    (tags::SOP_INSTANCE_UID, MatchKey::SopInstanceUid, Kind::Uid),
    (tags::SOP_CLASS_UID, MatchKey::SopClassUid, Kind::Uid),
    (
        tags::INSTANCE_NUMBER,
        MatchKey::InstanceNumber,
        Kind::Integer,
    ),
];

/// The Query/Retrieve level of an identifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Level {
    Patient,
    Study,
    Series,
    Image,
}

pub(crate) fn decode_identifier(
    bytes: &[u8],
    transfer_syntax_uid: &str,
) -> Result<InMemDicomObject, String> {
    let transfer_syntax = TransferSyntaxRegistry
        .get(transfer_syntax_uid)
        .ok_or_else(|| format!("unknown transfer syntax {transfer_syntax_uid}"))?;
    InMemDicomObject::read_dataset_with_ts(bytes, transfer_syntax)
        .map_err(|error| format!("malformed identifier: {error}"))
}

pub(crate) fn element_text(identifier: &InMemDicomObject, tag: Tag) -> Option<String> {
    identifier
        .element_opt(tag)
        .ok()
        .flatten()
        .and_then(|element| element.to_str().ok())
        .map(|text| text.trim_end_matches(['\0', ' ']).trim_start().to_owned())
        .filter(|text| !text.is_empty())
}

pub(crate) fn level_of(identifier: &InMemDicomObject) -> Option<Level> {
    match element_text(identifier, tags::QUERY_RETRIEVE_LEVEL)?.as_str() {
        "PATIENT" => Some(Level::Patient),
        "STUDY" => Some(Level::Study),
        "SERIES" => Some(Level::Series),
        "IMAGE" => Some(Level::Image),
        _ => None,
    }
}

/// Turns an identifier into a catalog query: every key with a value becomes a filter (PS3.4
/// C.2.2.2: single value, wildcard, range, UID list; empty means universal matching).
pub(crate) fn catalog_query(identifier: &InMemDicomObject, level: Level) -> CatalogQuery {
    let mut filters = Vec::new();
    for (tag, key, kind) in KEYS {
        let Some(value) = element_text(identifier, *tag) else {
            continue;
        };
        if value == "*" {
            continue;
        }
        let matcher = match kind {
            Kind::Uid if value.contains('\\') => Matcher::List(
                value
                    .split('\\')
                    .map(|uid| uid.trim_end_matches(['\0', ' ']).to_owned())
                    .collect(),
            ),
            Kind::DateOrTime if value.contains('-') => {
                let (from, to) = value.split_once('-').unwrap_or((value.as_str(), ""));
                Matcher::Range {
                    from: (!from.is_empty()).then(|| from.to_owned()),
                    to: (!to.is_empty()).then(|| to.to_owned()),
                }
            }
            Kind::Text if value.contains(['*', '?']) => Matcher::Wildcard(value),
            _ if value.contains('\\') => {
                Matcher::List(value.split('\\').map(str::to_owned).collect())
            }
            _ => Matcher::Single(value),
        };
        filters.push((*key, matcher));
    }
    CatalogQuery {
        level: match level {
            Level::Patient | Level::Study => QueryLevel::Study,
            Level::Series => QueryLevel::Series,
            Level::Image => QueryLevel::Instance,
        },
        study_scope: None,
        series_scope: None,
        filters,
        limit: None,
        offset: 0,
        with_metadata: false,
    }
}

/// Returns the value of an attribute of a match, if the catalog holds it.
fn match_value(found: &QueryMatch, tag: Tag) -> Option<String> {
    let series = found.series.as_ref();
    let instance = found.instance.as_ref();
    let value = match tag {
        tags::PATIENT_ID => found.patient.patient_id.clone(),
        tags::ISSUER_OF_PATIENT_ID => found.patient.issuer_of_patient_id.clone(),
        tags::PATIENT_NAME => found.patient.patient_name.clone(),
        tags::PATIENT_BIRTH_DATE => found.patient.patient_birth_date.clone(),
        tags::PATIENT_SEX => found.patient.patient_sex.clone(),
        tags::STUDY_INSTANCE_UID => found.study.study_instance_uid.to_string(),
        tags::STUDY_DATE => found.study.study_date.clone(),
        tags::STUDY_TIME => found.study.study_time.clone(),
        tags::ACCESSION_NUMBER => found.study.accession_number.clone(),
        tags::REFERRING_PHYSICIAN_NAME => found.study.referring_physician_name.clone(),
        tags::STUDY_ID => found.study.study_id.clone(),
        tags::STUDY_DESCRIPTION => found.study.study_description.clone(),
        tags::MODALITIES_IN_STUDY => found.modalities_in_study.join("\\"),
        tags::SOP_CLASSES_IN_STUDY => found.sop_classes_in_study.join("\\"),
        tags::NUMBER_OF_STUDY_RELATED_SERIES => found.num_study_series.to_string(),
        tags::NUMBER_OF_STUDY_RELATED_INSTANCES => found.num_study_instances.to_string(),
        tags::NUMBER_OF_SERIES_RELATED_INSTANCES => found.num_series_instances?.to_string(),
        tags::SERIES_INSTANCE_UID => series?.series_instance_uid.to_string(),
        tags::MODALITY => series?.modality.clone(),
        tags::SERIES_NUMBER => series?.series_number?.to_string(),
        tags::SERIES_DESCRIPTION => series?.series_description.clone(),
        tags::BODY_PART_EXAMINED => series?.body_part_examined.clone(),
        tags::SOP_INSTANCE_UID => instance?.sop_instance_uid.to_string(),
        tags::SOP_CLASS_UID => instance?.sop_class_uid.clone(),
        tags::INSTANCE_NUMBER => instance?.instance_number?.to_string(),
        tags::ROWS => instance?.rows?.to_string(),
        tags::COLUMNS => instance?.columns?.to_string(),
        tags::NUMBER_OF_FRAMES => instance?.number_of_frames?.to_string(),
        _ => return None,
    };
    Some(value)
}

/// Builds one response identifier: every key of the request, filled from the match (empty
/// when the catalog does not hold it), plus the level and the Retrieve AE Title.
fn response_identifier(
    request: &InMemDicomObject,
    found: &QueryMatch,
    level_text: &str,
    ae_title: &str,
) -> InMemDicomObject {
    let mut response = InMemDicomObject::new_empty();
    for element in request.iter() {
        let tag = element.tag();
        let vr = element.vr();
        if tag == tags::SPECIFIC_CHARACTER_SET {
            continue;
        }
        if vr == VR::SQ {
            // Sequence keys are returned (empty): the catalog does not hold their items.
            response.put(DataElement::new(
                tag,
                VR::SQ,
                dicom_core::value::DataSetSequence::<InMemDicomObject>::empty(),
            ));
            continue;
        }
        let value = match_value(found, tag).unwrap_or_default();
        response.put(DataElement::new(tag, vr, PrimitiveValue::from(value)));
    }
    response.put(DataElement::new(
        tags::SPECIFIC_CHARACTER_SET,
        VR::CS,
        PrimitiveValue::from("ISO_IR 192"),
    ));
    response.put(DataElement::new(
        tags::QUERY_RETRIEVE_LEVEL,
        VR::CS,
        PrimitiveValue::from(level_text),
    ));
    response.put(DataElement::new(
        tags::RETRIEVE_AE_TITLE,
        VR::AE,
        PrimitiveValue::from(ae_title),
    ));
    response
}

pub(crate) fn handle_find(
    channel: &mut Channel,
    presentation_context: &AcceptedContext,
    command: &Command,
    identifier_bytes: &[u8],
    context: &AssociationContext,
) -> Result<(), DimseError> {
    let final_response =
        |status_code: u16| Command::response_to(command, command_field::C_FIND_RSP, status_code);
    let identifier =
        match decode_identifier(identifier_bytes, &presentation_context.transfer_syntax) {
            Ok(identifier) => identifier,
            Err(message) => {
                info!(%message, "c-find identifier refused");
                let response = final_response(status::IDENTIFIER_DOES_NOT_MATCH);
                return channel.send_message(presentation_context.id, &response, None);
            }
        };
    let patient_root = presentation_context.abstract_syntax
        == uids::PATIENT_ROOT_QUERY_RETRIEVE_INFORMATION_MODEL_FIND;
    let Some(level) =
        level_of(&identifier).filter(|level| patient_root || *level != Level::Patient)
    else {
        let response = final_response(status::IDENTIFIER_DOES_NOT_MATCH);
        return channel.send_message(presentation_context.id, &response, None);
    };
    let level_text = element_text(&identifier, tags::QUERY_RETRIEVE_LEVEL).unwrap_or_default();
    let query = catalog_query(&identifier, level);
    let catalog = context.services.catalog.clone();
    let matches = match context
        .runtime
        .block_on(async move { catalog.query(&query).await })
    {
        Ok(matches) => matches,
        Err(error) => {
            warn!(%error, "c-find query failed");
            let response = final_response(status::UNABLE_TO_PROCESS);
            return channel.send_message(presentation_context.id, &response, None);
        }
    };
    let transfer_syntax = TransferSyntaxRegistry
        .get(&presentation_context.transfer_syntax)
        .ok_or_else(|| DimseError::internal("accepted transfer syntax is unknown"))?;
    let mut seen_patients = std::collections::HashSet::new();
    let mut num_sent = 0u64;
    for found in &matches {
        if level == Level::Patient && !seen_patients.insert(found.patient.patient_id.clone()) {
            continue;
        }
        if channel.peer_has_sent()
            && let Some((_, cancel)) = channel.read_command()?
            && cancel.command_field() == Some(command_field::C_CANCEL_RQ)
        {
            info!(num_sent, "c-find cancelled");
            let response = final_response(status::CANCEL);
            return channel.send_message(presentation_context.id, &response, None);
        }
        let response_identifier =
            response_identifier(&identifier, found, &level_text, &context.settings.ae_title);
        let mut bytes = Vec::new();
        response_identifier
            .write_dataset_with_ts(&mut bytes, transfer_syntax)
            .map_err(|error| DimseError::internal(format!("cannot encode a match: {error}")))?;
        let mut pending = final_response(status::PENDING);
        pending.put_u16(tags::COMMAND_DATA_SET_TYPE, DATA_SET_PRESENT);
        channel.send_message(presentation_context.id, &pending, Some(&bytes))?;
        num_sent += 1;
    }
    info!(num_matches = num_sent, level = %level_text, "c-find answered");
    channel.send_message(
        presentation_context.id,
        &final_response(status::SUCCESS),
        None,
    )
}
