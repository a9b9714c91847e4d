//! Text in data sets whose Specific Character Set uses ISO 2022 code extensions (PS3.5 §6.1.2.5),
//! e.g. `\ISO 2022 IR 87` or `ISO 2022 IR 13\ISO 2022 IR 87`.
//!
//! dicom-rs decodes text with the first value of Specific Character Set only and knows no
//! escape sequences, so such values arrive with raw escape sequences in them. This module
//! recovers the original bytes from what dicom-rs decoded (its fallback decoding is lossless)
//! and decodes them again, switching character sets at each escape sequence. The per-set
//! decoders come from the `encoding` crate; only the ISO 2022 state machine is written here,
//! because no crate implements DICOM's use of it.

use dicom_core::header::Header;
use dicom_core::value::{PrimitiveValue, Value};
use dicom_core::{DataElement, VR};
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;
use encoding::types::{DecoderTrap, EncodingRef};

/// A character set designated to G0 (7-bit bytes) or G1 (8-bit bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Designation {
    /// ASCII (ISO-IR 6) or JIS X 0201 Romaji (ISO-IR 14), in G0.
    Ascii,
    /// JIS X 0208 (ISO-IR 87), two bytes per character, in G0.
    JisX0208,
    /// JIS X 0201 Katakana (ISO-IR 13), in G1.
    JisX0201Katakana,
    /// KS X 1001 (ISO-IR 149), two bytes per character, in G1.
    KsX1001,
    /// GB 2312 (ISO-IR 58), two bytes per character, in G1.
    Gb2312,
    /// A single-byte set for the right half (ISO 8859 parts), in G1.
    SingleByte(u16),
    /// Nothing designated.
    None,
}

/// Returns whether `specific_character_set` (the raw, backslash-separated value) needs ISO
/// 2022 decoding: it has several values or names an ISO 2022 set dicom-rs handles alone.
pub(crate) fn needs_iso2022(specific_character_set: &str) -> bool {
    specific_character_set.contains('\\')
}

/// Re-decodes every text value of `object` (and of its sequence items) whose data set uses ISO
/// 2022 code extensions. Items with their own Specific Character Set use it.
pub(crate) fn redecode_iso2022(object: &mut InMemDicomObject, inherited: &str) {
    let own = object
        .get(tags::SPECIFIC_CHARACTER_SET)
        .and_then(|element| element.to_str().ok())
        .map(|value| value.into_owned());
    let charset = own.as_deref().unwrap_or(inherited).to_owned();
    let mut replacements = Vec::new();
    for element in object.iter() {
        match element.value() {
            Value::Primitive(primitive)
                if needs_iso2022(&charset)
                    && matches!(
                        element.vr(),
                        VR::PN | VR::LO | VR::SH | VR::LT | VR::ST | VR::UT | VR::UC
                    ) =>
            {
                let values: Vec<String> = primitive
                    .to_multi_str()
                    .iter()
                    .map(|value| decode(&recover_bytes(value, &charset), &charset))
                    .collect();
                replacements.push(DataElement::new(
                    element.tag(),
                    element.vr(),
                    PrimitiveValue::Strs(values.into()),
                ));
            }
            Value::Sequence(_) => {
                let mut element = element.clone();
                if let Some(items) = element.items_mut() {
                    for item in items.iter_mut() {
                        redecode_iso2022(item, &charset);
                    }
                }
                replacements.push(element);
            }
            _ => {}
        }
    }
    for element in replacements {
        object.put(element);
    }
}

/// Turns a string dicom-rs decoded with the first character set back into the bytes it read.
fn recover_bytes(decoded: &str, specific_character_set: &str) -> Vec<u8> {
    let first = specific_character_set
        .split('\\')
        .next()
        .unwrap_or_default()
        .trim();
    let katakana_first = first.ends_with("IR 13");
    decoded
        .chars()
        .map(|character| {
            let code = character as u32;
            if katakana_first && (0xFF61..=0xFF9F).contains(&code) {
                // Windows-31J decoded a G1 katakana byte.
                (code - 0xFF61 + 0xA1) as u8
            } else {
                // ISO-8859-1 decoding is one char per byte.
                code as u8
            }
        })
        .collect()
}

/// The designations a value starts with, from the first value of Specific Character Set.
fn initial_designations(specific_character_set: &str) -> (Designation, Designation) {
    let first = specific_character_set
        .split('\\')
        .next()
        .unwrap_or_default()
        .trim();
    let g1 = match first.rsplit(' ').next().unwrap_or_default() {
        "13" => Designation::JisX0201Katakana,
        "100" => Designation::SingleByte(100),
        "101" => Designation::SingleByte(101),
        "109" => Designation::SingleByte(109),
        "110" => Designation::SingleByte(110),
        "126" => Designation::SingleByte(126),
        "127" => Designation::SingleByte(127),
        "138" => Designation::SingleByte(138),
        "144" => Designation::SingleByte(144),
        "149" => Designation::KsX1001,
        "58" => Designation::Gb2312,
        _ => Designation::None,
    };
    (Designation::Ascii, g1)
}

