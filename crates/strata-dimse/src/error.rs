//! Errors of the DIMSE layer.

/// What went wrong on an association.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DimseErrorKind {
    /// The peer broke the protocol (unexpected PDU, malformed command).
    Protocol,
    /// The association could not be established or was refused.
    Association,
    /// The peer aborted or the connection dropped.
    Aborted,
    /// A local failure (I/O, catalog, store).
    Internal,
}

/// An error on a DIMSE association.
#[derive(Debug, thiserror::Error)]
#[error("{kind:?}: {message}")]
pub struct DimseError {
    pub kind: DimseErrorKind,
    pub message: String,
}

impl DimseError {
    pub(crate) fn protocol(message: impl Into<String>) -> Self {
        Self {
            kind: DimseErrorKind::Protocol,
            message: message.into(),
        }
    }

    pub(crate) fn association(message: impl Into<String>) -> Self {
        Self {
            kind: DimseErrorKind::Association,
            message: message.into(),
        }
    }

    pub(crate) fn aborted(message: impl Into<String>) -> Self {
        Self {
            kind: DimseErrorKind::Aborted,
            message: message.into(),
        }
    }

    pub(crate) fn internal(message: impl Into<String>) -> Self {
        Self {
            kind: DimseErrorKind::Internal,
            message: message.into(),
        }
    }
}
