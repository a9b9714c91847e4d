//! Keys of objects in the object store.

use std::fmt;

use crate::{SeriesUid, SopInstanceUid, StudyUid};

/// The key of one stored object, relative to the store's root or prefix.
///
/// Instance keys embed the SHA-256 of the content, so two different objects claiming the same
/// SOP Instance UID never overwrite each other while the catalog decides which one wins, and a
/// re-sent identical instance lands on the same key.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct ObjectKey(String);

impl ObjectKey {
    /// Returns the key of a DICOM instance:
    /// `instances/{study}/{series}/{sop_instance}/{sha256}.dcm`.
    pub fn for_instance(
        study_uid: &StudyUid,
        series_uid: &SeriesUid,
        sop_instance_uid: &SopInstanceUid,
        sha256_hex: &str,
    ) -> Self {
        debug_assert!(sha256_hex.len() == 64 && sha256_hex.bytes().all(|b| b.is_ascii_hexdigit()));
        Self(format!("instances/{study_uid}/{series_uid}/{sop_instance_uid}/{sha256_hex}.dcm"))
    }

    /// Wraps a key read back from the catalog or listed from the store.
    pub fn from_stored(key: impl Into<String>) -> Self {
        Self(key.into())
    }

    /// Returns the key as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_instance_key_layout() {
        let key = ObjectKey::for_instance(
            &StudyUid::parse("1.2").unwrap(),
            &SeriesUid::parse("1.2.3").unwrap(),
            &SopInstanceUid::parse("1.2.3.4").unwrap(),
            &"a".repeat(64),
        );
        assert_eq!(key.as_str(), format!("instances/1.2/1.2.3/1.2.3.4/{}.dcm", "a".repeat(64)));
    }
}
