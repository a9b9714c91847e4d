//! Keys of objects in the object store.

use std::fmt;

/// The key of one stored object, relative to the store's root or prefix.
///
/// Instance objects are content-addressed: `objects/{sha[0..2]}/{sha[2..4]}/{sha256}.dcm`.
/// A key therefore never names two different contents, so two objects claiming the same SOP
/// Instance UID never overwrite each other while the catalog decides which one wins, and a
/// re-sent identical instance lands on the same key. The catalog maps instances to keys. Keys
/// stay short (82 characters) whatever the UIDs, which keeps them within the limits of every
/// S3-compatible store, and the two-level fan-out spreads load across key prefixes.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(transparent)]
pub struct ObjectKey(String);

impl ObjectKey {
    /// Returns the key of an instance object whose bytes have this SHA-256 (lowercase hex).
    pub fn for_content(sha256_hex: &str) -> Self {
        debug_assert!(sha256_hex.len() == 64 && sha256_hex.bytes().all(|b| b.is_ascii_hexdigit()));
        Self(format!(
            "objects/{}/{}/{sha256_hex}.dcm",
            &sha256_hex[0..2],
            &sha256_hex[2..4]
        ))
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
    fn test_content_key_layout() {
        let sha = format!("ab12{}", "c".repeat(60));
        let key = ObjectKey::for_content(&sha);
        assert_eq!(key.as_str(), format!("objects/ab/12/{sha}.dcm"));
        assert_eq!(key.as_str().len(), 82);
    }
}
