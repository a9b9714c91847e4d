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
