//! C-MOVE and C-GET SCP (PS3.4 Annex C.4.2, C.4.3): the instances an identifier selects are
//! sent as C-STORE sub-operations, over a new association (move) or the same one (get).

use std::collections::{BTreeSet, HashSet};

use dicom_dictionary_std::tags;
use futures::TryStreamExt;
use strata_catalog::{InstanceLocation, MatchKey};
use tracing::{info, warn};

use crate::error::DimseError;
use crate::find::{Level, catalog_query, decode_identifier, element_text, level_of};
use crate::listener::AssociationContext;
use crate::message::{Command, command_field, status};
use crate::scp::AcceptedContext;
use crate::scu::{StoreScu, StoreScuOutcome, read_part10};
use crate::transport::Channel;

/// Counts of sub-operations.
#[derive(Debug, Default, Clone, Copy)]
struct Progress {
    remaining: u16,
    completed: u16,
    failed: u16,
    warning: u16,
}

fn with_counts(mut response: Command, progress: Progress, include_remaining: bool) -> Command {
    if include_remaining {
        response.put_u16(tags::NUMBER_OF_REMAINING_SUBOPERATIONS, progress.remaining);
    }
    response
        .put_u16(tags::NUMBER_OF_COMPLETED_SUBOPERATIONS, progress.completed)
        .put_u16(tags::NUMBER_OF_FAILED_SUBOPERATIONS, progress.failed)
        .put_u16(tags::NUMBER_OF_WARNING_SUBOPERATIONS, progress.warning);
    response
}

/// Returns the stored instances the identifier selects.
fn resolve(
    identifier_bytes: &[u8],
    presentation_context: &AcceptedContext,
    context: &AssociationContext,
) -> Result<Vec<InstanceLocation>, u16> {
    let identifier = decode_identifier(identifier_bytes, &presentation_context.transfer_syntax)
        .map_err(|_| status::IDENTIFIER_DOES_NOT_MATCH)?;
    let level = level_of(&identifier).ok_or(status::IDENTIFIER_DOES_NOT_MATCH)?;
    let mut query = catalog_query(&identifier, Level::Image);
    // Only unique keys select what to retrieve (PS3.4 C.4.2.1.4); a patient-level retrieve
    // is selected by Patient ID.
    query.filters.retain(|(key, _)| {
        matches!(
            key,
            MatchKey::PatientId
                | MatchKey::StudyInstanceUid
                | MatchKey::SeriesInstanceUid
                | MatchKey::SopInstanceUid
        )
    });
    let unique_key_of_level = match level {
        Level::Patient => MatchKey::PatientId,
        Level::Study => MatchKey::StudyInstanceUid,
        Level::Series => MatchKey::SeriesInstanceUid,
        Level::Image => MatchKey::SopInstanceUid,
    };
    if !query
        .filters
        .iter()
        .any(|(key, _)| *key == unique_key_of_level)
    {
        return Err(status::IDENTIFIER_DOES_NOT_MATCH);
    }
    let _ = element_text(&identifier, tags::QUERY_RETRIEVE_LEVEL);
    let catalog = context.services.catalog.clone();
    context
        .runtime
        .block_on(async move {
            let matches = catalog.query(&query).await?;
            let wanted: HashSet<String> = matches
                .iter()
                .filter_map(|found| found.instance.as_ref())
                .map(|instance| instance.sop_instance_uid.to_string())
                .collect();
            let studies: BTreeSet<_> = matches
                .iter()
                .map(|found| found.study.study_instance_uid.clone())
                .collect();
            let mut locations = Vec::new();
            for study in studies {
                let study_locations = catalog.instance_locations(&study, None, None).await?;
                locations.extend(
                    study_locations
                        .into_iter()
                        .filter(|location| wanted.contains(&location.sop_instance_uid.to_string())),
                );
            }
            Ok::<_, strata_catalog::CatalogError>(locations)
        })
        .map_err(|error| {
            warn!(%error, "retrieve query failed");
            status::UNABLE_TO_PROCESS
        })
        .and_then(|locations| refuse_archived(context, locations))
}

