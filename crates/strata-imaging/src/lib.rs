//! Pixel work for the web services: decoding pixel data, rendering one frame to JPEG or PNG
//! (PS3.18 §8.3.5 rendered and thumbnail resources) and transcoding a whole object to another
//! transfer syntax (PS3.18 §8.7.3).
//!
//! Built on dicom-rs `dicom-pixeldata` with a minimal codec set: native and deflated data,
//! RLE Lossless and JPEG (baseline, extended, lossless) in pure Rust, JPEG 2000 and HTJ2K
//! through OpenJPEG, JPEG-LS through CharLS. Every function here is blocking and CPU-bound:
//! callers run it in `spawn_blocking`. This crate does no network or storage I/O and must not
//! depend on the catalog, the store or HTTP.

mod error;
mod open;
mod render;
mod resize;
mod syntax;
mod transcode;

pub use error::{ImagingError, ImagingErrorKind};
pub use open::{number_of_frames, open_object};
pub use render::{
    ImageFormat, RenderParams, SourceRect, Viewport, VoiFunction, WindowParam, render_file,
    render_object,
};
pub use syntax::{can_decode, can_encode, is_lossy, is_never_served_on_web, transfer_syntax_name};
pub use transcode::{TranscodeOutcome, transcode_file};
