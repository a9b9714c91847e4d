//! DIMSE command sets (PS3.7 §9 and Annex E): encoding in Implicit VR Little Endian with the
//! Command Group Length first, and the typed view of the fields Strata reads and writes.

use dicom_core::value::PrimitiveValue;
use dicom_core::{DataElement, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;
use dicom_transfer_syntax_registry::entries::IMPLICIT_VR_LITTLE_ENDIAN;

use crate::error::DimseError;

/// Command Field values (PS3.7 Table E.1-1 and E.2-1).
pub mod command_field {
    pub const C_STORE_RQ: u16 = 0x0001;
    pub const C_STORE_RSP: u16 = 0x8001;
    pub const C_GET_RQ: u16 = 0x0010;
    pub const C_GET_RSP: u16 = 0x8010;
    pub const C_FIND_RQ: u16 = 0x0020;
    pub const C_FIND_RSP: u16 = 0x8020;
    pub const C_MOVE_RQ: u16 = 0x0021;
    pub const C_MOVE_RSP: u16 = 0x8021;
    pub const C_ECHO_RQ: u16 = 0x0030;
    pub const C_ECHO_RSP: u16 = 0x8030;
    pub const C_CANCEL_RQ: u16 = 0x0FFF;
}

/// Status codes used by Strata (PS3.7 Annex C and PS3.4 Annex B/C).
pub mod status {
    pub const SUCCESS: u16 = 0x0000;
    pub const CANCEL: u16 = 0xFE00;
    pub const PENDING: u16 = 0xFF00;
    /// Sub-operations complete, one or more failures or warnings (C-MOVE/C-GET).
    pub const SUB_OPERATIONS_WITH_FAILURES: u16 = 0xB000;
    /// Refused: move destination unknown.
    pub const MOVE_DESTINATION_UNKNOWN: u16 = 0xA801;
    /// Refused: out of resources, unable to perform sub-operations.
    pub const OUT_OF_RESOURCES_SUB_OPERATIONS: u16 = 0xA702;
    /// Identifier does not match SOP Class.
    pub const IDENTIFIER_DOES_NOT_MATCH: u16 = 0xA900;
    /// Unable to process.
    pub const UNABLE_TO_PROCESS: u16 = 0xC000;
    /// Unrecognized operation.
    pub const UNRECOGNIZED_OPERATION: u16 = 0x0211;
    /// Processing failure.
    pub const PROCESSING_FAILURE: u16 = 0x0110;
}

/// The Command Data Set Type value that means "no data set follows".
pub const NO_DATA_SET: u16 = 0x0101;
/// A Command Data Set Type value that means "a data set follows".
pub const DATA_SET_PRESENT: u16 = 0x0000;

/// One decoded command set.
#[derive(Debug, Clone)]
pub struct Command {
    object: InMemDicomObject,
}

impl Command {
    /// Starts an empty command with the given Command Field.
    pub fn new(command_field: u16) -> Self {
        let mut command = Self {
            object: InMemDicomObject::new_empty(),
        };
        command.put_u16(tags::COMMAND_FIELD, command_field);
        command
    }

    /// Decodes a command set received in P-DATA command fragments.
    pub fn decode(bytes: &[u8]) -> Result<Self, DimseError> {
        let object =
            InMemDicomObject::read_dataset_with_ts(bytes, &IMPLICIT_VR_LITTLE_ENDIAN.erased())
                .map_err(|error| DimseError::protocol(format!("malformed command set: {error}")))?;
        Ok(Self { object })
    }

    /// Encodes the command set, Command Group Length (0000,0000) first.
    pub fn encode(&self) -> Result<Vec<u8>, DimseError> {
        let mut body = Vec::with_capacity(256);
        let mut object = self.object.clone();
        object.remove_element(tags::COMMAND_GROUP_LENGTH);
        object
            .write_dataset_with_ts(&mut body, &IMPLICIT_VR_LITTLE_ENDIAN.erased())
            .map_err(|error| DimseError::protocol(format!("cannot encode command set: {error}")))?;
        let mut bytes = Vec::with_capacity(body.len() + 12);
        // (0000,0000) UL, implicit VR: tag, 4-byte length, 4-byte value.
        bytes.extend_from_slice(&[0, 0, 0, 0, 4, 0, 0, 0]);
        bytes.extend_from_slice(&(body.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&body);
        Ok(bytes)
    }

    /// Returns the Command Field.
    pub fn command_field(&self) -> Option<u16> {
        self.u16(tags::COMMAND_FIELD)
    }

    /// Returns whether a data set follows the command.
    pub fn has_data_set(&self) -> bool {
        self.u16(tags::COMMAND_DATA_SET_TYPE)
            .is_some_and(|value| value != NO_DATA_SET)
    }

    /// Returns an unsigned short field.
    pub fn u16(&self, tag: Tag) -> Option<u16> {
        self.object
            .element_opt(tag)
            .ok()
            .flatten()
            .and_then(|element| element.to_int::<u16>().ok())
    }

    /// Returns a string field with its padding removed.
    pub fn string(&self, tag: Tag) -> Option<String> {
        self.object
            .element_opt(tag)
            .ok()
            .flatten()
            .and_then(|element| element.to_str().ok())
            .map(|text| text.trim_end_matches(['\0', ' ']).trim_start().to_owned())
    }

    /// Sets an unsigned short field.
    pub fn put_u16(&mut self, tag: Tag, value: u16) -> &mut Self {
        self.object
            .put(DataElement::new(tag, VR::US, PrimitiveValue::from(value)));
        self
    }

    /// Sets a UID field (padded to even length with NUL).
    pub fn put_uid(&mut self, tag: Tag, value: &str) -> &mut Self {
        let mut text = value.trim_end_matches(['\0', ' ']).to_owned();
        if text.len() % 2 == 1 {
            text.push('\0');
        }
        self.object
            .put(DataElement::new(tag, VR::UI, PrimitiveValue::from(text)));
        self
    }

    /// Sets a text field of the given VR (padded to even length with a space).
    pub fn put_text(&mut self, tag: Tag, vr: VR, value: &str) -> &mut Self {
        let mut text = value.to_owned();
        if text.len() % 2 == 1 {
            text.push(' ');
        }
        self.object
            .put(DataElement::new(tag, vr, PrimitiveValue::from(text)));
        self
    }

    /// Builds the response to `request` with `response_field`, the request's Message ID and
    /// Affected SOP Class, and `status`.
    pub fn response_to(request: &Command, response_field: u16, status: u16) -> Self {
        let mut response = Command::new(response_field);
        if let Some(message_id) = request.u16(tags::MESSAGE_ID) {
            response.put_u16(tags::MESSAGE_ID_BEING_RESPONDED_TO, message_id);
        }
        if let Some(sop_class_uid) = request.string(tags::AFFECTED_SOP_CLASS_UID) {
            response.put_uid(tags::AFFECTED_SOP_CLASS_UID, &sop_class_uid);
        }
        response.put_u16(tags::COMMAND_DATA_SET_TYPE, NO_DATA_SET);
        response.put_u16(tags::STATUS, status);
        response
    }

    /// Returns the status of a response.
    pub fn status(&self) -> Option<u16> {
        self.u16(tags::STATUS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_command_round_trip_starts_with_group_length() {
        let mut command = Command::new(command_field::C_ECHO_RQ);
        command
            .put_u16(tags::MESSAGE_ID, 7)
            .put_uid(tags::AFFECTED_SOP_CLASS_UID, "1.2.840.10008.1.1")
            .put_u16(tags::COMMAND_DATA_SET_TYPE, NO_DATA_SET);
        let bytes = command.encode().unwrap();
        assert_eq!(&bytes[..8], &[0, 0, 0, 0, 4, 0, 0, 0]);
        let group_length = u32::from_le_bytes(bytes[8..12].try_into().unwrap());
        assert_eq!(group_length as usize, bytes.len() - 12);
        let decoded = Command::decode(&bytes).unwrap();
        assert_eq!(decoded.command_field(), Some(command_field::C_ECHO_RQ));
        assert_eq!(decoded.u16(tags::MESSAGE_ID), Some(7));
        assert_eq!(
            decoded.string(tags::AFFECTED_SOP_CLASS_UID).as_deref(),
            Some("1.2.840.10008.1.1")
        );
        assert!(!decoded.has_data_set());
    }
}
