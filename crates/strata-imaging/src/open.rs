//! Opening stored objects.

use std::path::Path;

use dicom_dictionary_std::tags;
use dicom_object::file::ReadPreamble;
use dicom_object::{DefaultDicomObject, OpenFileOptions};

use crate::error::{ImagingError, ImagingErrorKind, ImagingResult};

/// Opens a Part 10 file (with or without the 128-byte preamble) fully into memory.
pub fn open_object(path: &Path) -> ImagingResult<DefaultDicomObject> {
    OpenFileOptions::new()
        .read_preamble(ReadPreamble::Auto)
        .open_file(path)
        .map_err(|error| {
            ImagingError::with_source(
                ImagingErrorKind::InvalidObject,
                "the stored object could not be parsed as DICOM",
                error,
            )
        })
}

/// Returns the object's NumberOfFrames (1 when absent or unreadable).
pub fn number_of_frames(object: &DefaultDicomObject) -> u32 {
    object
        .get(tags::NUMBER_OF_FRAMES)
        .and_then(|element| element.to_int::<i64>().ok())
        .filter(|frames| *frames > 0)
        .map_or(1, |frames| u32::try_from(frames).unwrap_or(u32::MAX))
}
