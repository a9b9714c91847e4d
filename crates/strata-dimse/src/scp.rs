//! The association loop of the SCP: reads commands and dispatches C-ECHO, C-STORE, C-FIND,
//! C-MOVE and C-GET. Runs on a blocking thread; async services are driven through the
//! runtime handle.

use std::time::Instant;

use dicom_dictionary_std::tags;
use dicom_ul::pdu::{AbortRQSource, Pdu, PresentationContextResultReason};
use strata_ingest::{IngestOutcome, IngestSource};
use tracing::{Instrument, info, warn};

use crate::error::DimseError;
use crate::listener::AssociationContext;
use crate::message::{Command, command_field, status};
use crate::transport::{Channel, Link};

/// An accepted presentation context.
#[derive(Debug, Clone)]
pub(crate) struct AcceptedContext {
    pub(crate) id: u8,
    pub(crate) abstract_syntax: String,
    pub(crate) transfer_syntax: String,
}

pub(crate) fn accepted_contexts(
    contexts: &[dicom_ul::pdu::PresentationContextNegotiated],
) -> Vec<AcceptedContext> {
    contexts
        .iter()
        .filter(|context| context.reason == PresentationContextResultReason::Acceptance)
        .map(|context| AcceptedContext {
            id: context.id,
            abstract_syntax: context
                .abstract_syntax
                .trim_end_matches(['\0', ' '])
                .to_owned(),
            transfer_syntax: context
                .transfer_syntax
                .trim_end_matches(['\0', ' '])
                .to_owned(),
        })
        .collect()
}

pub(crate) fn serve_association(
    association: Link,
    context: &AssociationContext,
) -> Result<(), DimseError> {
    let contexts = accepted_contexts(association.presentation_contexts());
    let mut channel = Channel::new(association);
    let result = serve_commands(&mut channel, &contexts, context);
    if let Err(error) = &result
        && error.kind == crate::DimseErrorKind::Protocol
    {
        let _ = channel.send_pdu(&Pdu::AbortRQ {
            source: AbortRQSource::ServiceUser,
        });
    }
    result
}

fn serve_commands(
    channel: &mut Channel,
    contexts: &[AcceptedContext],
    context: &AssociationContext,
) -> Result<(), DimseError> {
    loop {
        let Some((context_id, command)) = channel.read_command()? else {
            return Ok(());
        };
        let Some(presentation_context) = contexts.iter().find(|pc| pc.id == context_id) else {
            return Err(DimseError::protocol(format!(
                "message on presentation context {context_id}, which was not accepted"
            )));
        };
        let started = Instant::now();
        channel.last_status = None;
        let mut queried = None;
        let handled = serve_command(
            channel,
            contexts,
            presentation_context,
            &command,
            context,
            &mut queried,
        );
        audit_command(
            &command,
            queried,
            context,
            channel.last_status,
            &handled,
            started,
        );
        handled?;
    }
}

/// Writes the audit record of one operation: its name, the SOP Instance UID it stores (or,
/// for a query or retrieval, `queried`: its level and Study Instance UID, never other keys of
/// the identifier, which may hold patient data), the calling AE title and the final status
/// sent (docs/security.md).
fn audit_command(
    command: &Command,
    queried: Option<String>,
    context: &AssociationContext,
    final_status: Option<u16>,
    handled: &Result<(), DimseError>,
    started: Instant,
) {
    let action = match command.command_field() {
        Some(command_field::C_ECHO_RQ) => "C-ECHO",
        Some(command_field::C_STORE_RQ) => "C-STORE",
        Some(command_field::C_FIND_RQ) => "C-FIND",
        Some(command_field::C_MOVE_RQ) => "C-MOVE",
        Some(command_field::C_GET_RQ) => "C-GET",
        // A late cancel changes nothing; unknown commands end the association (logged).
        _ => return,
    };
    let resource = command
        .string(tags::AFFECTED_SOP_INSTANCE_UID)
        .or(queried)
        .or_else(|| command.string(tags::AFFECTED_SOP_CLASS_UID))
        .unwrap_or_default();
    let outcome = match (handled, final_status) {
        (Err(error), _) => format!("failed: {:?}", error.kind),
        (Ok(()), Some(status)) => format!("0x{status:04X}"),
        (Ok(()), None) => "no response".to_owned(),
    };
    strata_telemetry::audit::record(strata_telemetry::audit::AuditRecord {
        protocol: "dimse",
        action: action.to_owned(),
        resource,
        principal: context.calling_ae_title.clone(),
        remote_addr: Some(context.peer_addr.to_string()),
        outcome,
        duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
    });
}

