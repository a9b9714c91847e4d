//! The error of every imaging operation, with a kind callers map to HTTP statuses.

/// What went wrong; web callers map `UnsupportedTransferSyntax` and `CannotTranscode` to 406,
/// `NotAnImage`, `FrameOutOfRange` and `UnsupportedImage` to 400.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImagingErrorKind {
    /// The object's pixel data is in a transfer syntax this build cannot decode, or the target
    /// transfer syntax cannot be encoded.
    UnsupportedTransferSyntax,
    /// The object has no pixel data (SR, RT structure set, encapsulated PDF, float pixel data).
    NotAnImage,
    /// The requested frame does not exist.
    FrameOutOfRange,
    /// The image has attributes the renderer does not handle (bit depth, photometric).
    UnsupportedImage,
    /// Decoding or encoding failed on this object's data.
    CannotTranscode,
    /// The object could not be parsed.
    InvalidObject,
    /// Reading or writing a local file failed.
    Io,
}

/// An imaging failure. Messages carry transfer syntax UIDs and attribute names, never patient
/// data.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ImagingError {
    pub kind: ImagingErrorKind,
    message: String,
    #[source]
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl ImagingError {
    /// Returns an error of `kind` with a message and no cause.
    pub fn new(kind: ImagingErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            source: None,
        }
    }

    /// Returns an error of `kind` caused by `source`.
    pub fn with_source(
        kind: ImagingErrorKind,
        message: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Self {
            kind,
            message: message.into(),
            source: Some(Box::new(source)),
        }
    }

    /// Returns the message, without the cause.
    pub fn message(&self) -> &str {
        &self.message
    }
}

/// Result of the imaging functions.
pub type ImagingResult<T> = Result<T, ImagingError>;