/// Refuses a retrieve that includes archived objects while they are restored
/// (docs/tiering.md): their restore is started and the SCU gets 0xA702 (out of resources,
/// unable to perform sub-operations), a refusal it may retry later.
fn refuse_archived(
    context: &AssociationContext,
    locations: Vec<InstanceLocation>,
) -> Result<Vec<InstanceLocation>, u16> {
    let store = context.services.store.clone();
    let keys: Vec<_> = locations
        .iter()
        .map(|location| location.object.key.clone())
        .collect();
    match context
        .runtime
        .block_on(async move { store.check_readable(&keys).await })
    {
        Err(error)
            if matches!(
                error.kind,
                strata_storage::StorageErrorKind::RestoreRequired { .. }
            ) =>
        {
            info!(%error, "retrieve of archived instances refused until they are restored");
            Err(status::OUT_OF_RESOURCES_SUB_OPERATIONS)
        }
        _ => Ok(locations),
    }
}

/// Reads a stored object whole.
fn read_object(
    context: &AssociationContext,
    location: &InstanceLocation,
) -> Result<Vec<u8>, String> {
    let store = context.services.store.clone();
    let key = location.object.key.clone();
    context.runtime.block_on(async move {
        let (size, stream) = store.get(&key).await.map_err(|error| error.to_string())?;
        let mut bytes = Vec::with_capacity(size as usize);
        let mut stream = stream;
        while let Some(chunk) = stream.try_next().await.map_err(|error| error.to_string())? {
            bytes.extend_from_slice(&chunk);
        }
        Ok(bytes)
    })
}

/// Sends every location as a C-STORE sub-operation through `send`, with a pending response
/// through `pending` after each; stops early on C-CANCEL.
fn run_sub_operations(
    context: &AssociationContext,
    locations: &[InstanceLocation],
    mut send: impl FnMut(&str, &str, &str, &[u8]) -> Result<StoreScuOutcome, DimseError>,
    mut pending: impl FnMut(Progress) -> Result<bool, DimseError>,
) -> Result<(Progress, bool), DimseError> {
    let mut progress = Progress {
        remaining: locations.len().min(usize::from(u16::MAX)) as u16,
        ..Progress::default()
    };
    for location in locations {
        progress.remaining = progress.remaining.saturating_sub(1);
        let outcome = read_object(context, location).and_then(|bytes| {
            let parts = read_part10(&bytes).map_err(|error| error.to_string())?;
            // The catalog's UIDs are those of the data set; a File Meta group written by
            // another system may disagree with it.
            send(
                &location.sop_class_uid,
                location.sop_instance_uid.as_ref(),
                &parts.transfer_syntax_uid,
                &bytes[parts.data_set_offset..],
            )
            .map_err(|error| error.to_string())
        });
        match outcome {
            Ok(StoreScuOutcome::Status(status::SUCCESS)) => progress.completed += 1,
            Ok(StoreScuOutcome::Status(code)) if code & 0xF000 == 0xB000 => progress.warning += 1,
            Ok(other) => {
                info!(sop_instance_uid = %location.sop_instance_uid, outcome = ?other, "sub-operation failed");
                progress.failed += 1;
            }
            Err(error) => {
                warn!(sop_instance_uid = %location.sop_instance_uid, %error, "sub-operation failed");
                progress.failed += 1;
            }
        }
        if progress.remaining > 0 && pending(progress)? {
            return Ok((progress, true));
        }
    }
    Ok((progress, false))
}

fn final_status(progress: Progress, cancelled: bool) -> u16 {
    if cancelled {
        status::CANCEL
    } else if progress.failed > 0 || progress.warning > 0 {
        status::SUB_OPERATIONS_WITH_FAILURES
    } else {
        status::SUCCESS
    }
}