/// Serves one operation of the association.
fn serve_command(
    channel: &mut Channel,
    contexts: &[AcceptedContext],
    presentation_context: &AcceptedContext,
    command: &Command,
    context: &AssociationContext,
    queried: &mut Option<String>,
) -> Result<(), DimseError> {
    let context_id = presentation_context.id;
    match command.command_field() {
        Some(command_field::C_ECHO_RQ) => {
            if command.has_data_set() {
                channel.read_data_set()?;
            }
            let response =
                Command::response_to(command, command_field::C_ECHO_RSP, status::SUCCESS);
            channel.send_message(context_id, &response, None)?;
        }
        Some(command_field::C_STORE_RQ) => {
            handle_store(channel, presentation_context, command, context)?;
        }
        Some(command_field::C_FIND_RQ) => {
            let identifier = channel.read_data_set()?;
            *queried = audited_query(&identifier, &presentation_context.transfer_syntax);
            crate::find::handle_find(channel, presentation_context, command, &identifier, context)?;
        }
        Some(command_field::C_MOVE_RQ) => {
            let identifier = channel.read_data_set()?;
            *queried = audited_query(&identifier, &presentation_context.transfer_syntax);
            crate::retrieve::handle_move(
                channel,
                presentation_context,
                command,
                &identifier,
                context,
            )?;
        }
        Some(command_field::C_GET_RQ) => {
            let identifier = channel.read_data_set()?;
            *queried = audited_query(&identifier, &presentation_context.transfer_syntax);
            crate::retrieve::handle_get(
                channel,
                contexts,
                presentation_context,
                command,
                &identifier,
                context,
            )?;
        }
        // A cancel for an operation that already finished: nothing to do (PS3.7 §9.3.2.3).
        Some(command_field::C_CANCEL_RQ) => {}
        other => {
            return Err(DimseError::protocol(format!(
                "unsupported command field {other:?}"
            )));
        }
    }
    Ok(())
}

/// Drains a C-STORE data set that will not be stored and answers with `reason` (and an Error
/// Comment when given), keeping the association in step.
fn refuse_store(
    channel: &mut Channel,
    presentation_context: &AcceptedContext,
    command: &Command,
    sop_instance_uid: &str,
    reason: strata_ingest::FailureReason,
    comment: Option<&str>,
) -> Result<(), DimseError> {
    channel.read_data_set_with(|_| Ok(()))?;
    let mut response = Command::response_to(command, command_field::C_STORE_RSP, reason.code());
    response.put_uid(tags::AFFECTED_SOP_INSTANCE_UID, sop_instance_uid);
    if let Some(comment) = comment {
        response.put_text(tags::ERROR_COMMENT, dicom_core::VR::LO, comment);
    }
    channel.send_message(presentation_context.id, &response, None)
}

