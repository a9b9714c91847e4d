//! Writing a Part 10 header for data sets received without one.

use std::io::Write;

use dicom_object::meta::FileMetaTableBuilder;

use crate::error::DicomError;

/// Writes a 128-byte preamble, `DICM` and a File Meta group (PS3.10 §7.1) describing a data set
/// of the given SOP class and instance in `transfer_syntax_uid`, and returns the number of
/// bytes written. The caller appends the data set bytes unchanged.
pub fn write_part10_header(
    mut out: impl Write,
    sop_class_uid: &str,
    sop_instance_uid: &str,
    transfer_syntax_uid: &str,
) -> Result<u64, DicomError> {
    let meta = FileMetaTableBuilder::new()
        .media_storage_sop_class_uid(sop_class_uid)
        .media_storage_sop_instance_uid(sop_instance_uid)
        .transfer_syntax(transfer_syntax_uid)
        .implementation_class_uid(IMPLEMENTATION_CLASS_UID)
        .implementation_version_name(IMPLEMENTATION_VERSION_NAME)
        .build()
        .map_err(|error| {
            DicomError::malformed(format!("cannot build a File Meta header: {error}"))
        })?;
    // The preamble and the magic are ours to write: `FileMetaTable::write` emits the group
    // 0002 elements only.
    let mut bytes = vec![0u8; 128];
    bytes.extend_from_slice(b"DICM");
    meta.write(&mut bytes).map_err(|error| {
        DicomError::malformed(format!("cannot write a File Meta header: {error}"))
    })?;
    out.write_all(&bytes).map_err(DicomError::io)?;
    Ok(bytes.len() as u64)
}

/// Strata's Implementation Class UID (a UUID-derived OID under 2.25).
pub const IMPLEMENTATION_CLASS_UID: &str = "2.25.137038125948464317685051252924187137373";
/// Strata's Implementation Version Name (at most 16 characters).
pub const IMPLEMENTATION_VERSION_NAME: &str = "STRATA_0_1";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_header_is_a_complete_part10_prefix() {
        let mut bytes = Vec::new();
        let written = write_part10_header(
            &mut bytes,
            "1.2.840.10008.5.1.4.1.1.7",
            "1.2.3.4",
            "1.2.840.10008.1.2",
        )
        .unwrap();
        assert_eq!(written as usize, bytes.len());
        assert_eq!(&bytes[128..132], b"DICM");
        let meta = dicom_object::FileMetaTable::from_reader(&bytes[128..]).unwrap();
        assert_eq!(meta.media_storage_sop_instance_uid(), "1.2.3.4");
        assert_eq!(meta.transfer_syntax(), "1.2.840.10008.1.2");
    }
}
