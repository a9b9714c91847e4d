//! Why an object could not be accepted.

/// What is wrong with a received object; ingest maps each kind to a DIMSE status and a
/// STOW-RS FailureReason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DicomErrorKind {
    /// Not a DICOM stream, or its structure is broken (truncated, bad lengths, bad VR).
    Malformed,
    /// A well-formed stream that cannot be archived as an instance: a required identifier is
    /// missing or invalid.
    MissingIdentifier,
    /// A SOP class whose objects are not filed under patient, study and series (DICOMDIR,
    /// Color Palette, Hanging Protocol, ...).
    NotPatientObject,
    /// The transfer syntax is unknown to the archive.
    UnsupportedTransferSyntax,
    /// Larger than the configured limit.
    TooLarge,
    /// Reading the spooled file failed.
    Io,
}

/// A refusal with a reason that is safe to return to the client and to log: it names tags and
/// UIDs, never patient data.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{reason}")]
pub struct DicomError {
    pub kind: DicomErrorKind,
    pub reason: String,
}

impl DicomError {
    pub(crate) fn malformed(reason: impl Into<String>) -> Self {
        Self {
            kind: DicomErrorKind::Malformed,
            reason: reason.into(),
        }
    }

    pub(crate) fn missing(reason: impl Into<String>) -> Self {
        Self {
            kind: DicomErrorKind::MissingIdentifier,
            reason: reason.into(),
        }
    }

    pub(crate) fn io(error: std::io::Error) -> Self {
        Self {
            kind: DicomErrorKind::Io,
            reason: format!("failed to read the received object: {error}"),
        }
    }
}
