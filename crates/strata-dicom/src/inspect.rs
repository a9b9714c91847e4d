//! Parsing and validation of one received object, with bounded memory.
//!
//! Two passes over the spooled file:
//! 1. a structural walk with dicom-parser's lazy reader that visits every element, item and
//!    fragment to the end of the stream, checking each declared length against what remains of
//!    the file before skipping it (so a truncated file or an absurd length is refused without
//!    allocating), and records where the pixel data lies;
//! 2. a metadata read with dicom-object that stops at the top-level Pixel Data, from which the
//!    catalog attributes and the DICOM JSON are built.

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::Path;

use dicom_core::Tag;
use dicom_dictionary_std::tags;
use dicom_encoding::TransferSyntaxIndex;
use dicom_encoding::transfer_syntax::TransferSyntax;
use dicom_object::{InMemDicomObject, OpenFileOptions, file::ReadPreamble};
use dicom_parser::dataset::LazyDataToken;
use dicom_parser::dataset::lazy_read::LazyDataSetReader;
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;

use crate::attributes::ExtractedAttributes;
use crate::error::{DicomError, DicomErrorKind};
use crate::json::to_dicom_json;
use crate::transfer_syntax::{
    DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN, EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN,
};

/// Limits applied while inspecting.
#[derive(Debug, Clone, Copy)]
pub struct InspectLimits {
    /// Objects larger than this are refused.
    pub max_object_bytes: u64,
    /// Objects that must be parsed whole in memory (deflated data sets, objects without a
    /// File Meta header) are refused above this size.
    pub max_in_memory_bytes: u64,
}

impl Default for InspectLimits {
    fn default() -> Self {
        Self {
            max_object_bytes: 8 << 30,
            max_in_memory_bytes: 512 << 20,
        }
    }
}

/// Where the top-level pixel data lies in the received file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PixelDataLayout {
    /// Offset of the first value byte (native) or of the Basic Offset Table item header
    /// (encapsulated), in the received file.
    pub value_offset: u64,
    /// Value length of native pixel data; `None` when encapsulated.
    pub native_length: Option<u64>,
    /// `(offset, length)` of each encapsulated fragment's bytes, the Basic Offset Table
    /// first.
    pub fragments: Vec<(u64, u32)>,
}

impl PixelDataLayout {
    /// Returns the layout as the compact JSON the catalog records, every offset moved by
    /// `shift` bytes (the length of a Part 10 header written in front of the received bytes):
    /// `{"native":[offset,length]}` or `{"fragments":[[offset,length],...]}` (the Basic
    /// Offset Table first).
    pub fn to_catalog_json(&self, shift: u64) -> String {
        match self.native_length {
            Some(length) => {
                serde_json::json!({ "native": [self.value_offset + shift, length] }).to_string()
            }
            None => {
                let fragments: Vec<[u64; 2]> = self
                    .fragments
                    .iter()
                    .map(|&(offset, length)| {
                        // Empty items are reported at offset 0; only their length matters.
                        let offset = if length == 0 { 0 } else { offset + shift };
                        [offset, u64::from(length)]
                    })
                    .collect();
                serde_json::json!({ "fragments": fragments }).to_string()
            }
        }
    }

    /// Parses the catalog JSON written by [`PixelDataLayout::to_catalog_json`].
    pub fn from_catalog_json(text: &str) -> Option<Self> {
        let value: serde_json::Value = serde_json::from_str(text).ok()?;
        if let Some(native) = value.get("native") {
            let offset = native.get(0)?.as_u64()?;
            let length = native.get(1)?.as_u64()?;
            return Some(Self {
                value_offset: offset,
                native_length: Some(length),
                fragments: Vec::new(),
            });
        }
        let fragments = value
            .get("fragments")?
            .as_array()?
            .iter()
            .map(|pair| {
                let offset = pair.get(0)?.as_u64()?;
                let length = u32::try_from(pair.get(1)?.as_u64()?).ok()?;
                Some((offset, length))
            })
            .collect::<Option<Vec<_>>>()?;
        Some(Self {
            value_offset: fragments
                .first()
                .map_or(0, |&(offset, _)| offset.saturating_sub(8)),
            native_length: None,
            fragments,
        })
    }
}

