//! Rewriting a whole object in another transfer syntax (PS3.18 §8.7.3).

use std::path::Path;

use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_encoding::transfer_syntax::TransferSyntaxIndex;
use dicom_pixeldata::Transcode;
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;

use crate::error::{ImagingError, ImagingErrorKind, ImagingResult};
use crate::open::open_object;
use crate::syntax::{can_decode, can_encode, is_encapsulated, is_lossy};

/// What a transcoding did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TranscodeOutcome {
    pub source_transfer_syntax_uid: String,
    pub target_transfer_syntax_uid: String,
    /// The pixel data went through a codec (decode and/or encode), not only a re-encoding of
    /// the data set.
    pub pixel_data_recoded: bool,
}

/// Reads the Part 10 file at `source` and writes it to `destination` in `target_ts_uid`.
///
/// Native to native (Implicit VR LE, Explicit VR BE, Deflated to Explicit VR LE) only
/// re-encodes the data set. Encapsulated sources are decoded first (the source syntax must be
/// decodable); encapsulated targets need an encoder (JPEG baseline for 8-bit data, JPEG-LS).
/// Decoding a lossy syntax sets Lossy Image Compression (0028,2110) to `01`.
pub fn transcode_file(
    source: &Path,
    destination: &Path,
    target_ts_uid: &str,
) -> ImagingResult<TranscodeOutcome> {
    let target = TransferSyntaxRegistry
        .get(target_ts_uid)
        .filter(|_| can_encode(target_ts_uid))
        .ok_or_else(|| {
            ImagingError::new(
                ImagingErrorKind::UnsupportedTransferSyntax,
                format!("this server cannot encode transfer syntax {target_ts_uid}"),
            )
        })?;
    let mut object = open_object(source)?;
    let source_ts_uid = object
        .meta()
        .transfer_syntax()
        .trim_end_matches('\0')
        .to_owned();
    let has_pixel_data = object.get(tags::PIXEL_DATA).is_some();
    let source_encapsulated = is_encapsulated(&source_ts_uid);
    let target_encapsulated = is_encapsulated(target_ts_uid);
    let pixel_data_recoded = source_ts_uid != target_ts_uid
        && has_pixel_data
        && (source_encapsulated || target_encapsulated);
    if pixel_data_recoded && source_encapsulated && !can_decode(&source_ts_uid) {
        return Err(ImagingError::new(
            ImagingErrorKind::UnsupportedTransferSyntax,
            format!(
                "pixel data in transfer syntax {source_ts_uid} cannot be decoded by this server"
            ),
        ));
    }
    if target_encapsulated && !has_pixel_data {
        return Err(ImagingError::new(
            ImagingErrorKind::NotAnImage,
            format!(
                "the instance has no pixel data to compress with transfer syntax {target_ts_uid}"
            ),
        ));
    }
    if target_ts_uid == uids::JPEG_BASELINE8_BIT && source_ts_uid != target_ts_uid {
        // The dicom-rs encoder would silently narrow wider samples to 8 bits.
        let bits_allocated = object
            .get(tags::BITS_ALLOCATED)
            .and_then(|element| element.to_int::<u16>().ok());
        if bits_allocated != Some(8) {
            return Err(ImagingError::new(
                ImagingErrorKind::CannotTranscode,
                format!(
                    "transfer syntax {target_ts_uid} (JPEG Baseline) holds 8-bit samples only; the instance has Bits Allocated {}",
                    bits_allocated.map_or_else(|| "absent".to_owned(), |bits| bits.to_string())
                ),
            ));
        }
    }
    if source_ts_uid != target_ts_uid {
        object.transcode(target).map_err(|error| {
            ImagingError::with_source(
                ImagingErrorKind::CannotTranscode,
                format!(
                    "the instance could not be transcoded from {source_ts_uid} to {target_ts_uid}"
                ),
                error,
            )
        })?;
        if pixel_data_recoded && source_encapsulated && !target_encapsulated {
            // Decoders hand out interleaved samples; the encapsulated-only length is stale.
            let samples_per_pixel = object
                .get(tags::SAMPLES_PER_PIXEL)
                .and_then(|element| element.to_int::<u16>().ok())
                .unwrap_or(1);
            if samples_per_pixel > 1 {
                object.put(DataElement::new(
                    tags::PLANAR_CONFIGURATION,
                    VR::US,
                    PrimitiveValue::from(0_u16),
                ));
            }
            object.remove_element(tags::ENCAPSULATED_PIXEL_DATA_VALUE_TOTAL_LENGTH);
            if is_lossy(&source_ts_uid) {
                object.put(DataElement::new(
                    tags::LOSSY_IMAGE_COMPRESSION,
                    VR::CS,
                    "01",
                ));
            }
        }
    }
    object.write_to_file(destination).map_err(|error| {
        ImagingError::with_source(
            ImagingErrorKind::Io,
            "the transcoded instance could not be written to the spool",
            error,
        )
    })?;
    Ok(TranscodeOutcome {
        source_transfer_syntax_uid: source_ts_uid,
        target_transfer_syntax_uid: target_ts_uid.to_owned(),
        pixel_data_recoded,
    })
}
