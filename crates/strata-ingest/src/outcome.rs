//! What happened to one received object, in words every protocol maps to its own status.

use strata_dicom::{DicomError, DicomErrorKind};

/// Why an object was refused; the code is the DIMSE C-STORE status and the STOW-RS
/// FailureReason (0008,1197). See PS3.4 Annex B.2.3 and PS3.18 §10.5.3.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureReason {
    /// 0xA700 Refused: Out of Resources (too large, store full).
    OutOfResources,
    /// 0xA900 Error: Data Set does not match SOP Class (required identifier missing).
    DataSetDoesNotMatchSopClass,
    /// 0xC000 Error: Cannot understand (malformed DICOM).
    CannotUnderstand,
    /// 0x0110 Processing failure (the archive failed).
    ProcessingFailure,
    /// 0x0111 Duplicate SOP Instance (same UID, different content).
    DuplicateSopInstance,
    /// 0x0122 Refused: SOP Class not supported.
    SopClassNotSupported,
}

impl FailureReason {
    /// Returns the status code.
    pub fn code(self) -> u16 {
        match self {
            FailureReason::OutOfResources => 0xA700,
            FailureReason::DataSetDoesNotMatchSopClass => 0xA900,
            FailureReason::CannotUnderstand => 0xC000,
            FailureReason::ProcessingFailure => 0x0110,
            FailureReason::DuplicateSopInstance => 0x0111,
            FailureReason::SopClassNotSupported => 0x0122,
        }
    }
}

/// Why an object was stored with a warning; the code is the C-STORE warning status and the
/// STOW-RS WarningReason (0008,1196).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WarningReason {
    /// 0xB000 Coercion of Data Elements (e.g. UIDs derived for a standalone object).
    CoercionOfDataElements,
    /// 0xB007 Data Set does not match SOP Class (accepted leniently).
    DataSetDoesNotMatchSopClass,
}

impl WarningReason {
    /// Returns the status code.
    pub fn code(self) -> u16 {
        match self {
            WarningReason::CoercionOfDataElements => 0xB000,
            WarningReason::DataSetDoesNotMatchSopClass => 0xB007,
        }
    }
}

/// An instance that is in the archive after the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredInstance {
    pub sop_class_uid: String,
    pub sop_instance_uid: String,
    pub study_instance_uid: String,
    pub series_instance_uid: String,
    /// False when an identical instance was already stored (nothing was written).
    pub newly_stored: bool,
    pub warning: Option<(WarningReason, String)>,
}

/// The outcome of ingesting one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IngestOutcome {
    Stored(StoredInstance),
    Refused {
        /// Present when the object could be parsed far enough to know them.
        sop_class_uid: Option<String>,
        sop_instance_uid: Option<String>,
        reason: FailureReason,
        /// A message for the client and the log; never patient data.
        message: String,
    },
}

/// A failure of the archive itself (not of the received data).
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("failed to spool the received object: {0}")]
    Spool(#[source] std::io::Error),
    #[error("the received object is larger than the limit of {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("failed to read the request body: {0}")]
    Body(String),
}

pub(crate) fn refusal_for(error: &DicomError) -> FailureReason {
    match error.kind {
        DicomErrorKind::Malformed | DicomErrorKind::UnsupportedTransferSyntax => {
            FailureReason::CannotUnderstand
        }
        DicomErrorKind::NotPatientObject => FailureReason::SopClassNotSupported,
        DicomErrorKind::MissingIdentifier => FailureReason::DataSetDoesNotMatchSopClass,
        DicomErrorKind::TooLarge => FailureReason::OutOfResources,
        DicomErrorKind::Io => FailureReason::ProcessingFailure,
    }
}
