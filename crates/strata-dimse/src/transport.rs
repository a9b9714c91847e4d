//! P-DATA transport: reading presentation data values one at a time from an association
//! (reassembly) and writing messages fragmented to the peer's maximum PDU length.

use std::collections::VecDeque;
use std::net::TcpStream;

use dicom_ul::association::SyncAssociation;
use dicom_ul::pdu::{PDataValue, PDataValueType, Pdu};
use dicom_ul::{ClientAssociation, ServerAssociation};

use crate::error::DimseError;
use crate::message::Command;

/// The PDV item header inside a P-DATA-TF PDU: 4-byte length, context ID, control header.
const PDV_HEADER_BYTES: u32 = 6;

/// An established association, from either side.
pub(crate) enum Link {
    Server(ServerAssociation<TcpStream>),
    Client(ClientAssociation<TcpStream>),
}

/// What the peer sent instead of a PDV.
#[derive(Debug)]
pub(crate) enum PeerEnd {
    /// The peer asked for an orderly release (answered) or released.
    Released,
}

/// One side of an association with a queue of received but unconsumed PDVs.
pub(crate) struct Channel {
    pub(crate) link: Link,
    pending: VecDeque<PDataValue>,
    /// The largest PDU the peer accepts (its max length, or a bound when it gave 0).
    peer_max_pdu: u32,
}

impl Channel {
    pub(crate) fn new(link: Link) -> Self {
        let peer_max_pdu = match &link {
            Link::Server(association) => association.requestor_max_pdu_length(),
            Link::Client(association) => association.acceptor_max_pdu_length(),
        };
        let peer_max_pdu = if peer_max_pdu == 0 {
            1 << 20
        } else {
            peer_max_pdu.min(1 << 22)
        };
        Self {
            link,
            pending: VecDeque::new(),
            peer_max_pdu,
        }
    }

    pub(crate) fn stream(&mut self) -> &mut TcpStream {
        match &mut self.link {
            Link::Server(association) => association.inner_stream(),
            Link::Client(association) => association.inner_stream(),
        }
    }

    fn receive_pdu(&mut self) -> Result<Pdu, DimseError> {
        let result = match &mut self.link {
            Link::Server(association) => association.receive(),
            Link::Client(association) => association.receive(),
        };
        result.map_err(|error| DimseError::aborted(format!("connection failed: {error}")))
    }

    pub(crate) fn send_pdu(&mut self, pdu: &Pdu) -> Result<(), DimseError> {
        let result = match &mut self.link {
            Link::Server(association) => association.send(pdu),
            Link::Client(association) => association.send(pdu),
        };
        result.map_err(|error| DimseError::aborted(format!("failed to send: {error}")))
    }

    /// Returns the next PDV, reading PDUs as needed. A release request is answered and
    /// reported as `Err(PeerEnd::Released)`; an abort or a dropped connection is an error.
    pub(crate) fn next_pdv(&mut self) -> Result<Result<PDataValue, PeerEnd>, DimseError> {
        loop {
            if let Some(pdv) = self.pending.pop_front() {
                return Ok(Ok(pdv));
            }
            match self.receive_pdu()? {
                Pdu::PData { data } => self.pending.extend(data),
                Pdu::ReleaseRQ => {
                    self.send_pdu(&Pdu::ReleaseRP)?;
                    return Ok(Err(PeerEnd::Released));
                }
                Pdu::ReleaseRP => return Ok(Err(PeerEnd::Released)),
                Pdu::AbortRQ { source } => {
                    return Err(DimseError::aborted(format!("peer aborted: {source:?}")));
                }
                other => {
                    return Err(DimseError::protocol(format!(
                        "unexpected PDU: {}",
                        other.short_description()
                    )));
                }
            }
        }
    }