/// Returns true when the peer sent a C-CANCEL-RQ.
fn cancelled(channel: &mut Channel) -> Result<bool, DimseError> {
    if !channel.peer_has_sent() {
        return Ok(false);
    }
    match channel.read_command()? {
        Some((_, command)) => Ok(command.command_field() == Some(command_field::C_CANCEL_RQ)),
        None => Err(DimseError::aborted("peer released during a retrieve")),
    }
}

pub(crate) fn handle_move(
    channel: &mut Channel,
    presentation_context: &AcceptedContext,
    command: &Command,
    identifier_bytes: &[u8],
    context: &AssociationContext,
) -> Result<(), DimseError> {
    let respond = |channel: &mut Channel, response: Command| {
        channel.send_message(presentation_context.id, &response, None)
    };
    let destination = command.string(tags::MOVE_DESTINATION).unwrap_or_default();
    // Case-insensitive: peers given as environment variables arrive lowercased.
    let Some(address) = context
        .settings
        .peers
        .iter()
        .find(|(ae_title, _)| ae_title.eq_ignore_ascii_case(&destination))
        .map(|(_, address)| address.clone())
    else {
        info!(%destination, "c-move to an unknown destination refused");
        let response = Command::response_to(
            command,
            command_field::C_MOVE_RSP,
            status::MOVE_DESTINATION_UNKNOWN,
        );
        return respond(channel, response);
    };
    let locations = match resolve(identifier_bytes, presentation_context, context) {
        Ok(locations) => locations,
        Err(code) => {
            return respond(
                channel,
                Command::response_to(command, command_field::C_MOVE_RSP, code),
            );
        }
    };
    let mut pairs: Vec<(String, String)> = locations
        .iter()
        .map(|location| {
            (
                location.sop_class_uid.clone(),
                location.transfer_syntax_uid.clone(),
            )
        })
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    pairs.truncate(128);
    let mut store_scu = if locations.is_empty() {
        None
    } else {
        let settings = &context.settings;
        let tls = settings
            .tls_peers
            .iter()
            .any(|ae_title| ae_title.eq_ignore_ascii_case(&destination))
            .then_some(settings.peer_tls.as_ref())
            .flatten();
        match StoreScu::connect_with(&address, &settings.ae_title, &destination, &pairs, tls) {
            Ok(store_scu) => Some(store_scu),
            Err(error) => {
                warn!(%error, %destination, "c-move destination unreachable");
                let response = Command::response_to(
                    command,
                    command_field::C_MOVE_RSP,
                    status::OUT_OF_RESOURCES_SUB_OPERATIONS,
                );
                return respond(
                    channel,
                    with_counts(
                        response,
                        Progress {
                            failed: locations.len() as u16,
                            ..Progress::default()
                        },
                        false,
                    ),
                );
            }
        }
    };
    let message_id = command.u16(tags::MESSAGE_ID).unwrap_or(0);
    let calling_ae_title = context.calling_ae_title.clone();
    let (progress, was_cancelled) = {
        let channel_cell = std::cell::RefCell::new(&mut *channel);
        run_sub_operations(
            context,
            &locations,
            |sop_class_uid, sop_instance_uid, transfer_syntax_uid, data_set| {
                let store_scu = store_scu
                    .as_mut()
                    .expect("an association exists when there are instances");
                store_scu.store(
                    sop_class_uid,
                    sop_instance_uid,
                    transfer_syntax_uid,
                    data_set,
                    Some((&calling_ae_title, message_id)),
                )
            },
            |progress| {
                let mut channel = channel_cell.borrow_mut();
                if cancelled(&mut channel)? {
                    return Ok(true);
                }
                let response =
                    Command::response_to(command, command_field::C_MOVE_RSP, status::PENDING);
                channel.send_message(
                    presentation_context.id,
                    &with_counts(response, progress, true),
                    None,
                )?;
                Ok(false)
            },
        )?
    };
    if let Some(store_scu) = store_scu {
        let _ = store_scu.release();
    }
    info!(
        %destination,
        num_completed = progress.completed,
        num_failed = progress.failed,
        num_warning = progress.warning,
        "c-move finished"
    );
    let response = Command::response_to(
        command,
        command_field::C_MOVE_RSP,
        final_status(progress, was_cancelled),
    );
    respond(channel, with_counts(response, progress, was_cancelled))
}

