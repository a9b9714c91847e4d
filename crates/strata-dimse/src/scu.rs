//! The SCU side: C-ECHO and C-STORE over an association this node requests. Used by C-MOVE
//! sub-operations and by `strata echo` / `strata store`.

use std::sync::Arc;
use std::time::Duration;

use dicom_dictionary_std::{tags, uids};
use dicom_ul::ClientAssociationOptions;
use dicom_ul::pdu::Pdu;

use crate::error::DimseError;
use crate::message::{Command, DATA_SET_PRESENT, NO_DATA_SET, command_field};
use crate::scp::{AcceptedContext, accepted_contexts};
use crate::transfer_syntaxes::UNCOMPRESSED_TRANSFER_SYNTAXES;
use crate::transport::{Channel, Link};

const SCU_TIMEOUT: Duration = Duration::from_secs(60);

fn connect(
    options: ClientAssociationOptions<'_>,
    calling_ae_title: &str,
    called_ae_title: &str,
    address: &str,
    tls: Option<&Arc<rustls::ClientConfig>>,
) -> Result<Channel, DimseError> {
    let options = options
        .calling_ae_title(calling_ae_title.to_owned())
        .called_ae_title(called_ae_title.to_owned())
        .max_pdu_length(65536)
        .read_timeout(SCU_TIMEOUT)
        .write_timeout(SCU_TIMEOUT)
        .connection_timeout(Duration::from_secs(10));
    let failed = |error: dicom_ul::association::Error| {
        DimseError::association(format!(
            "association with {called_ae_title}@{address} failed: {error}"
        ))
    };
    let link = match tls {
        Some(tls) => {
            // The certificate must name the host of the peer's address (DNS name or IP).
            let host = address
                .rsplit_once(':')
                .map_or(address, |(host, _)| host)
                .trim_start_matches('[')
                .trim_end_matches(']');
            let association = options
                .tls_config(tls.clone())
                .server_name(host)
                .establish_with_tls(address)
                .map_err(failed)?;
            Link::ClientTls(Box::new(association))
        }
        None => Link::Client(options.establish_with(address).map_err(failed)?),
    };
    let mut link = link;
    // Nagle's algorithm delays the small command PDUs by up to 40 ms each.
    let _ = link.wire().socket().set_nodelay(true);
    Ok(Channel::new(link))
}

fn release(mut channel: Channel) -> Result<(), DimseError> {
    channel.send_pdu(&Pdu::ReleaseRQ)?;
    // The reply is A-RELEASE-RP; a peer closing the socket right away is fine too.
    let _ = channel.next_pdv();
    Ok(())
}

/// Sends a C-ECHO to `called_ae_title` at `address` (`HOST:PORT`) and returns its status.
/// See PS3.7 §9.1.5.
pub fn echo(
    address: &str,
    calling_ae_title: &str,
    called_ae_title: &str,
) -> Result<u16, DimseError> {
    let options = ClientAssociationOptions::new().with_presentation_context(
        uids::VERIFICATION,
        vec![
            uids::EXPLICIT_VR_LITTLE_ENDIAN,
            uids::IMPLICIT_VR_LITTLE_ENDIAN,
        ],
    );
    let mut channel = connect(options, calling_ae_title, called_ae_title, address, None)?;
    let contexts = link_contexts(&channel);
    let Some(context) = contexts.first() else {
        return Err(DimseError::association(
            "the peer accepted no Verification context",
        ));
    };
    let mut request = Command::new(command_field::C_ECHO_RQ);
    request
        .put_u16(tags::MESSAGE_ID, 1)
        .put_uid(tags::AFFECTED_SOP_CLASS_UID, uids::VERIFICATION)
        .put_u16(tags::COMMAND_DATA_SET_TYPE, NO_DATA_SET);
    channel.send_message(context.id, &request, None)?;
    let response = read_response(&mut channel)?;
    release(channel)?;
    response
        .status()
        .ok_or_else(|| DimseError::protocol("C-ECHO-RSP without a status"))
}

fn link_contexts(channel: &Channel) -> Vec<AcceptedContext> {
    accepted_contexts(channel.link.presentation_contexts())
}