    /// Returns whether PDUs are waiting on the socket (used to notice C-CANCEL between
    /// pending responses without blocking).
    pub(crate) fn peer_has_sent(&mut self) -> bool {
        if !self.pending.is_empty() {
            return true;
        }
        // dicom-ul may already hold the next PDU's bytes in its read buffer.
        let buffered = match &mut self.link {
            Link::Server(association) => !SyncAssociation::get_mut(association).1.is_empty(),
            Link::Client(association) => !SyncAssociation::get_mut(association).1.is_empty(),
        };
        if buffered {
            return true;
        }
        let stream = self.stream();
        if stream.set_nonblocking(true).is_err() {
            return false;
        }
        let mut byte = [0u8; 1];
        let available = matches!(stream.peek(&mut byte), Ok(n) if n > 0);
        let _ = stream.set_nonblocking(false);
        available
    }

    /// Reads a whole command set; `Ok(None)` when the peer released instead.
    pub(crate) fn read_command(&mut self) -> Result<Option<(u8, Command)>, DimseError> {
        let mut bytes = Vec::new();
        loop {
            let pdv = match self.next_pdv()? {
                Ok(pdv) => pdv,
                Err(PeerEnd::Released) => return Ok(None),
            };
            if pdv.value_type != PDataValueType::Command {
                return Err(DimseError::protocol(
                    "data set fragment received where a command was expected",
                ));
            }
            bytes.extend_from_slice(&pdv.data);
            if pdv.is_last {
                return Ok(Some((
                    pdv.presentation_context_id,
                    Command::decode(&bytes)?,
                )));
            }
        }
    }

    /// Reads a whole (small) data set into memory: query identifiers.
    pub(crate) fn read_data_set(&mut self) -> Result<Vec<u8>, DimseError> {
        let mut bytes = Vec::new();
        self.read_data_set_with(|fragment| {
            bytes.extend_from_slice(fragment);
            Ok(())
        })?;
        Ok(bytes)
    }

    /// Streams the data set fragments of the current message to `sink`.
    pub(crate) fn read_data_set_with(
        &mut self,
        mut sink: impl FnMut(&[u8]) -> Result<(), DimseError>,
    ) -> Result<(), DimseError> {
        loop {
            let pdv = match self.next_pdv()? {
                Ok(pdv) => pdv,
                Err(PeerEnd::Released) => {
                    return Err(DimseError::aborted(
                        "peer released in the middle of a data set",
                    ));
                }
            };
            if pdv.value_type != PDataValueType::Data {
                return Err(DimseError::protocol(
                    "command fragment received in the middle of a data set",
                ));
            }
            sink(&pdv.data)?;
            if pdv.is_last {
                return Ok(());
            }
        }
    }

    /// Sends one message: the command, then the data set (if any), each fragmented to the
    /// peer's maximum PDU length.
    pub(crate) fn send_message(
        &mut self,
        presentation_context_id: u8,
        command: &Command,
        data_set: Option<&[u8]>,
    ) -> Result<(), DimseError> {
        let command_bytes = command.encode()?;
        self.send_fragments(
            presentation_context_id,
            PDataValueType::Command,
            &command_bytes,
        )?;
        if let Some(data_set) = data_set {
            self.send_fragments(presentation_context_id, PDataValueType::Data, data_set)?;
        }
        Ok(())
    }

    fn send_fragments(
        &mut self,
        presentation_context_id: u8,
        value_type: PDataValueType,
        bytes: &[u8],
    ) -> Result<(), DimseError> {
        let max_fragment = (self.peer_max_pdu - PDV_HEADER_BYTES) as usize;
        let mut chunks = bytes.chunks(max_fragment.max(1)).peekable();
        if bytes.is_empty() {
            return self.send_pdu(&Pdu::PData {
                data: vec![PDataValue {
                    presentation_context_id,
                    value_type,
                    is_last: true,
                    data: Vec::new(),
                }],
            });
        }
        while let Some(chunk) = chunks.next() {
            let is_last = chunks.peek().is_none();
            self.send_pdu(&Pdu::PData {
                data: vec![PDataValue {
                    presentation_context_id,
                    value_type: value_type.clone(),
                    is_last,
                    data: chunk.to_vec(),
                }],
            })?;
        }
        Ok(())
    }
}