/// The outcome of inspecting a received object that can be archived.
#[derive(Debug, Clone)]
pub struct InspectedInstance {
    /// Whether the received bytes start with a Part 10 header (preamble, `DICM`, group 0002).
    pub has_file_meta: bool,
    /// Offset of the first data set byte after the File Meta group (0 without one).
    pub dataset_offset: u64,
    /// Size of the received file.
    pub file_len: u64,
    /// The transfer syntax of the data set.
    pub transfer_syntax_uid: String,
    /// What the catalog indexes.
    pub attributes: ExtractedAttributes,
    /// The DICOM JSON of the whole data set, bulk data as placeholders.
    pub metadata: serde_json::Value,
    /// Where the pixel data is, when there is top-level Pixel Data.
    pub pixel_data: Option<PixelDataLayout>,
    /// What was accepted leniently (reported to STOW-RS clients as a warning).
    pub warnings: Vec<String>,
}

/// Parses and validates the object in `path`.
///
/// Refuses (with a reason naming the problem) anything that is not a complete, structurally
/// sound DICOM data set with valid Study, Series and SOP Instance UIDs and a SOP Class UID.
pub fn inspect_file(path: &Path, limits: InspectLimits) -> Result<InspectedInstance, DicomError> {
    let mut file = File::open(path).map_err(DicomError::io)?;
    let file_len = file.metadata().map_err(DicomError::io)?.len();
    if file_len == 0 {
        return Err(DicomError::malformed("the object is empty"));
    }
    if file_len > limits.max_object_bytes {
        return Err(DicomError {
            kind: DicomErrorKind::TooLarge,
            reason: format!(
                "the object is {file_len} bytes, more than the limit of {} bytes",
                limits.max_object_bytes
            ),
        });
    }
    let mut head = Vec::with_capacity(132);
    (&mut file)
        .take(132)
        .read_to_end(&mut head)
        .map_err(DicomError::io)?;

    let magic_offset = if head.len() >= 132 && &head[128..132] == b"DICM" {
        Some(128)
    } else if head.starts_with(b"DICM") {
        Some(0)
    } else {
        None
    };

    let mut warnings = Vec::new();
    let (transfer_syntax_uid, dataset_offset, mut object, pixel_data) = match magic_offset {
        Some(magic_offset) => {
            let dataset_offset = file_meta_end(&mut file, magic_offset + 4, file_len)?;
            let meta_bytes = read_range(&mut file, magic_offset, dataset_offset)?;
            let meta = dicom_object::FileMetaTable::from_reader(meta_bytes.as_slice()).map_err(
                |error| DicomError::malformed(format!("invalid file meta information: {error}")),
            )?;
            let transfer_syntax_uid = meta.transfer_syntax().to_owned();
            let ts = lookup_transfer_syntax(&transfer_syntax_uid)?;
            let is_deflated = ts.uid() == DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN;
            if is_deflated && file_len > limits.max_in_memory_bytes {
                // A deflated data set cannot be walked lazily; it is parsed in memory.
                return Err(too_large_in_memory(file_len, limits));
            }
            let pixel_data = if is_deflated {
                None
            } else {
                pixel_data_layout(&mut file, dataset_offset, file_len, ts)?
            };
            file.seek(SeekFrom::Start(magic_offset))
                .map_err(DicomError::io)?;
            let mut options = OpenFileOptions::new().read_preamble(ReadPreamble::Never);
            if !is_deflated {
                options = options.read_until(tags::PIXEL_DATA);
            }
            let file_object = options
                .from_reader(BufReader::new(&mut file))
                .map_err(|error| DicomError::malformed(format!("invalid data set: {error}")))?;
            let media_sop_instance = meta.media_storage_sop_instance_uid().to_owned();
            let object = file_object.into_inner();
            warnings.extend(check_meta_matches(&object, &media_sop_instance));
            (transfer_syntax_uid, dataset_offset, object, pixel_data)
        }
        None => {
            if file_len > limits.max_in_memory_bytes {
                return Err(too_large_in_memory(file_len, limits));
            }
            let transfer_syntax_uid = infer_transfer_syntax(&head).to_owned();
            let ts = lookup_transfer_syntax(&transfer_syntax_uid)?;
            let pixel_data = pixel_data_layout(&mut file, 0, file_len, ts)?;
            file.seek(SeekFrom::Start(0)).map_err(DicomError::io)?;
            let object = InMemDicomObject::read_dataset_with_ts(BufReader::new(&mut file), ts)
                .map_err(|error| DicomError::malformed(format!("invalid data set: {error}")))?;
            (transfer_syntax_uid, 0, object, pixel_data)
        }
    };

    crate::charset::redecode_iso2022(&mut object, "");
    let (attributes, attribute_warnings) =
        ExtractedAttributes::from_object(&object, &transfer_syntax_uid)?;
    warnings.extend(attribute_warnings);
    if let Some(layout) = &pixel_data {
        if layout.native_length == Some(0) && attributes.rows.unwrap_or(0) > 0 {
            return Err(DicomError::malformed(
                "Pixel Data (7FE0,0010) is empty although Rows and Columns describe an image",
            ));
        }
        if layout.native_length.is_none() && layout.fragments.len() < 2 {
            return Err(DicomError::malformed(
                "encapsulated Pixel Data (7FE0,0010) holds no fragment after the Basic Offset Table",
            ));
        }
    }
    let mut metadata = to_dicom_json(&object, pixel_data.is_some(), &transfer_syntax_uid);
    if let Some(map) = metadata.as_object_mut() {
        // Derived UIDs (see `ExtractedAttributes::from_object`) appear in the metadata so that
        // clients see the identifiers the archive files the object under.
        for (key, uid) in [
            ("0020000D", attributes.study_instance_uid.as_str()),
            ("0020000E", attributes.series_instance_uid.as_str()),
        ] {
            map.entry(key)
                .or_insert_with(|| serde_json::json!({ "vr": "UI", "Value": [uid] }));
        }
    }
    Ok(InspectedInstance {
        has_file_meta: magic_offset.is_some(),
        dataset_offset,
        file_len,
        transfer_syntax_uid,
        attributes,
        metadata,
        pixel_data,
        warnings,
    })
}

