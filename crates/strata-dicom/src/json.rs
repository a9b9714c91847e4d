//! DICOM JSON (PS3.18 Annex F) from a parsed data set.

use base64::Engine;
use dicom_core::header::{HasLength, Header};
use dicom_core::value::Value;
use dicom_core::{Tag, VR};
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;
use serde_json::{Map, Value as Json, json};

/// Placeholder that starts every `BulkDataURI` in stored metadata. The DICOMweb layer replaces
/// it with the instance's absolute URL when it serves the metadata, so the stored document
/// does not depend on the host name the archive is reached by.
pub const BULK_DATA_PLACEHOLDER: &str = "strata-instance://";

/// Binary values up to this size are inlined (`InlineBinary`); larger ones get a `BulkDataURI`.
const MAX_INLINE_BINARY_BYTES: usize = 256;

/// Renders `object` as a DICOM JSON object. `has_pixel_data` adds Pixel Data (7FE0,0010) as a
/// `BulkDataURI` when the object was read without it.
pub fn to_dicom_json(
    object: &InMemDicomObject,
    has_pixel_data: bool,
    transfer_syntax_uid: &str,
) -> Json {
    let mut map = object_to_json(object, &mut Vec::new());
    if has_pixel_data && !map.contains_key("7FE00010") {
        let vr = if is_native_transfer_syntax(transfer_syntax_uid) {
            "OW"
        } else {
            "OB"
        };
        map.insert(
            "7FE00010".to_owned(),
            json!({ "vr": vr, "BulkDataURI": bulk_uri(&[tags::PIXEL_DATA.into()]) }),
        );
    }
    Json::Object(map)
}

fn is_native_transfer_syntax(uid: &str) -> bool {
    matches!(
        uid,
        "1.2.840.10008.1.2"
            | "1.2.840.10008.1.2.1"
            | "1.2.840.10008.1.2.2"
            | "1.2.840.10008.1.2.1.99"
    )
}

/// A path to a bulk data element: tags and item indices, alternating.
enum PathPart {
    Tag(Tag),
    Item(usize),
}

impl From<Tag> for PathPart {
    fn from(tag: Tag) -> Self {
        PathPart::Tag(tag)
    }
}

fn bulk_uri(path: &[PathPart]) -> String {
    let mut uri = format!("{BULK_DATA_PLACEHOLDER}bulk");
    for part in path {
        match part {
            PathPart::Tag(tag) => {
                uri.push_str(&format!("/{:04X}{:04X}", tag.group(), tag.element()))
            }
            PathPart::Item(index) => uri.push_str(&format!("/{index}")),
        }
    }
    uri
}

fn object_to_json(object: &InMemDicomObject, path: &mut Vec<PathPart>) -> Map<String, Json> {
    let mut map = Map::new();
    for element in object.iter() {
        let tag = element.tag();
        // Group lengths are not part of DICOM JSON (PS3.18 F.2.1).
        if tag.element() == 0x0000 {
            continue;
        }
        let vr = element.vr();
        let key = format!("{:04X}{:04X}", tag.group(), tag.element());
        let mut attribute = Map::new();
        attribute.insert("vr".to_owned(), Json::String(vr.to_string().to_owned()));
        path.push(PathPart::Tag(tag));
        match element.value() {
            Value::Sequence(sequence) => {
                let items: Vec<Json> = sequence
                    .items()
                    .iter()
                    .enumerate()
                    .map(|(index, item)| {
                        path.push(PathPart::Item(index));
                        let item_json = Json::Object(object_to_json(item, path));
                        path.pop();
                        item_json
                    })
                    .collect();
                if !items.is_empty() {
                    attribute.insert("Value".to_owned(), Json::Array(items));
                }
            }
            Value::PixelSequence(_) => {
                attribute.insert("BulkDataURI".to_owned(), Json::String(bulk_uri(path)));
            }
            Value::Primitive(_) if tag == tags::SPECIFIC_CHARACTER_SET => {
                // Text in DICOM JSON is UTF-8 whatever the source encoding was (PS3.18 F.2).
                attribute.insert("Value".to_owned(), json!(["ISO_IR 192"]));
            }
            Value::Primitive(primitive) => {
                if !primitive.is_empty() {
                    primitive_to_json(vr, primitive, path, &mut attribute);
                }
            }
        }
        path.pop();
        map.insert(key, Json::Object(attribute));
    }
    map
}

