//! What this build can decode and encode.

use dicom_dictionary_std::uids;
use dicom_encoding::Codec;
use dicom_encoding::transfer_syntax::TransferSyntaxIndex;
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;

/// Returns whether pixel data in `ts_uid` can be decoded (native and deflated syntaxes are
/// always decodable; encapsulated ones when a codec is built in).
pub fn can_decode(ts_uid: &str) -> bool {
    TransferSyntaxRegistry
        .get(ts_uid.trim_end_matches('\0').trim())
        .is_some_and(|ts| !ts.is_unsupported() && ts.can_decode_all())
}

/// Returns whether an object can be written in `ts_uid`: native syntaxes always, encapsulated
/// ones when an encoder is built in (JPEG baseline, JPEG-LS lossless and near-lossless).
pub fn can_encode(ts_uid: &str) -> bool {
    let Some(ts) = TransferSyntaxRegistry.get(ts_uid) else {
        return false;
    };
    if ts.is_unsupported() {
        return false;
    }
    match ts.codec() {
        Codec::None => true,
        Codec::EncapsulatedPixelData(_, writer) => writer.is_some(),
        // Deflated re-encoding is not offered by the web services.
        Codec::Dataset(_) => false,
    }
}

/// Returns whether `ts_uid` carries encapsulated (compressed) pixel data.
pub(crate) fn is_encapsulated(ts_uid: &str) -> bool {
    TransferSyntaxRegistry
        .get(ts_uid)
        .is_some_and(|ts| ts.is_encapsulated_pixel_data())
}

/// Returns whether PS3.18 §8.7.3 forbids serving `ts_uid` over the web: Implicit VR Little
/// Endian and (retired) Explicit VR Big Endian.
pub fn is_never_served_on_web(ts_uid: &str) -> bool {
    // Explicit VR Big Endian is retired, hence no constant without a deprecation warning.
    ts_uid == uids::IMPLICIT_VR_LITTLE_ENDIAN || ts_uid == "1.2.840.10008.1.2.2"
}

/// Returns whether `ts_uid` is a lossy compression (decoding it gives lossy pixels).
pub fn is_lossy(ts_uid: &str) -> bool {
    matches!(
        ts_uid,
        uids::JPEG_BASELINE8_BIT
            | uids::JPEG_EXTENDED12_BIT
            | uids::JPEGLS_NEAR_LOSSLESS
            | uids::JPEG2000
            | uids::JPEG2000MC
            | uids::HTJ2K
            | uids::MPEG2MPML
            | uids::MPEG2MPHL
            | uids::MPEG4HP41
            | uids::JPEGXL
    )
}

/// Returns the registry's name of a transfer syntax, or the UID itself.
pub fn transfer_syntax_name(ts_uid: &str) -> String {
    TransferSyntaxRegistry
        .get(ts_uid)
        .map_or_else(|| ts_uid.to_owned(), |ts| ts.name().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_decodes_the_built_in_codecs() {
        for uid in [
            uids::EXPLICIT_VR_LITTLE_ENDIAN,
            uids::IMPLICIT_VR_LITTLE_ENDIAN,
            "1.2.840.10008.1.2.2",
            uids::DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
            uids::RLE_LOSSLESS,
            uids::JPEG_BASELINE8_BIT,
            uids::JPEG_EXTENDED12_BIT,
            uids::JPEG_LOSSLESS_SV1,
            uids::JPEG2000_LOSSLESS,
            uids::JPEG2000,
            uids::JPEGLS_LOSSLESS,
            uids::HTJ2K_LOSSLESS,
        ] {
            assert!(can_decode(uid), "{uid} should be decodable");
        }
        assert!(!can_decode(uids::MPEG2MPML));
        assert!(!can_decode("1.2.3.4"));
    }

    #[test]
    fn test_encodes_native_jpeg_baseline_and_jpegls_only() {
        assert!(can_encode(uids::EXPLICIT_VR_LITTLE_ENDIAN));
        assert!(can_encode(uids::JPEG_BASELINE8_BIT));
        assert!(can_encode(uids::JPEGLS_LOSSLESS));
        assert!(!can_encode(uids::RLE_LOSSLESS));
        assert!(!can_encode(uids::JPEG2000_LOSSLESS));
        assert!(!can_encode(uids::DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN));
        assert!(is_never_served_on_web(uids::IMPLICIT_VR_LITTLE_ENDIAN));
        assert!(!is_never_served_on_web(uids::EXPLICIT_VR_LITTLE_ENDIAN));
    }
}