fn too_large_in_memory(file_len: u64, limits: InspectLimits) -> DicomError {
    DicomError {
        kind: DicomErrorKind::TooLarge,
        reason: format!(
            "objects without a File Meta header or with a deflated data set are parsed in memory \
             and limited to {} bytes; this one is {file_len} bytes",
            limits.max_in_memory_bytes
        ),
    }
}

fn lookup_transfer_syntax(uid: &str) -> Result<&'static TransferSyntax, DicomError> {
    let trimmed = uid.trim_end_matches(['\0', ' ']);
    if trimmed.is_empty() {
        return Err(DicomError::missing(
            "the File Meta header has no Transfer Syntax UID (0002,0010)",
        ));
    }
    TransferSyntaxRegistry
        .get(trimmed)
        .ok_or_else(|| DicomError {
            kind: DicomErrorKind::UnsupportedTransferSyntax,
            reason: format!("transfer syntax `{trimmed}` is not supported"),
        })
}

/// Guesses the transfer syntax of a data set without a File Meta header from its first
/// element: a valid two-letter VR after the tag means Explicit VR Little Endian.
fn infer_transfer_syntax(head: &[u8]) -> &'static str {
    const EXPLICIT_VRS: [&[u8; 2]; 34] = [
        b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FL", b"FD", b"IS", b"LO", b"LT", b"OB",
        b"OD", b"OF", b"OL", b"OV", b"OW", b"PN", b"SH", b"SL", b"SQ", b"SS", b"ST", b"SV", b"TM",
        b"UC", b"UI", b"UL", b"UN", b"UR", b"US", b"UT", b"UV",
    ];
    if head.len() >= 6 && EXPLICIT_VRS.iter().any(|vr| &head[4..6] == vr.as_slice()) {
        EXPLICIT_VR_LITTLE_ENDIAN
    } else {
        IMPLICIT_VR_LITTLE_ENDIAN
    }
}

