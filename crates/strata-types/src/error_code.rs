//! Protocol-neutral error codes.

/// What went wrong, in words every protocol adapter can map to its own status: HTTP status
/// codes here, DIMSE statuses and STOW-RS FailureReasons in `strata-ingest`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// The request or its data is malformed (bad DICOM, bad UID, bad parameter).
    BadRequest,
    /// The requested resource does not exist.
    NotFound,
    /// The data conflicts with what is stored (same UID, different content).
    Conflict,
    /// The request body is larger than the configured limit.
    PayloadTooLarge,
    /// The media type of the request is not supported.
    UnsupportedMediaType,
    /// No representation acceptable to the client exists.
    NotAcceptable,
    /// A dependency (catalog, object store) is unavailable; retrying may succeed.
    Unavailable,
    /// A bug or an unexpected failure.
    Internal,
}

impl ErrorCode {
    /// Returns the HTTP status code for this error.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::BadRequest => 400,
            ErrorCode::NotFound => 404,
            ErrorCode::Conflict => 409,
            ErrorCode::PayloadTooLarge => 413,
            ErrorCode::UnsupportedMediaType => 415,
            ErrorCode::NotAcceptable => 406,
            ErrorCode::Unavailable => 503,
            ErrorCode::Internal => 500,
        }
    }
}