/// Decodes ISO 2022 bytes as DICOM uses them: escape sequences switch G0 and G1, and the
/// designations return to the initial ones after each delimiter (`^`, `=`, `\`, CR, LF, TAB, FF).
fn decode(bytes: &[u8], specific_character_set: &str) -> String {
    let initial = initial_designations(specific_character_set);
    let (mut g0, mut g1) = initial;
    let mut out = String::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        let byte = bytes[index];
        if byte == 0x1B {
            let rest = &bytes[index + 1..];
            let (consumed, designation) = match rest {
                [b'(', b'B', ..] | [b'(', b'J', ..] => (3, Some((0, Designation::Ascii))),
                [b'$', b'B', ..] | [b'$', b'@', ..] => (3, Some((0, Designation::JisX0208))),
                [b')', b'I', ..] => (3, Some((1, Designation::JisX0201Katakana))),
                [b'$', b')', b'C', ..] => (4, Some((1, Designation::KsX1001))),
                [b'$', b')', b'A', ..] => (4, Some((1, Designation::Gb2312))),
                [b'-', b'A', ..] => (3, Some((1, Designation::SingleByte(100)))),
                [b'-', b'B', ..] => (3, Some((1, Designation::SingleByte(101)))),
                [b'-', b'C', ..] => (3, Some((1, Designation::SingleByte(109)))),
                [b'-', b'D', ..] => (3, Some((1, Designation::SingleByte(110)))),
                [b'-', b'F', ..] => (3, Some((1, Designation::SingleByte(126)))),
                [b'-', b'G', ..] => (3, Some((1, Designation::SingleByte(127)))),
                [b'-', b'H', ..] => (3, Some((1, Designation::SingleByte(138)))),
                [b'-', b'L', ..] => (3, Some((1, Designation::SingleByte(144)))),
                _ => (1, None),
            };
            match designation {
                Some((0, set)) => g0 = set,
                Some((_, set)) => g1 = set,
                None => out.push('\u{FFFD}'),
            }
            index += consumed;
            continue;
        }
        if byte < 0x80 {
            if g0 == Designation::JisX0208
                && (0x21..=0x7E).contains(&byte)
                && index + 1 < bytes.len()
            {
                let mut sequence = b"\x1b$B".to_vec();
                sequence.extend_from_slice(&bytes[index..index + 2]);
                sequence.extend_from_slice(b"\x1b(B");
                out.push_str(&decode_with(encoding::all::ISO_2022_JP, &sequence));
                index += 2;
                continue;
            }
            if matches!(byte, b'^' | b'=' | b'\\' | b'\r' | b'\n' | b'\t' | 0x0C) {
                (g0, g1) = initial;
            }
            out.push(byte as char);
            index += 1;
            continue;
        }
        match g1 {
            Designation::JisX0201Katakana if (0xA1..=0xDF).contains(&byte) => {
                out.push(char::from_u32(0xFF61 + u32::from(byte - 0xA1)).unwrap_or('\u{FFFD}'));
                index += 1;
            }
            Designation::KsX1001 | Designation::Gb2312 if index + 1 < bytes.len() => {
                let codec: EncodingRef = if g1 == Designation::KsX1001 {
                    encoding::all::WINDOWS_949
                } else {
                    encoding::all::GBK
                };
                out.push_str(&decode_with(codec, &bytes[index..index + 2]));
                index += 2;
            }
            Designation::SingleByte(iso_ir) => {
                out.push_str(&decode_with(
                    single_byte_codec(iso_ir),
                    &bytes[index..index + 1],
                ));
                index += 1;
            }
            _ => {
                out.push('\u{FFFD}');
                index += 1;
            }
        }
    }
    out
}

/// The ISO 8859 part of a single-byte ISO-IR set.
fn single_byte_codec(iso_ir: u16) -> EncodingRef {
    match iso_ir {
        101 => encoding::all::ISO_8859_2,
        109 => encoding::all::ISO_8859_3,
        110 => encoding::all::ISO_8859_4,
        126 => encoding::all::ISO_8859_7,
        127 => encoding::all::ISO_8859_6,
        138 => encoding::all::ISO_8859_8,
        144 => encoding::all::ISO_8859_5,
        _ => encoding::all::ISO_8859_1,
    }
}

fn decode_with(codec: EncodingRef, bytes: &[u8]) -> String {
    codec
        .decode(bytes, DecoderTrap::Replace)
        .unwrap_or_else(|_| "\u{FFFD}".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_japanese_kanji_and_hiragana_with_escapes() {
        // "Yamada^Tarou=山田^太郎=やまだ^たろう" from PS3.5 Annex H.
        let bytes =
            b"Yamada^Tarou=\x1b$B;3ED\x1b(B^\x1b$BB@O:\x1b(B=\x1b$B$d$^$@\x1b(B^\x1b$B$?$m$&\x1b(B";
        assert_eq!(
            decode(bytes, "\\ISO 2022 IR 87"),
            "Yamada^Tarou=山田^太郎=やまだ^たろう"
        );
    }

    #[test]
    fn test_half_width_katakana_in_g1() {
        let bytes = b"\xd4\xcf\xc0\xde^\xc0\xdb\xb3=\x1b$B;3ED\x1b(B^\x1b$BB@O:\x1b(B";
        assert_eq!(
            decode(bytes, "ISO 2022 IR 13\\ISO 2022 IR 87"),
            "ﾔﾏﾀﾞ^ﾀﾛｳ=山田^太郎"
        );
    }

    #[test]
    fn test_korean_in_g1() {
        // "Hong^Gildong=洪^吉洞=홍^길동" from PS3.5 Annex I.
        let bytes = b"Hong^Gildong=\x1b$)C\xfb\xf3^\x1b$)C\xd1\xce\xd4\xd7=\x1b$)C\xc8\xab^\x1b$)C\xb1\xe6\xb5\xbf";
        assert_eq!(
            decode(bytes, "\\ISO 2022 IR 149"),
            "Hong^Gildong=洪^吉洞=홍^길동"
        );
    }

    #[test]
    fn test_recovered_bytes_round_trip_latin1_decoding() {
        let raw = b"\x1b$B;3ED\x1b(B";
        let latin1: String = raw.iter().map(|byte| *byte as char).collect();
        assert_eq!(recover_bytes(&latin1, "\\ISO 2022 IR 87"), raw);
    }
}
