//! P-DATA transport: reading presentation data values one at a time from an association
//! (reassembly) and writing messages fragmented to the peer's maximum PDU length.

use std::collections::VecDeque;
use std::io::{Cursor, Read, Write};
use std::net::TcpStream;

use dicom_ul::association::SyncAssociation;
use dicom_ul::pdu::{PDataValue, PDataValueType, Pdu};
use dicom_ul::{ClientAssociation, ServerAssociation};

use crate::error::DimseError;
use crate::message::Command;

/// The PDV item header inside a P-DATA-TF PDU: 4-byte length, context ID, control header.
const PDV_HEADER_BYTES: u32 = 6;

/// A PDU header: type, reserved byte, 4-byte length of what follows.
const PDU_HEADER_BYTES: usize = 6;

/// The PDU type of P-DATA-TF (PS3.8 Section 9.3.5).
const PDATA_TF: u8 = 0x04;

/// The largest PDU other than P-DATA-TF accepted after negotiation (release and abort PDUs
/// are a few bytes; anything larger is a broken or hostile peer).
const MAX_CONTROL_PDU_BYTES: u32 = 64 * 1024;

/// The stream of an association accepted over DICOM TLS (PS3.15 Annex B).
pub(crate) type TlsServerStream = rustls::StreamOwned<rustls::ServerConnection, TcpStream>;

/// The stream of an association this node requested over DICOM TLS (a C-MOVE destination).
pub(crate) type TlsClientStream = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// An established association, from either side.
pub(crate) enum Link {
    Server(ServerAssociation<TcpStream>),
    /// Boxed: the TLS state is large, and an association is moved around while set up.
    ServerTls(Box<ServerAssociation<TlsServerStream>>),
    Client(ClientAssociation<TcpStream>),
    ClientTls(Box<ClientAssociation<TlsClientStream>>),
}

impl Link {
    /// The presentation contexts negotiated.
    pub(crate) fn presentation_contexts(&self) -> &[dicom_ul::pdu::PresentationContextNegotiated] {
        match self {
            Link::Server(association) => association.presentation_contexts(),
            Link::ServerTls(association) => association.presentation_contexts(),
            Link::Client(association) => association.presentation_contexts(),
            Link::ClientTls(association) => association.presentation_contexts(),
        }
    }

    /// The peer's AE title, without padding.
    pub(crate) fn peer_ae_title(&self) -> String {
        use dicom_ul::association::Association;
        let title = match self {
            Link::Server(association) => association.peer_ae_title(),
            Link::ServerTls(association) => association.peer_ae_title(),
            Link::Client(association) => association.peer_ae_title(),
            Link::ClientTls(association) => association.peer_ae_title(),
        };
        title.trim().to_owned()
    }

    /// The byte stream under the association: the socket, or TLS over it.
    pub(crate) fn wire(&mut self) -> &mut dyn Wire {
        match self {
            Link::Server(association) => association.inner_stream(),
            Link::ServerTls(association) => association.inner_stream(),
            Link::Client(association) => association.inner_stream(),
            Link::ClientTls(association) => association.inner_stream(),
        }
    }
}

/// A stream an association runs over: a TCP socket, or TLS over one.
pub(crate) trait Wire: Read + Write {
    /// The TCP socket underneath.
    fn socket(&self) -> &TcpStream;
    /// Whether decrypted bytes already wait to be read (always false without TLS).
    fn has_buffered_data(&mut self) -> bool;
}

impl Wire for TcpStream {
    fn socket(&self) -> &TcpStream {
        self
    }

    fn has_buffered_data(&mut self) -> bool {
        false
    }
}

/// TLS over a socket, on either side of the association.
impl<C, S> Wire for rustls::StreamOwned<C, TcpStream>
where
    C: std::ops::DerefMut + std::ops::Deref<Target = rustls::ConnectionCommon<S>>,
    S: rustls::SideData,
{
    fn socket(&self) -> &TcpStream {
        &self.sock
    }

    fn has_buffered_data(&mut self) -> bool {
        self.conn
            .process_new_packets()
            .is_ok_and(|state| state.plaintext_bytes_to_read() > 0)
    }
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
    /// The largest P-DATA-TF PDU we announced; a peer sending more breaks PS3.8 and is aborted.
    own_max_pdu: u32,
    /// Bytes dicom-ul read past the association negotiation, read before the socket.
    read_ahead: Cursor<Vec<u8>>,
    /// The status of the last response sent (the final one of an operation; for audit).
    pub(crate) last_status: Option<u16>,
}