pub(crate) fn handle_get(
    channel: &mut Channel,
    contexts: &[AcceptedContext],
    presentation_context: &AcceptedContext,
    command: &Command,
    identifier_bytes: &[u8],
    context: &AssociationContext,
) -> Result<(), DimseError> {
    let locations = match resolve(identifier_bytes, presentation_context, context) {
        Ok(locations) => locations,
        Err(code) => {
            let response = Command::response_to(command, command_field::C_GET_RSP, code);
            return channel.send_message(presentation_context.id, &response, None);
        }
    };
    let channel_cell = std::cell::RefCell::new(&mut *channel);
    // A C-CANCEL-RQ that arrives while a sub-operation waits for its C-STORE-RSP.
    let cancel_requested = std::cell::Cell::new(false);
    let mut next_message_id = 1u16;
    let (progress, was_cancelled) = run_sub_operations(
        context,
        &locations,
        |sop_class_uid, sop_instance_uid, transfer_syntax_uid, data_set| {
            let mut channel = channel_cell.borrow_mut();
            let Some((store_context, data_set)) =
                crate::scu::context_for(contexts, sop_class_uid, transfer_syntax_uid, data_set)
            else {
                return Ok(StoreScuOutcome::NoContext);
            };
            let mut request = Command::new(command_field::C_STORE_RQ);
            request
                .put_u16(tags::MESSAGE_ID, next_message_id)
                .put_uid(tags::AFFECTED_SOP_CLASS_UID, sop_class_uid)
                .put_uid(tags::AFFECTED_SOP_INSTANCE_UID, sop_instance_uid)
                .put_u16(tags::PRIORITY, 0)
                .put_u16(
                    tags::COMMAND_DATA_SET_TYPE,
                    crate::message::DATA_SET_PRESENT,
                );
            next_message_id = next_message_id.wrapping_add(1).max(1);
            channel.send_message(store_context.id, &request, Some(&data_set))?;
            // The requester may send C-CANCEL while we wait for the C-STORE-RSP.
            loop {
                let Some((_, response)) = channel.read_command()? else {
                    return Err(DimseError::aborted("peer released during a C-GET"));
                };
                match response.command_field() {
                    Some(command_field::C_STORE_RSP) => {
                        return Ok(StoreScuOutcome::Status(
                            response.status().unwrap_or(status::PROCESSING_FAILURE),
                        ));
                    }
                    // Honoured after this sub-operation completes (PS3.4 C.4.3.3.1).
                    Some(command_field::C_CANCEL_RQ) => cancel_requested.set(true),
                    _ => {}
                }
            }
        },
        |progress| {
            let mut channel = channel_cell.borrow_mut();
            if cancel_requested.get() || cancelled(&mut channel)? {
                return Ok(true);
            }
            let response = Command::response_to(command, command_field::C_GET_RSP, status::PENDING);
            channel.send_message(
                presentation_context.id,
                &with_counts(response, progress, true),
                None,
            )?;
            Ok(false)
        },
    )?;
    info!(
        num_completed = progress.completed,
        num_failed = progress.failed,
        num_warning = progress.warning,
        "c-get finished"
    );
    let response = Command::response_to(
        command,
        command_field::C_GET_RSP,
        final_status(progress, was_cancelled),
    );
    let mut channel = channel_cell.borrow_mut();
    channel.send_message(
        presentation_context.id,
        &with_counts(response, progress, was_cancelled),
        None,
    )
}
