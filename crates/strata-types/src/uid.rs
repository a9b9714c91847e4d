//! DICOM unique identifiers (PS3.5 §9.1).

use std::fmt;
use std::str::FromStr;

/// The reason a string is not a valid DICOM UID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidUid {
    /// The value is empty.
    #[error("uid is empty")]
    Empty,
    /// The value is longer than 64 characters.
    #[error("uid is {0} characters long, more than 64")]
    TooLong(usize),
    /// The value holds a character other than digits and dots.
    #[error("uid holds a character other than digits and '.'")]
    BadCharacter,
    /// A component is empty or starts with a zero without being "0".
    #[error("uid has an empty component or a component with a leading zero")]
    BadComponent,
}

/// Validates `value` as an identifier the archive can hold: 1 to 64 characters of ASCII
/// digits, letters, `.`, `-` and `_`.
///
/// This is deliberately more lenient than PS3.5 §9.1: legacy systems emit identifiers such as
/// hex digests in UID attributes, and an archive must keep their objects retrievable. Every
/// accepted value is safe in a URL path and an object key. See [`validate_uid_strict`] for the
/// standard's rule.
pub fn validate_uid(value: &str) -> Result<(), InvalidUid> {
    if value.is_empty() {
        return Err(InvalidUid::Empty);
    }
    if value.len() > 64 {
        return Err(InvalidUid::TooLong(value.len()));
    }
    if !value
        .bytes()
        .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'-' | b'_'))
    {
        return Err(InvalidUid::BadCharacter);
    }
    Ok(())
}

/// Validates `value` as a conformant DICOM UID (PS3.5 §9.1): 1 to 64 characters, dot-separated
/// numeric components, no leading zeros except for the single digit "0".
pub fn validate_uid_strict(value: &str) -> Result<(), InvalidUid> {
    validate_uid(value)?;
    if !value
        .bytes()
        .all(|byte| byte.is_ascii_digit() || byte == b'.')
    {
        return Err(InvalidUid::BadCharacter);
    }
    for component in value.split('.') {
        if component.is_empty() || (component.len() > 1 && component.starts_with('0')) {
            return Err(InvalidUid::BadComponent);
        }
    }
    Ok(())
}

macro_rules! uid_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Parses and validates a UID, trimming the trailing NUL or space padding that
            /// DICOM encodings add to odd-length values.
            pub fn parse(value: &str) -> Result<Self, InvalidUid> {
                let trimmed = value.trim_end_matches(['\0', ' ']).trim_start_matches(' ');
                validate_uid(trimmed)?;
                Ok(Self(trimmed.to_owned()))
            }

            /// Returns whether the value also follows the standard's UID syntax.
            pub fn is_conformant(&self) -> bool {
                validate_uid_strict(&self.0).is_ok()
            }

            /// Returns the UID as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                formatter.write_str(&self.0)
            }
        }

        impl FromStr for $name {
            type Err = InvalidUid;
            fn from_str(value: &str) -> Result<Self, Self::Err> {
                Self::parse(value)
            }
        }

        impl TryFrom<String> for $name {
            type Error = InvalidUid;
            fn try_from(value: String) -> Result<Self, Self::Error> {
                Self::parse(&value)
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> String {
                value.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

uid_type!(
    /// Any DICOM UID (SOP Class, Transfer Syntax, ...).
    Uid
);
uid_type!(
    /// A Study Instance UID (0020,000D).
    StudyUid
);
uid_type!(
    /// A Series Instance UID (0020,000E).
    SeriesUid
);
uid_type!(
    /// A SOP Instance UID (0008,0018).
    SopInstanceUid
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_valid_uids_parse() {
        for value in [
            "1.2.840.10008.1.2.1",
            "0",
            "1.0.2",
            "2.25.329800735698586629295641978511506172918",
        ] {
            assert_eq!(Uid::parse(value).unwrap().as_str(), value);
        }
    }

    #[test]
    fn test_padding_is_trimmed() {
        assert_eq!(StudyUid::parse("1.2.3\0").unwrap().as_str(), "1.2.3");
        assert_eq!(StudyUid::parse("1.2.3 ").unwrap().as_str(), "1.2.3");
    }

    #[test]
    fn test_invalid_uids_are_refused() {
        assert_eq!(Uid::parse(""), Err(InvalidUid::Empty));
        assert_eq!(Uid::parse(&"1".repeat(65)), Err(InvalidUid::TooLong(65)));
        assert_eq!(Uid::parse("1.2/3"), Err(InvalidUid::BadCharacter));
        assert_eq!(Uid::parse("1.2 3"), Err(InvalidUid::BadCharacter));
        assert_eq!(validate_uid_strict("1.2.a"), Err(InvalidUid::BadCharacter));
        assert_eq!(validate_uid_strict("1..2"), Err(InvalidUid::BadComponent));
        assert_eq!(validate_uid_strict("1.02"), Err(InvalidUid::BadComponent));
        assert_eq!(validate_uid_strict("1.2."), Err(InvalidUid::BadComponent));
    }

    #[test]
    fn test_legacy_identifiers_are_kept_but_flagged() {
        let digest = "dccc9599087131742838cc1162a630fea87ba9bf61ac09bfda90d4adfa5ddaed";
        let uid = SopInstanceUid::parse(digest).unwrap();
        assert!(!uid.is_conformant());
        assert!(SopInstanceUid::parse("1.2.3").unwrap().is_conformant());
    }

    #[test]
    fn test_serde_validates() {
        let parsed: Result<SopInstanceUid, _> = serde_json::from_str("\"1.2/x\"");
        assert!(parsed.is_err());
    }
}
