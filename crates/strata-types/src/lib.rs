//! Shared vocabulary of Strata: validated DICOM UIDs, object keys and error codes.
//!
//! This crate performs no I/O and depends on no other Strata crate; every other crate may
//! depend on it. `blocking` is the one runtime helper every layer shares.

pub mod blocking;
mod error_code;
mod object_key;
mod origin;
mod uid;

pub use error_code::ErrorCode;
pub use object_key::ObjectKey;
pub use origin::request_origin;
pub use uid::{
    InvalidUid, SeriesUid, SopInstanceUid, StudyUid, Uid, validate_uid, validate_uid_strict,
};
