//! The shared corpus (`../shared/corpus`) and its MANIFEST.tsv.

use std::path::PathBuf;

/// One MANIFEST row (the columns the tests use).
#[derive(Debug, Clone)]
pub struct Entry {
    pub path: String,
    pub expected: String,
    pub sop_instance_uid: String,
    pub study_instance_uid: String,
    pub series_instance_uid: String,
    pub same_instance_group: String,
    pub modality: String,
}

impl Entry {
    /// Reads the file's bytes.
    pub fn bytes(&self) -> Vec<u8> {
        std::fs::read(dir().expect("corpus present").join(&self.path))
            .expect("corpus file readable")
    }

    /// Whether the archive must store it.
    pub fn must_store(&self) -> bool {
        self.expected.starts_with("accept")
    }
}

/// Returns the corpus directory, or `None` when it is not beside the repository.
pub fn dir() -> Option<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/corpus");
    dir.join("MANIFEST.tsv").is_file().then_some(dir)
}

/// Returns every manifest row, in order.
pub fn entries() -> Vec<Entry> {
    let Some(dir) = dir() else { return Vec::new() };
    let text = std::fs::read_to_string(dir.join("MANIFEST.tsv")).expect("manifest readable");
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().expect("manifest header").split('\t').collect();
    let column = |name: &str| {
        header
            .iter()
            .position(|h| *h == name)
            .expect("manifest column")
    };
    let columns = [
        column("path"),
        column("expected"),
        column("sop_instance_uid"),
        column("study_instance_uid"),
        column("series_instance_uid"),
        column("same_instance_group"),
        column("modality"),
    ];
    lines
        .map(|line| {
            let fields: Vec<&str> = line.split('\t').collect();
            let field = |index: usize| {
                fields
                    .get(columns[index])
                    .copied()
                    .unwrap_or_default()
                    .to_owned()
            };
            Entry {
                path: field(0),
                expected: field(1),
                sop_instance_uid: field(2),
                study_instance_uid: field(3),
                series_instance_uid: field(4),
                same_instance_group: field(5)
                    .split(':')
                    .next()
                    .unwrap_or_default()
                    .trim()
                    .to_owned(),
                modality: field(6),
            }
        })
        .collect()
}

/// Returns the bytes of the data set after the File Meta group (the whole input when it
/// has no Part 10 header).
pub fn dataset_bytes(object: &[u8]) -> &[u8] {
    let magic = if object.len() >= 132 && &object[128..132] == b"DICM" {
        128
    } else if object.starts_with(b"DICM") {
        0
    } else {
        return object;
    };
    let mut position = magic + 4;
    while position + 8 <= object.len() {
        let group = u16::from_le_bytes([object[position], object[position + 1]]);
        if group != 0x0002 {
            break;
        }
        let vr = &object[position + 4..position + 6];
        let (header, length) = if matches!(
            vr,
            b"OB"
                | b"OW"
                | b"SQ"
                | b"UN"
                | b"UT"
                | b"UC"
                | b"UR"
                | b"OD"
                | b"OF"
                | b"OL"
                | b"OV"
                | b"SV"
                | b"UV"
        ) {
            (
                12,
                u32::from_le_bytes(
                    object[position + 8..position + 12]
                        .try_into()
                        .expect("4 bytes"),
                ) as usize,
            )
        } else {
            (
                8,
                u16::from_le_bytes([object[position + 6], object[position + 7]]) as usize,
            )
        };
        position += header + length;
    }
    &object[position.min(object.len())..]
}

/// The Transfer Syntax UID of a Part 10 object's File Meta group, or `None` for a bare data set.
pub fn transfer_syntax_of(object: &[u8]) -> Option<String> {
    let start = if object.len() >= 132 && &object[128..132] == b"DICM" {
        128
    } else {
        return None;
    };
    let file = dicom_object::from_reader(std::io::Cursor::new(&object[start..])).ok()?;
    Some(
        file.meta()
            .transfer_syntax()
            .trim_end_matches('\0')
            .to_owned(),
    )
}

/// Whether two objects hold the same data set, element by element (value equality, VR and
/// encoding ignored): the check for instances served in another transfer syntax than stored
/// (Implicit VR Little Endian and Explicit VR Big Endian are served as Explicit VR Little
/// Endian, PS3.18 §8.7.3). A bare data set is read as Implicit VR Little Endian. Returns the
/// first difference.
pub fn same_dataset(left: &[u8], right: &[u8]) -> Result<(), String> {
    let parse = |object: &[u8]| -> Result<dicom_object::InMemDicomObject, String> {
        if object.len() >= 132 && &object[128..132] == b"DICM" {
            dicom_object::from_reader(std::io::Cursor::new(&object[128..]))
                .map(|file| file.into_inner())
                .map_err(|error| error.to_string())
        } else {
            let registry = dicom_transfer_syntax_registry::TransferSyntaxRegistry;
            let implicit = dicom_encoding::TransferSyntaxIndex::get(&registry, "1.2.840.10008.1.2")
                .ok_or("no implicit VR transfer syntax")?;
            dicom_object::InMemDicomObject::read_dataset_with_ts(
                std::io::Cursor::new(object),
                implicit,
            )
            .map_err(|error| error.to_string())
        }
    };
    same_objects(&parse(left)?, &parse(right)?)
}

/// Element-by-element comparison; sequence items recursively (their encoded lengths, defined
/// or undefined, may differ between encodings).
fn same_objects(
    left: &dicom_object::InMemDicomObject,
    right: &dicom_object::InMemDicomObject,
) -> Result<(), String> {
    use dicom_core::header::Header as _;
    use dicom_core::value::Value;
    let left_tags: Vec<_> = left.iter().map(|element| element.tag()).collect();
    let right_tags: Vec<_> = right.iter().map(|element| element.tag()).collect();
    if left_tags != right_tags {
        return Err(format!(
            "different elements: {left_tags:?} vs {right_tags:?}"
        ));
    }
    for (left_element, right_element) in left.iter().zip(right.iter()) {
        let tag = left_element.tag();
        match (left_element.value(), right_element.value()) {
            (Value::Sequence(left_items), Value::Sequence(right_items)) => {
                if left_items.items().len() != right_items.items().len() {
                    return Err(format!("{tag}: number of items differs"));
                }
                for (left_item, right_item) in left_items.items().iter().zip(right_items.items()) {
                    same_objects(left_item, right_item)
                        .map_err(|error| format!("{tag} > {error}"))?;
                }
            }
            (left_value, right_value) if left_value == right_value => {}
            _ => return Err(format!("{tag} differs")),
        }
    }
    Ok(())
}
