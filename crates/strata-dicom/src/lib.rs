//! DICOM handling on dicom-rs: parse and validate received files, extract the attributes the
//! catalog indexes, and render DICOM JSON (PS3.18 Annex F).
//!
//! Everything here is synchronous and CPU- or file-bound: async callers run it on
//! `spawn_blocking`. Depends on `strata-types` and dicom-rs only.

mod attributes;
mod charset;
mod dictionary;
mod error;
mod inspect;
mod json;
mod layout;

pub use attributes::{ExtractedAttributes, RequestAttributeItem};
pub use dictionary::{lookup_tag, vr_of};
pub use error::{DicomError, DicomErrorKind};
pub use inspect::{InspectLimits, InspectedInstance, PixelDataLayout, inspect_file};
pub use json::{BULK_DATA_PLACEHOLDER, to_dicom_json};
pub use layout::write_part10_header;

/// Transfer Syntax UIDs the archive refers to by name.
pub mod transfer_syntax {
    pub use dicom_dictionary_std::uids::{
        DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN, EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN,
    };
    /// Explicit VR Big Endian (retired, still received from old modalities).
    pub const EXPLICIT_VR_BIG_ENDIAN: &str = "1.2.840.10008.1.2.2";
}