fn read_response(channel: &mut Channel) -> Result<Command, DimseError> {
    let Some((_, response)) = channel.read_command()? else {
        return Err(DimseError::aborted("the peer released before responding"));
    };
    if response.has_data_set() {
        channel.read_data_set()?;
    }
    Ok(response)
}

/// What one C-STORE sub-operation returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreScuOutcome {
    /// The peer answered with this status.
    Status(u16),
    /// No accepted presentation context fits the SOP class and transfer syntax.
    NoContext,
}

/// An association on which this node is the Storage SCU.
pub struct StoreScu {
    channel: Channel,
    contexts: Vec<AcceptedContext>,
    next_message_id: u16,
}

impl StoreScu {
    /// Requests an association proposing one presentation context per (SOP class, transfer
    /// syntax) pair (at most 128, PS3.8 §9.3.2.2).
    pub fn connect(
        address: &str,
        calling_ae_title: &str,
        called_ae_title: &str,
        pairs: &[(String, String)],
    ) -> Result<Self, DimseError> {
        Self::connect_with(address, calling_ae_title, called_ae_title, pairs, None)
    }

    /// [`StoreScu::connect`], over DICOM TLS with `tls` when given.
    pub fn connect_with(
        address: &str,
        calling_ae_title: &str,
        called_ae_title: &str,
        pairs: &[(String, String)],
        tls: Option<&Arc<rustls::ClientConfig>>,
    ) -> Result<Self, DimseError> {
        let mut options = ClientAssociationOptions::new();
        for (sop_class_uid, transfer_syntax_uid) in pairs.iter().take(128) {
            let mut transfer_syntaxes = vec![transfer_syntax_uid.clone()];
            if transfer_syntax_uid != uids::IMPLICIT_VR_LITTLE_ENDIAN {
                // Accepted by every SCP; used only if the data set is in it.
                transfer_syntaxes.push(uids::IMPLICIT_VR_LITTLE_ENDIAN.to_owned());
            }
            options = options.with_presentation_context(sop_class_uid.clone(), transfer_syntaxes);
        }
        let channel = connect(options, calling_ae_title, called_ae_title, address, tls)?;
        let contexts = link_contexts(&channel);
        Ok(Self::from_channel(channel, contexts))
    }

    pub(crate) fn from_channel(channel: Channel, contexts: Vec<AcceptedContext>) -> Self {
        Self {
            channel,
            contexts,
            next_message_id: 1,
        }
    }

    /// Sends one C-STORE-RQ with `data_set` (encoded in `transfer_syntax_uid`) and returns
    /// the peer's status. See PS3.7 §9.1.1.
    pub fn store(
        &mut self,
        sop_class_uid: &str,
        sop_instance_uid: &str,
        transfer_syntax_uid: &str,
        data_set: &[u8],
        move_originator: Option<(&str, u16)>,
    ) -> Result<StoreScuOutcome, DimseError> {
        let Some((context, data_set)) =
            context_for(&self.contexts, sop_class_uid, transfer_syntax_uid, data_set)
        else {
            return Ok(StoreScuOutcome::NoContext);
        };
        let data_set = data_set.as_ref();
        let message_id = self.next_message_id;
        self.next_message_id = self.next_message_id.wrapping_add(1).max(1);
        let mut request = Command::new(command_field::C_STORE_RQ);
        request
            .put_u16(tags::MESSAGE_ID, message_id)
            .put_uid(tags::AFFECTED_SOP_CLASS_UID, sop_class_uid)
            .put_uid(tags::AFFECTED_SOP_INSTANCE_UID, sop_instance_uid)
            .put_u16(tags::PRIORITY, 0)
            .put_u16(tags::COMMAND_DATA_SET_TYPE, DATA_SET_PRESENT);
        if let Some((originator_ae_title, originator_message_id)) = move_originator {
            request
                .put_text(
                    tags::MOVE_ORIGINATOR_APPLICATION_ENTITY_TITLE,
                    dicom_core::VR::AE,
                    originator_ae_title,
                )
                .put_u16(tags::MOVE_ORIGINATOR_MESSAGE_ID, originator_message_id);
        }
        self.channel
            .send_message(context.id, &request, Some(data_set))?;
        let response = read_response(&mut self.channel)?;
        Ok(StoreScuOutcome::Status(response.status().ok_or_else(
            || DimseError::protocol("C-STORE-RSP without a status"),
        )?))
    }