fn primitive_to_json(
    vr: VR,
    primitive: &dicom_core::PrimitiveValue,
    path: &[PathPart],
    attribute: &mut Map<String, Json>,
) {
    match vr {
        VR::OB | VR::OD | VR::OF | VR::OL | VR::OV | VR::OW | VR::UN => {
            let bytes = primitive.to_bytes();
            if bytes.len() <= MAX_INLINE_BINARY_BYTES {
                attribute.insert(
                    "InlineBinary".to_owned(),
                    Json::String(base64::engine::general_purpose::STANDARD.encode(&bytes)),
                );
            } else {
                attribute.insert("BulkDataURI".to_owned(), Json::String(bulk_uri(path)));
            }
        }
        VR::PN => {
            let values: Vec<Json> = primitive
                .to_multi_str()
                .iter()
                .map(|name| person_name(name))
                .collect();
            attribute.insert("Value".to_owned(), Json::Array(values));
        }
        VR::IS => {
            let values = primitive
                .to_multi_str()
                .iter()
                .map(|value| {
                    let trimmed = value.trim();
                    if trimmed.is_empty() {
                        Json::Null
                    } else if let Ok(number) = trimmed.parse::<i64>() {
                        Json::from(number)
                    } else {
                        // Malformed IS values are kept as text rather than dropped.
                        Json::String(trimmed.to_owned())
                    }
                })
                .collect();
            attribute.insert("Value".to_owned(), Json::Array(values));
        }
        VR::DS => {
            let values = primitive
                .to_multi_str()
                .iter()
                .map(|value| {
                    let trimmed = value.trim();
                    if trimmed.is_empty() {
                        Json::Null
                    } else if let Some(number) = trimmed
                        .parse::<f64>()
                        .ok()
                        .and_then(serde_json::Number::from_f64)
                    {
                        Json::Number(number)
                    } else {
                        Json::String(trimmed.to_owned())
                    }
                })
                .collect();
            attribute.insert("Value".to_owned(), Json::Array(values));
        }
        VR::FL | VR::FD => {
            let values = primitive
                .to_multi_float64()
                .map(|numbers| {
                    numbers
                        .into_iter()
                        .map(|number| {
                            serde_json::Number::from_f64(number)
                                .map(Json::Number)
                                .unwrap_or(Json::Null)
                        })
                        .collect()
                })
                .unwrap_or_default();
            attribute.insert("Value".to_owned(), Json::Array(values));
        }
        VR::SL | VR::SS | VR::SV | VR::UL | VR::US | VR::UV => {
            let values = primitive
                .to_multi_int::<i128>()
                .map(|numbers| {
                    numbers
                        .into_iter()
                        .map(|number| match i64::try_from(number) {
                            Ok(small) => Json::from(small),
                            Err(_) => Json::String(number.to_string()),
                        })
                        .collect()
                })
                .unwrap_or_default();
            attribute.insert("Value".to_owned(), Json::Array(values));
        }
        VR::AT => {
            let values = primitive
                .to_multi_str()
                .iter()
                .map(|value| Json::String(value.replace(['(', ')', ','], "").to_uppercase()))
                .collect();
            attribute.insert("Value".to_owned(), Json::Array(values));
        }
        VR::LT | VR::ST | VR::UT | VR::UR => {
            let value = primitive.to_str();
            attribute.insert(
                "Value".to_owned(),
                Json::Array(vec![Json::String(
                    value.trim_end_matches([' ', '\0']).to_owned(),
                )]),
            );
        }
        _ => {
            let values = primitive
                .to_multi_str()
                .iter()
                .map(|value| {
                    let trimmed = value.trim_matches(|c: char| c == ' ' || c == '\0');
                    if trimmed.is_empty() {
                        Json::Null
                    } else {
                        Json::String(trimmed.to_owned())
                    }
                })
                .collect();
            attribute.insert("Value".to_owned(), Json::Array(values));
        }
    }
}

/// A PN value as the JSON object of PS3.18 F.2.2: component groups split on `=`.
fn person_name(value: &str) -> Json {
    let trimmed = value.trim_matches(|c: char| c == ' ' || c == '\0');
    if trimmed.is_empty() {
        return Json::Object(Map::new());
    }
    let mut groups = trimmed.splitn(3, '=');
    let mut name = Map::new();
    for key in ["Alphabetic", "Ideographic", "Phonetic"] {
        if let Some(group) = groups.next()
            && !group.is_empty()
        {
            name.insert(key.to_owned(), Json::String(group.to_owned()));
        }
    }
    Json::Object(name)
}
