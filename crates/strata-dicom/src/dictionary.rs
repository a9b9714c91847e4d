//! Attribute look-ups in the standard data dictionary.

use dicom_core::dictionary::{DataDictionary, DataDictionaryEntry};
use dicom_dictionary_std::StandardDataDictionary;

/// Resolves a keyword (`PatientID`) or an 8-digit hex tag (`00100020`) to `(group, element)`.
pub fn lookup_tag(text: &str) -> Option<(u16, u16)> {
    if text.len() == 8 && text.bytes().all(|byte| byte.is_ascii_hexdigit()) {
        let value = u32::from_str_radix(text, 16).ok()?;
        return Some(((value >> 16) as u16, (value & 0xFFFF) as u16));
    }
    let entry = StandardDataDictionary.by_name(text)?;
    let tag = entry.tag_range().inner();
    Some((tag.group(), tag.element()))
}

/// Returns the VR of a standard attribute as its two-letter name.
pub fn vr_of(group: u16, element: u16) -> Option<&'static str> {
    let entry = StandardDataDictionary.by_tag(dicom_core::Tag(group, element))?;
    Some(entry.vr().relaxed().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_lookup_by_keyword_and_hex() {
        assert_eq!(lookup_tag("PatientID"), Some((0x0010, 0x0020)));
        assert_eq!(lookup_tag("00100020"), Some((0x0010, 0x0020)));
        assert_eq!(lookup_tag("NoSuchKeyword"), None);
        assert_eq!(vr_of(0x0010, 0x0010), Some("PN"));
    }
}