impl Channel {
    pub(crate) fn new(mut link: Link) -> Self {
        // From here on every PDU is read by `receive_pdu`; dicom-ul's buffer stays empty.
        let read_ahead = match &mut link {
            Link::Server(association) => SyncAssociation::get_mut(association).1.split(),
            Link::ServerTls(association) => SyncAssociation::get_mut(&mut **association).1.split(),
            Link::Client(association) => SyncAssociation::get_mut(association).1.split(),
            Link::ClientTls(association) => SyncAssociation::get_mut(&mut **association).1.split(),
        };
        let (peer_max_pdu, own_max_pdu) = match &link {
            Link::Server(association) => (
                association.requestor_max_pdu_length(),
                association.acceptor_max_pdu_length(),
            ),
            Link::ServerTls(association) => (
                association.requestor_max_pdu_length(),
                association.acceptor_max_pdu_length(),
            ),
            Link::Client(association) => (
                association.acceptor_max_pdu_length(),
                association.requestor_max_pdu_length(),
            ),
            Link::ClientTls(association) => (
                association.acceptor_max_pdu_length(),
                association.requestor_max_pdu_length(),
            ),
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
            own_max_pdu,
            read_ahead: Cursor::new(read_ahead.to_vec()),
            last_status: None,
        }
    }

    pub(crate) fn stream(&mut self) -> &mut dyn Wire {
        self.link.wire()
    }

    /// Reads the next PDU.
    ///
    /// P-DATA-TF PDUs carry nearly every byte of an association, so they are read here,
    /// straight from the socket into one buffer per PDV: dicom-ul 0.10's `receive` reads through
    /// a new 8 KiB buffer per call (eight system calls for a 64 KiB PDU) and copies each PDU
    /// three times before the data reaches its consumer. Other PDUs are small and parsed by
    /// dicom-ul.
    fn receive_pdu(&mut self) -> Result<Pdu, DimseError> {
        let own_max_pdu = self.own_max_pdu;
        let mut stream = self.link.wire();
        let read_ahead = &mut self.read_ahead;
        if read_ahead.position() < read_ahead.get_ref().len() as u64 {
            read_pdu(&mut read_ahead.chain(stream), own_max_pdu)
        } else {
            read_pdu(&mut stream, own_max_pdu)
        }
    }

    pub(crate) fn send_pdu(&mut self, pdu: &Pdu) -> Result<(), DimseError> {
        let result = match &mut self.link {
            Link::Server(association) => association.send(pdu),
            Link::ServerTls(association) => association.send(pdu),
            Link::Client(association) => association.send(pdu),
            Link::ClientTls(association) => association.send(pdu),
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
        // Bytes read ahead during the negotiation may hold the next PDU.
        if self.read_ahead.position() < self.read_ahead.get_ref().len() as u64 {
            return true;
        }
        let stream = self.stream();
        if stream.has_buffered_data() {
            return true;
        }
        // Over TLS, bytes on the socket are a record, nearly always of data (a key update is
        // the rare exception, and only delays the check until the next data arrives).
        let socket = stream.socket();
        if socket.set_nonblocking(true).is_err() {
            return false;
        }
        let mut byte = [0u8; 1];
        let available = matches!(socket.peek(&mut byte), Ok(n) if n > 0);
        let _ = socket.set_nonblocking(false);
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
        if let Some(status) = command.status() {
            self.last_status = Some(status);
        }
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
            return self.send_pdv(presentation_context_id, &value_type, true, &[]);
        }
        while let Some(chunk) = chunks.next() {
            let is_last = chunks.peek().is_none();
            self.send_pdv(presentation_context_id, &value_type, is_last, chunk)?;
        }
        Ok(())
    }