/// Walks the explicit VR little endian elements of group 0002 starting at `start` (just after
/// `DICM`) and returns the offset of the first data set byte.
fn file_meta_end(file: &mut File, start: u64, file_len: u64) -> Result<u64, DicomError> {
    let mut position = start;
    let mut reader = BufReader::new(file);
    reader
        .seek(SeekFrom::Start(start))
        .map_err(DicomError::io)?;
    loop {
        if position == file_len {
            return Err(DicomError::malformed(
                "the object ends after its File Meta header: no data set",
            ));
        }
        let mut header = [0u8; 8];
        reader
            .read_exact(&mut header)
            .map_err(|_| DicomError::malformed("the File Meta header is truncated"))?;
        let group = u16::from_le_bytes([header[0], header[1]]);
        if group != 0x0002 {
            return Ok(position);
        }
        let vr = &header[4..6];
        let (header_len, value_len) = if matches!(
            vr,
            b"OB"
                | b"OW"
                | b"OF"
                | b"OD"
                | b"OL"
                | b"OV"
                | b"SQ"
                | b"UT"
                | b"UN"
                | b"UC"
                | b"UR"
                | b"SV"
                | b"UV"
        ) {
            let mut length = [0u8; 4];
            reader
                .read_exact(&mut length)
                .map_err(|_| DicomError::malformed("the File Meta header is truncated"))?;
            (12u64, u64::from(u32::from_le_bytes(length)))
        } else if vr.iter().all(u8::is_ascii_uppercase) {
            (8u64, u64::from(u16::from_le_bytes([header[6], header[7]])))
        } else {
            return Err(DicomError::malformed(
                "the File Meta header is not encoded as Explicit VR Little Endian",
            ));
        };
        if value_len == u64::from(u32::MAX) || position + header_len + value_len > file_len {
            return Err(DicomError::malformed(
                "an element of the File Meta header has a length beyond the end of the object",
            ));
        }
        position += header_len + value_len;
        reader
            .seek(SeekFrom::Start(position))
            .map_err(DicomError::io)?;
    }
}

fn read_range(file: &mut File, from: u64, to: u64) -> Result<Vec<u8>, DicomError> {
    file.seek(SeekFrom::Start(from)).map_err(DicomError::io)?;
    let mut bytes = vec![0u8; (to - from) as usize];
    file.read_exact(&mut bytes).map_err(DicomError::io)?;
    Ok(bytes)
}

/// The data set is authoritative: a File Meta header that disagrees is reported, not fatal
/// (many real files carry a stale Media Storage SOP Instance UID).
fn check_meta_matches(object: &InMemDicomObject, media_sop_instance: &str) -> Option<String> {
    let dataset_sop = object
        .get(tags::SOP_INSTANCE_UID)
        .and_then(|element| element.to_str().ok())
        .map(|value| value.trim_end_matches(['\0', ' ']).to_owned())
        .unwrap_or_default();
    (!media_sop_instance.is_empty() && !dataset_sop.is_empty() && media_sop_instance != dataset_sop).then(|| {
        format!(
            "Media Storage SOP Instance UID (0002,0003) `{media_sop_instance}` differs from SOP \
             Instance UID (0008,0018) `{dataset_sop}`; the data set's value is used"
        )
    })
}

/// Visits every token of the data set to its end, checking each length against what remains
/// of the file, and returns where the top-level pixel data is.
fn pixel_data_layout(
    file: &mut File,
    dataset_offset: u64,
    file_len: u64,
    ts: &TransferSyntax,
) -> Result<Option<PixelDataLayout>, DicomError> {
    let mut layout: Option<PixelDataLayout> = None;
    walk(
        file,
        dataset_offset,
        file_len,
        ts,
        |event, absolute_offset| match event {
            WalkEvent::NativePixelData(length) => {
                layout = Some(PixelDataLayout {
                    value_offset: absolute_offset,
                    native_length: Some(length),
                    fragments: Vec::new(),
                });
            }
            WalkEvent::PixelSequenceStart => {
                layout = Some(PixelDataLayout {
                    value_offset: absolute_offset,
                    native_length: None,
                    fragments: Vec::new(),
                });
            }
            WalkEvent::Fragment(length) => {
                if let Some(layout) = layout.as_mut() {
                    if layout.fragments.is_empty() && absolute_offset >= 8 {
                        // The first item header (the Basic Offset Table) precedes its value.
                        layout.value_offset = absolute_offset - 8;
                    }
                    layout.fragments.push((absolute_offset, length));
                }
            }
        },
    )?;
    Ok(layout)
}