/// Receives a C-STORE data set straight into a spool file (after a Part 10 header built from
/// the command and the presentation context), runs the ingest pipeline and answers once the
/// instance is durable. See PS3.4 Annex B.2.3 for the statuses.
fn handle_store(
    channel: &mut Channel,
    presentation_context: &AcceptedContext,
    command: &Command,
    context: &AssociationContext,
) -> Result<(), DimseError> {
    let sop_class_uid = command
        .string(tags::AFFECTED_SOP_CLASS_UID)
        .unwrap_or_default();
    let sop_instance_uid = command
        .string(tags::AFFECTED_SOP_INSTANCE_UID)
        .unwrap_or_default();
    if !context.settings.serve_storage {
        // A gateway-only process negotiates storage contexts for C-GET, but stores nothing.
        return refuse_store(
            channel,
            presentation_context,
            command,
            &sop_instance_uid,
            strata_ingest::FailureReason::SopClassNotSupported,
            Some("this process does not run the ingest role"),
        );
    }
    let mut header = Vec::with_capacity(512);
    if let Err(error) = strata_dicom::write_part10_header(
        &mut header,
        &sop_class_uid,
        &sop_instance_uid,
        &presentation_context.transfer_syntax,
    ) {
        // Nothing to store without the UIDs: drain the data set and refuse it.
        info!(error = %error.reason, "c-store without usable UIDs refused");
        return refuse_store(
            channel,
            presentation_context,
            command,
            &sop_instance_uid,
            strata_ingest::FailureReason::DataSetDoesNotMatchSopClass,
            None,
        );
    }

    let pipeline = &context.services.pipeline;
    let source = IngestSource {
        protocol: "c-store".to_owned(),
        calling_ae_title: Some(context.calling_ae_title.clone()),
        remote_addr: Some(context.peer_addr.to_string()),
    };
    // The association thread may block: fragments go straight into the spool file, with no
    // hand-off to the async runtime per PDU.
    let settings = pipeline.settings();
    let mut spool_result =
        strata_ingest::SpoolWriter::create(&settings.spool_dir, settings.max_object_bytes)
            .and_then(|mut writer| writer.write(&header).map(|()| writer));
    let received = channel.read_data_set_with(|fragment| {
        // After a failure (too large, disk full) keep draining the data set so that the
        // association stays in step; the error is the answer.
        if let Ok(writer) = &mut spool_result
            && let Err(error) = writer.write(fragment)
        {
            spool_result = Err(error);
        }
        Ok(())
    });
    // A peer that vanished mid-transfer ends the association here; the spool file is
    // dropped, nothing is stored.
    received?;
    let outcome = match spool_result.and_then(strata_ingest::SpoolWriter::finish) {
        Ok(spooled) => Ok(context
            .runtime
            .block_on(pipeline.ingest(spooled, &source, None).in_current_span())),
        Err(error) => Err(error),
    };

    let (status_code, error_comment) = match outcome {
        Ok(IngestOutcome::Stored(stored)) => {
            info!(
                sop_instance_uid = %stored.sop_instance_uid,
                newly_stored = stored.newly_stored,
                "instance stored via c-store"
            );
            match stored.warning {
                Some((reason, message)) => (reason.code(), Some(message)),
                None => (status::SUCCESS, None),
            }
        }
        Ok(IngestOutcome::Refused {
            reason, message, ..
        }) => {
            info!(sop_instance_uid = %sop_instance_uid, status = reason.code(), "c-store refused");
            (reason.code(), Some(message))
        }
        Err(strata_ingest::IngestError::TooLarge { limit }) => (
            strata_ingest::FailureReason::OutOfResources.code(),
            Some(format!("the instance is larger than {limit} bytes")),
        ),
        Err(error) => {
            warn!(%error, "c-store failed");
            (
                status::PROCESSING_FAILURE,
                Some("internal error".to_owned()),
            )
        }
    };
    let mut response = Command::response_to(command, command_field::C_STORE_RSP, status_code);
    response.put_uid(tags::AFFECTED_SOP_INSTANCE_UID, &sop_instance_uid);
    if let Some(comment) = error_comment.filter(|_| status_code != status::SUCCESS) {
        let mut comment: String = comment.chars().filter(char::is_ascii).take(64).collect();
        comment = comment.replace('\\', "/");
        response.put_text(tags::ERROR_COMMENT, dicom_core::VR::LO, &comment);
    }
    channel.send_message(presentation_context.id, &response, None)
}

/// The query / retrieve level and Study Instance UID of an identifier, for the audit trail
/// (`STUDY 1.2.840...`). A Study Instance UID that is not made of UID characters is left out:
/// it could be patient data typed into the wrong field.
fn audited_query(identifier: &[u8], transfer_syntax_uid: &str) -> Option<String> {
    let identifier = crate::find::decode_identifier(identifier, transfer_syntax_uid).ok()?;
    let level = crate::find::element_text(&identifier, tags::QUERY_RETRIEVE_LEVEL)
        .filter(|level| level.chars().all(|c| c.is_ascii_uppercase()))?;
    let study = crate::find::element_text(&identifier, tags::STUDY_INSTANCE_UID).filter(|uid| {
        uid.chars()
            .all(|c| c.is_ascii_digit() || c == '.' || c == '\\')
    });
    Some(match study {
        Some(study) => format!("{level} {study}"),
        None => level,
    })
}