    /// Writes one P-DATA-TF PDU holding one PDV: its 12 header bytes and the fragment in one
    /// vectored write, without copying the fragment into a PDU buffer first.
    fn send_pdv(
        &mut self,
        presentation_context_id: u8,
        value_type: &PDataValueType,
        is_last: bool,
        fragment: &[u8],
    ) -> Result<(), DimseError> {
        use std::io::IoSlice;
        // Fragments are at most the peer's maximum PDU length (a u32), so these fit.
        let item_length = u32::try_from(fragment.len() + 2)
            .map_err(|_| DimseError::internal("PDV fragment too large"))?;
        let mut header = [0u8; PDU_HEADER_BYTES + PDV_HEADER_BYTES as usize];
        header[0] = PDATA_TF;
        header[2..6].copy_from_slice(&(item_length + 4).to_be_bytes());
        header[6..10].copy_from_slice(&item_length.to_be_bytes());
        header[10] = presentation_context_id;
        header[11] = u8::from(*value_type == PDataValueType::Command) | (u8::from(is_last) << 1);
        let stream = self.stream();
        let mut buffers = [IoSlice::new(&header), IoSlice::new(fragment)];
        let mut remaining = &mut buffers[..];
        while !remaining.is_empty() {
            match stream.write_vectored(remaining) {
                Ok(0) => return Err(DimseError::aborted("failed to send: connection closed")),
                Ok(written) => IoSlice::advance_slices(&mut remaining, written),
                Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
                Err(error) => return Err(DimseError::aborted(format!("failed to send: {error}"))),
            }
        }
        Ok(())
    }
}

/// Reads one PDU from `reader`: P-DATA-TF item by item, anything else (release, abort) whole
/// and parsed by dicom-ul.
fn read_pdu(reader: &mut impl Read, own_max_pdu: u32) -> Result<Pdu, DimseError> {
    let mut header = [0u8; PDU_HEADER_BYTES];
    read_exact(reader, &mut header)?;
    let length = u32::from_be_bytes([header[2], header[3], header[4], header[5]]);
    if header[0] == PDATA_TF {
        if length > own_max_pdu {
            return Err(DimseError::protocol(format!(
                "P-DATA-TF PDU of {length} bytes exceeds the maximum length negotiated \
                 ({own_max_pdu})"
            )));
        }
        return read_pdata_items(reader, length as usize).map(|data| Pdu::PData { data });
    }
    if length > MAX_CONTROL_PDU_BYTES {
        return Err(DimseError::protocol(format!(
            "PDU of type {:#04x} and {length} bytes is not expected on an established \
             association",
            header[0]
        )));
    }
    let mut bytes = Vec::with_capacity(PDU_HEADER_BYTES + length as usize);
    bytes.extend_from_slice(&header);
    read_to_vec(reader, &mut bytes, length as usize)?;
    match dicom_ul::pdu::read_pdu(&bytes[..], own_max_pdu, false) {
        Ok(Some(pdu)) => Ok(pdu),
        Ok(None) => Err(DimseError::protocol("truncated PDU")),
        Err(error) => Err(DimseError::protocol(format!("malformed PDU: {error}"))),
    }
}

/// Reads the PDV items of a P-DATA-TF PDU whose header has been read (PS3.8 Section 9.3.5.1),
/// each into a buffer of its own size.
fn read_pdata_items(
    reader: &mut impl Read,
    pdu_length: usize,
) -> Result<Vec<PDataValue>, DimseError> {
    let mut values = Vec::with_capacity(1);
    let mut remaining = pdu_length;
    while remaining > 0 {
        if remaining < PDV_HEADER_BYTES as usize {
            return Err(DimseError::protocol(
                "P-DATA-TF PDU ends inside a PDV item header",
            ));
        }
        let mut item = [0u8; PDV_HEADER_BYTES as usize];
        read_exact(reader, &mut item)?;
        // The item length counts the context ID and control header, not the length field.
        let item_length = u32::from_be_bytes([item[0], item[1], item[2], item[3]]) as usize;
        if item_length < 2 || item_length > remaining - 4 {
            return Err(DimseError::protocol(format!(
                "PDV item of {item_length} bytes does not fit its P-DATA-TF PDU"
            )));
        }
        let mut data = Vec::with_capacity(item_length - 2);
        read_to_vec(reader, &mut data, item_length - 2)?;
        let control_header = item[5];
        values.push(PDataValue {
            presentation_context_id: item[4],
            value_type: if control_header & 0x01 != 0 {
                PDataValueType::Command
            } else {
                PDataValueType::Data
            },
            is_last: control_header & 0x02 != 0,
            data,
        });
        remaining -= 4 + item_length;
    }
    Ok(values)
}

