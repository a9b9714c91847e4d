//! The transfer syntaxes the archive accepts as they are (it never transcodes on receive).

use dicom_dictionary_std::uids;

/// Transfer syntaxes accepted for storage, in order of preference when a peer proposes
/// several in one presentation context.
#[allow(deprecated)] // retired UIDs are still sent by old modalities
pub const STORAGE_TRANSFER_SYNTAXES: &[&str] = &[
    uids::EXPLICIT_VR_LITTLE_ENDIAN,
    uids::IMPLICIT_VR_LITTLE_ENDIAN,
    uids::EXPLICIT_VR_BIG_ENDIAN,
    uids::DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
    uids::ENCAPSULATED_UNCOMPRESSED_EXPLICIT_VR_LITTLE_ENDIAN,
    uids::JPEG_BASELINE8_BIT,
    uids::JPEG_EXTENDED12_BIT,
    uids::JPEG_LOSSLESS,
    uids::JPEG_LOSSLESS_SV1,
    uids::JPEGLS_LOSSLESS,
    uids::JPEGLS_NEAR_LOSSLESS,
    uids::JPEG2000_LOSSLESS,
    uids::JPEG2000,
    uids::JPEG2000MC_LOSSLESS,
    uids::JPEG2000MC,
    uids::RLE_LOSSLESS,
    uids::HTJ2K_LOSSLESS,
    uids::HTJ2K_LOSSLESS_RPCL,
    uids::HTJ2K,
    uids::MPEG2MPML,
    uids::MPEG2MPMLF,
    uids::MPEG2MPHL,
    uids::MPEG2MPHLF,
    uids::MPEG4HP41,
    uids::MPEG4HP41F,
    uids::MPEG4HP41BD,
    uids::MPEG4HP41BDF,
    uids::MPEG4HP422D,
    uids::MPEG4HP422DF,
    uids::MPEG4HP423D,
    uids::MPEG4HP423DF,
    uids::MPEG4HP42STEREO,
    uids::MPEG4HP42STEREOF,
    uids::HEVCMP51,
    uids::HEVCM10P51,
];

/// Transfer syntaxes accepted for commands' identifiers and verification.
#[allow(deprecated)] // retired UIDs are still sent by old modalities
pub const UNCOMPRESSED_TRANSFER_SYNTAXES: &[&str] = &[
    uids::EXPLICIT_VR_LITTLE_ENDIAN,
    uids::IMPLICIT_VR_LITTLE_ENDIAN,
    uids::EXPLICIT_VR_BIG_ENDIAN,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_every_storage_transfer_syntax_is_known_to_the_registry() {
        for uid in STORAGE_TRANSFER_SYNTAXES {
            assert!(dicom_ul::association::server::is_supported(uid), "{uid}");
        }
    }
}