    /// Releases the association.
    pub fn release(self) -> Result<(), DimseError> {
        release(self.channel)
    }
}

/// Picks the presentation context for sending a data set: one with its own transfer syntax
/// (sent unaltered), else, for a native (uncompressed) data set, one with another native
/// transfer syntax, to which the data set is converted (pixel data unchanged).
pub(crate) fn context_for<'a>(
    contexts: &[AcceptedContext],
    sop_class_uid: &str,
    transfer_syntax_uid: &str,
    data_set: &'a [u8],
) -> Option<(AcceptedContext, std::borrow::Cow<'a, [u8]>)> {
    let for_class = || {
        contexts
            .iter()
            .filter(move |context| context.abstract_syntax == sop_class_uid)
    };
    if let Some(context) =
        for_class().find(|context| context.transfer_syntax == transfer_syntax_uid)
    {
        return Some((context.clone(), std::borrow::Cow::Borrowed(data_set)));
    }
    if !UNCOMPRESSED_TRANSFER_SYNTAXES.contains(&transfer_syntax_uid) {
        return None;
    }
    let context = for_class().find(|context| {
        UNCOMPRESSED_TRANSFER_SYNTAXES.contains(&context.transfer_syntax.as_str())
    })?;
    let converted = convert_native(data_set, transfer_syntax_uid, &context.transfer_syntax).ok()?;
    Some((context.clone(), std::borrow::Cow::Owned(converted)))
}

/// Re-encodes a native data set from one uncompressed transfer syntax to another.
fn convert_native(data_set: &[u8], from: &str, to: &str) -> Result<Vec<u8>, String> {
    use dicom_encoding::TransferSyntaxIndex;
    let registry = dicom_transfer_syntax_registry::TransferSyntaxRegistry;
    let from_syntax = registry.get(from).ok_or("unknown transfer syntax")?;
    let to_syntax = registry.get(to).ok_or("unknown transfer syntax")?;
    let object = dicom_object::InMemDicomObject::read_dataset_with_ts(data_set, from_syntax)
        .map_err(|error| error.to_string())?;
    let mut bytes = Vec::with_capacity(data_set.len());
    object
        .write_dataset_with_ts(&mut bytes, to_syntax)
        .map_err(|error| error.to_string())?;
    Ok(bytes)
}

/// The parts of a Part 10 file a C-STORE needs.
#[derive(Debug, Clone)]
pub struct Part10Parts {
    pub sop_class_uid: String,
    pub sop_instance_uid: String,
    pub transfer_syntax_uid: String,
    /// Where the data set starts (after the File Meta group).
    pub data_set_offset: usize,
}

/// Reads the File Meta group of a Part 10 file (with or without the 128-byte preamble).
pub fn read_part10(bytes: &[u8]) -> Result<Part10Parts, DimseError> {
    let meta_start = if bytes.len() >= 132 && &bytes[128..132] == b"DICM" {
        128
    } else if bytes.starts_with(b"DICM") {
        0
    } else {
        return Err(DimseError::protocol("not a DICOM Part 10 file"));
    };
    let meta = dicom_object::FileMetaTable::from_reader(&bytes[meta_start..])
        .map_err(|error| DimseError::protocol(format!("bad File Meta group: {error}")))?;
    let trim = |text: &str| text.trim_end_matches(['\0', ' ']).to_owned();
    Ok(Part10Parts {
        sop_class_uid: trim(meta.media_storage_sop_class_uid()),
        sop_instance_uid: trim(meta.media_storage_sop_instance_uid()),
        transfer_syntax_uid: trim(meta.transfer_syntax()),
        // "DICM", then (0002,0000) UL with its 12-byte element, then the group.
        data_set_offset: meta_start + 4 + 12 + meta.information_group_length as usize,
    })
}