/// Fills `buffer` from the socket; a closed or failed connection aborts the association.
fn read_exact(reader: &mut impl Read, buffer: &mut [u8]) -> Result<(), DimseError> {
    reader.read_exact(buffer).map_err(connection_error)
}

/// Appends exactly `length` bytes from the socket to `buffer` (into its spare capacity, without
/// zero-filling it first).
fn read_to_vec(
    reader: &mut impl Read,
    buffer: &mut Vec<u8>,
    length: usize,
) -> Result<(), DimseError> {
    let read = reader
        .by_ref()
        .take(length as u64)
        .read_to_end(buffer)
        .map_err(connection_error)?;
    if read < length {
        return Err(DimseError::aborted(
            "connection closed in the middle of a PDU",
        ));
    }
    Ok(())
}

fn connection_error(error: std::io::Error) -> DimseError {
    if error.kind() == std::io::ErrorKind::UnexpectedEof {
        DimseError::aborted("connection closed by the peer")
    } else {
        DimseError::aborted(format!("connection failed: {error}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A P-DATA-TF PDU with one PDV item.
    fn pdata(context_id: u8, control_header: u8, data: &[u8]) -> Vec<u8> {
        let item_length = u32::try_from(data.len() + 2).unwrap();
        let mut pdu = vec![PDATA_TF, 0];
        pdu.extend_from_slice(&(item_length + 4).to_be_bytes());
        pdu.extend_from_slice(&item_length.to_be_bytes());
        pdu.extend_from_slice(&[context_id, control_header]);
        pdu.extend_from_slice(data);
        pdu
    }

    #[test]
    fn test_a_pdu_split_between_read_ahead_and_socket_is_read_whole() {
        let mut wire = pdata(3, 0x03, b"command bytes");
        wire.extend_from_slice(&pdata(3, 0x00, &[7u8; 1000]));
        // dicom-ul read the first PDU and part of the second during negotiation.
        let (ahead, rest) = wire.split_at(30);
        let mut read_ahead = Cursor::new(ahead.to_vec());
        let mut socket = Cursor::new(rest.to_vec());

        let first = read_pdu(&mut (&mut read_ahead).chain(&mut socket), 16_384).unwrap();
        let Pdu::PData { data } = first else {
            panic!("not P-DATA: {first:?}")
        };
        assert_eq!(data.len(), 1);
        assert_eq!(data[0].presentation_context_id, 3);
        assert_eq!(data[0].value_type, PDataValueType::Command);
        assert!(data[0].is_last);
        assert_eq!(data[0].data, b"command bytes");

        let second = read_pdu(&mut (&mut read_ahead).chain(&mut socket), 16_384).unwrap();
        let Pdu::PData { data } = second else {
            panic!("not P-DATA: {second:?}")
        };
        assert_eq!(data[0].value_type, PDataValueType::Data);
        assert!(!data[0].is_last);
        assert_eq!(data[0].data, vec![7u8; 1000]);
    }

    #[test]
    fn test_pdus_breaking_the_limits_are_refused() {
        let oversized = pdata(1, 0x00, &[0u8; 2000]);
        let error = read_pdu(&mut Cursor::new(oversized), 1024).unwrap_err();
        assert_eq!(error.kind, crate::DimseErrorKind::Protocol, "{error}");

        let mut overrunning = vec![PDATA_TF, 0, 0, 0, 0, 10];
        overrunning.extend_from_slice(&100u32.to_be_bytes());
        overrunning.extend_from_slice(&[1, 0, 0, 0, 0, 0]);
        let error = read_pdu(&mut Cursor::new(overrunning), 16_384).unwrap_err();
        assert_eq!(error.kind, crate::DimseErrorKind::Protocol, "{error}");

        let mut truncated = pdata(1, 0x00, &[0u8; 100]);
        truncated.truncate(50);
        let error = read_pdu(&mut Cursor::new(truncated), 16_384).unwrap_err();
        assert_eq!(error.kind, crate::DimseErrorKind::Aborted, "{error}");
    }

    #[test]
    fn test_control_pdus_are_parsed_by_dicom_ul() {
        // A-RELEASE-RQ: type 5, length 4, four reserved bytes.
        let release = vec![0x05, 0, 0, 0, 0, 4, 0, 0, 0, 0];
        let pdu = read_pdu(&mut Cursor::new(release), 16_384).unwrap();
        assert!(matches!(pdu, Pdu::ReleaseRQ), "{pdu:?}");
    }
}