enum WalkEvent {
    NativePixelData(u64),
    PixelSequenceStart,
    Fragment(u32),
}

fn walk(
    file: &mut File,
    dataset_offset: u64,
    file_len: u64,
    ts: &TransferSyntax,
    mut on_event: impl FnMut(WalkEvent, u64),
) -> Result<(), DicomError> {
    file.seek(SeekFrom::Start(dataset_offset))
        .map_err(DicomError::io)?;
    let reader = BufReader::with_capacity(64 * 1024, &mut *file);
    let mut dataset = LazyDataSetReader::new_with_ts(reader, ts)
        .map_err(|error| DicomError::malformed(format!("cannot read the data set: {error}")))?;
    // Positions reported by the decoder are absolute offsets in the file (the reader starts
    // at `dataset_offset` and the decoder takes its stream position).
    // Sequence and item nesting; the walker reports pixel data only at the top level.
    let mut depth = 0usize;
    let mut in_pixel_sequence = false;
    let mut num_tokens = 0u64;
    while let Some(token) = dataset.advance() {
        let token =
            token.map_err(|error| DicomError::malformed(format!("invalid data set: {error}")))?;
        num_tokens += 1;
        match token {
            LazyDataToken::SequenceStart { .. } => depth += 1,
            LazyDataToken::ItemStart { len } => {
                if in_pixel_sequence && depth == 1 && len.0 == 0 {
                    // An empty item (typically an empty Basic Offset Table) has no value token.
                    on_event(WalkEvent::Fragment(0), 0);
                }
                depth += 1;
            }
            LazyDataToken::SequenceEnd | LazyDataToken::ItemEnd => {
                if depth == 0 {
                    return Err(DicomError::malformed(
                        "a sequence delimiter has no matching start",
                    ));
                }
                depth -= 1;
                if depth == 0 {
                    in_pixel_sequence = false;
                }
            }
            LazyDataToken::PixelSequenceStart => {
                if depth == 0 {
                    in_pixel_sequence = true;
                    on_event(WalkEvent::PixelSequenceStart, 0);
                }
                depth += 1;
            }
            LazyDataToken::LazyValue { header, decoder } => {
                use dicom_parser::stateful::decode::StatefulDecode;
                let position = decoder.position();
                let length = u64::from(header.len.0);
                if position + length > file_len {
                    return Err(DicomError::malformed(format!(
                        "element {} declares {length} bytes but only {} remain in the object",
                        tag_text(header.tag),
                        file_len.saturating_sub(position)
                    )));
                }
                if depth == 0 && header.tag == tags::PIXEL_DATA {
                    on_event(WalkEvent::NativePixelData(length), position);
                }
                decoder
                    .skip_bytes(header.len.0)
                    .map_err(|error| DicomError::malformed(format!("invalid data set: {error}")))?;
            }
            LazyDataToken::LazyItemValue { len, decoder } => {
                use dicom_parser::stateful::decode::StatefulDecode;
                let position = decoder.position();
                if position + u64::from(len) > file_len {
                    return Err(DicomError::malformed(format!(
                        "a pixel data fragment declares {len} bytes but only {} remain in the object",
                        file_len.saturating_sub(position)
                    )));
                }
                if in_pixel_sequence && depth == 2 {
                    on_event(WalkEvent::Fragment(len), position);
                }
                decoder
                    .skip_bytes(len)
                    .map_err(|error| DicomError::malformed(format!("invalid data set: {error}")))?;
            }
            LazyDataToken::ElementHeader(_) => {}
            _ => {}
        }
    }
    if depth != 0 {
        return Err(DicomError::malformed(
            "the object ends inside a sequence or encapsulated pixel data: a delimiter is missing",
        ));
    }
    if num_tokens == 0 {
        return Err(DicomError::malformed("the object holds no data set"));
    }
    Ok(())
}

pub(crate) fn tag_text(tag: Tag) -> String {
    format!("({:04X},{:04X})", tag.group(), tag.element())
}
