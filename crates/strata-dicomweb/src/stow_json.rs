//! STOW-RS of `multipart/related; type="application/dicom+json"` (PS3.18 §10.5.1.2.2): a
//! metadata part holding a JSON array of data sets (PS3.18 Annex F) whose `BulkDataURI` values
//! name the other parts by their `Content-Location`.
//!
//! Each data set becomes a Part 10 file in Explicit VR Little Endian, written to the spool with
//! the bulk data copied from the spooled bulk parts (never held in memory), then goes through
//! the same [`strata_ingest::IngestPipeline`] as an `application/dicom` part, so validation,
//! storage and the catalog are shared. Text is written as UTF-8 (`ISO_IR 192`) when any value
//! is not ASCII, since DICOM JSON is Unicode.
//!
//! Not supported: compressed bulk data (a bulk part whose Content-Type is not
//! `application/octet-stream`, e.g. `image/jpeg`); such a data set is refused with reason
//! 0xC000. A broken data set is one failure in the response, never the whole request; only a
//! body without a parseable metadata part is a 400.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::Path;
use std::sync::Arc;

use base64::Engine as _;
use futures::StreamExt;
use serde_json::{Map, Value as Json};
use strata_ingest::{FailureReason, IngestError, IngestOutcome, IngestSource, SpooledObject};
use strata_types::StudyUid;
use tracing::warn;

use crate::{DicomwebState, Problem};

/// The largest metadata part accepted, in bytes; bulk data goes in other parts.
const MAX_METADATA_BYTES: usize = 64 << 20;

/// Explicit VR Little Endian, the transfer syntax of the files built here.
const EXPLICIT_VR_LITTLE_ENDIAN: &str = "1.2.840.10008.1.2.1";

/// A bulk data part, spooled to disk.
struct BulkPart {
    spooled: SpooledObject,
    /// Content-Type essence, lowercase; `None` when the part had none.
    content_type: Option<String>,
}

/// What was read from the request body.
struct Received {
    datasets: Vec<Json>,
    bulk_parts: HashMap<String, BulkPart>,
    /// A failure while reading the body after some parts were read.
    body_error: Option<String>,
}

/// Reads the whole multipart body (metadata in memory, bulk parts to the spool), then builds
/// and ingests one Part 10 object per data set. Returns the outcomes in data set order and a
/// message when the body broke off; `Err` (a 400) when no metadata part could be parsed.
pub(crate) async fn receive(
    state: &DicomwebState,
    multipart: multer::Multipart<'static>,
    source: Arc<IngestSource>,
    expected_study: Option<StudyUid>,
) -> Result<(Vec<IngestOutcome>, Option<String>), Problem> {
    let received = read_parts(state, multipart).await?;
    let bulk_parts = Arc::new(received.bulk_parts);
    let expected_study = Arc::new(expected_study);
    let concurrency = state.settings.ingest_concurrency.max(1);
    let outcomes = futures::stream::iter(received.datasets.into_iter().enumerate())
        .map(|(position, dataset)| {
            let pipeline = state.pipeline.clone();
            let bulk_parts = bulk_parts.clone();
            let source = source.clone();
            let expected_study = expected_study.clone();
            async move {
                ingest_dataset(
                    &pipeline,
                    position,
                    dataset,
                    bulk_parts,
                    &source,
                    expected_study.as_ref().as_ref(),
                )
                .await
            }
        })
        .buffered(concurrency)
        .collect::<Vec<_>>()
        .await;
    Ok((outcomes, received.body_error))
}

async fn read_parts(
    state: &DicomwebState,
    mut multipart: multer::Multipart<'static>,
) -> Result<Received, Problem> {
    let mut metadata_parts: Vec<Vec<u8>> = Vec::new();
    let mut bulk_parts = HashMap::new();
    let mut body_error = None;
    loop {
        let mut field = match multipart.next_field().await {
            Ok(Some(field)) => field,
            Ok(None) => break,
            Err(error) => {
                body_error = Some(format!(
                    "the multipart body is malformed or truncated: {error}"
                ));
                break;
            }
        };
        let part_type = field
            .content_type()
            .map(|mime| mime.essence_str().to_ascii_lowercase());
        let is_metadata = matches!(
            part_type.as_deref(),
            Some("application/dicom+json" | "application/json")
        );
        if is_metadata {
            let mut bytes = Vec::new();
            loop {
                match field.chunk().await {
                    Ok(Some(chunk)) => {
                        if bytes.len() + chunk.len() > MAX_METADATA_BYTES {
                            return Err(Problem::bad_request(format!(
                                "the metadata part is larger than {MAX_METADATA_BYTES} bytes; \
                                 send bulk data as separate parts"
                            )));
                        }
                        bytes.extend_from_slice(&chunk);
                    }
                    Ok(None) => break,
                    Err(error) => {
                        body_error = Some(format!(
                            "the multipart body is malformed or truncated: {error}"
                        ));
                        break;
                    }
                }
            }
            if body_error.is_some() {
                break;
            }
            metadata_parts.push(bytes);
            continue;
        }
        let location = field
            .headers()
            .get(http::header::CONTENT_LOCATION)
            .and_then(|value| value.to_str().ok())
            .map(|value| value.trim().to_owned());
        let spooled = match state.pipeline.spool(field).await {
            Ok(spooled) => spooled,
            Err(IngestError::TooLarge { limit }) => {
                body_error = Some(format!(
                    "a bulk data part is larger than the limit of {limit} bytes"
                ));
                break;
            }
            Err(IngestError::Body(message)) => {
                body_error = Some(format!(
                    "the multipart body is malformed or truncated: {message}"
                ));
                break;
            }
            Err(error) => {
                warn!(%error, "spooling a bulk data part failed");
                return Err(Problem::unavailable(&error));
            }
        };
        // A bulk part nobody can reference (no Content-Location) is read and dropped.
        if let Some(location) = location {
            bulk_parts.insert(
                location,
                BulkPart {
                    spooled,
                    content_type: part_type,
                },
            );
        }
    }
    if metadata_parts.is_empty() {
        let detail = body_error.unwrap_or_else(|| {
            "the request holds no application/dicom+json metadata part".to_owned()
        });
        return Err(Problem::bad_request(detail));
    }
    let mut datasets = Vec::new();
    for bytes in metadata_parts {
        match serde_json::from_slice::<Json>(&bytes) {
            Ok(Json::Array(items)) => datasets.extend(items),
            Ok(object @ Json::Object(_)) => datasets.push(object),
            Ok(_) => {
                return Err(Problem::bad_request(
                    "the application/dicom+json part is not an array of data sets",
                ));
            }
            Err(error) => {
                return Err(Problem::bad_request(format!(
                    "the application/dicom+json part is not valid JSON: {error}"
                )));
            }
        }
    }
    if datasets.is_empty() {
        return Err(Problem::bad_request(
            "the application/dicom+json part holds no data set",
        ));
    }
    Ok(Received {
        datasets,
        bulk_parts,
        body_error,
    })
}

async fn ingest_dataset(
    pipeline: &strata_ingest::IngestPipeline,
    position: usize,
    dataset: Json,
    bulk_parts: Arc<HashMap<String, BulkPart>>,
    source: &IngestSource,
    expected_study: Option<&StudyUid>,
) -> IngestOutcome {
    let Json::Object(dataset) = dataset else {
        return refused(
            None,
            None,
            FailureReason::CannotUnderstand,
            format!("data set {position} of the metadata is not a JSON object"),
        );
    };
    let sop_class_uid = first_string(&dataset, "00080016");
    let sop_instance_uid = first_string(&dataset, "00080018");
    for (tag, name) in [
        ("00080016", "SOP Class UID (0008,0016)"),
        ("00080018", "SOP Instance UID (0008,0018)"),
        ("0020000D", "Study Instance UID (0020,000D)"),
        ("0020000E", "Series Instance UID (0020,000E)"),
    ] {
        if first_string(&dataset, tag).is_none() {
            return refused(
                sop_class_uid,
                sop_instance_uid,
                FailureReason::DataSetDoesNotMatchSopClass,
                format!("data set {position} has no {name}"),
            );
        }
    }
    let spool_dir = pipeline.settings().spool_dir.clone();
    let built = {
        let spool_dir = spool_dir.clone();
        tokio::task::spawn_blocking(move || build_part10(&spool_dir, &dataset, &bulk_parts)).await
    };
    let part10 = match built {
        Ok(Ok(part10)) => part10,
        Ok(Err(error)) => {
            return refused(
                sop_class_uid,
                sop_instance_uid,
                error.reason,
                format!("data set {position}: {}", error.message),
            );
        }
        Err(join_error) => {
            warn!(error = %join_error, "building a part 10 object failed");
            return refused(
                sop_class_uid,
                sop_instance_uid,
                FailureReason::ProcessingFailure,
                "internal error".to_owned(),
            );
        }
    };
    let max_bytes = pipeline.settings().max_object_bytes;
    let spooled = match SpooledObject::from_file(&spool_dir, &part10, max_bytes).await {
        Ok(spooled) => spooled,
        Err(IngestError::TooLarge { limit }) => {
            return refused(
                sop_class_uid,
                sop_instance_uid,
                FailureReason::OutOfResources,
                format!("data set {position} is larger than the limit of {limit} bytes"),
            );
        }
        Err(error) => {
            warn!(%error, "spooling a built part 10 object failed");
            return refused(
                sop_class_uid,
                sop_instance_uid,
                FailureReason::OutOfResources,
                "the archive could not spool the object".to_owned(),
            );
        }
    };
    drop(part10);
    pipeline.ingest(spooled, source, expected_study).await
}

fn refused(
    sop_class_uid: Option<String>,
    sop_instance_uid: Option<String>,
    reason: FailureReason,
    message: String,
) -> IngestOutcome {
    IngestOutcome::Refused {
        sop_class_uid,
        sop_instance_uid,
        reason,
        message,
    }
}

/// Returns the first value of a string element of `dataset`, if present and non-empty.
fn first_string(dataset: &Map<String, Json>, tag: &str) -> Option<String> {
    let element = dataset
        .get(tag)
        .or_else(|| dataset.get(&tag.to_ascii_lowercase()))?;
    element
        .get("Value")?
        .as_array()?
        .first()?
        .as_str()
        .map(|value| value.trim().to_owned())
        .filter(|value| !value.is_empty())
}

/// Why a data set could not be turned into a Part 10 object.
#[derive(Debug)]
struct BuildError {
    reason: FailureReason,
    message: String,
}

impl BuildError {
    fn malformed(message: impl Into<String>) -> Self {
        Self {
            reason: FailureReason::CannotUnderstand,
            message: message.into(),
        }
    }
}

impl From<std::io::Error> for BuildError {
    fn from(error: std::io::Error) -> Self {
        warn!(%error, "writing a part 10 object to the spool failed");
        Self {
            reason: FailureReason::OutOfResources,
            message: "the archive could not write the object to its spool".to_owned(),
        }
    }
}

/// A Part 10 file in the spool, removed on drop.
#[derive(Debug)]
struct BuiltFile(tempfile::TempPath);

impl std::ops::Deref for BuiltFile {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

/// Writes `dataset` as a Part 10 file (Explicit VR Little Endian) in `spool_dir`.
fn build_part10(
    spool_dir: &Path,
    dataset: &Map<String, Json>,
    bulk_parts: &HashMap<String, BulkPart>,
) -> Result<BuiltFile, BuildError> {
    let sop_class_uid = first_string(dataset, "00080016").unwrap_or_default();
    let sop_instance_uid = first_string(dataset, "00080018").unwrap_or_default();
    std::fs::create_dir_all(spool_dir)?;
    let temp_file = tempfile::Builder::new()
        .prefix("json-")
        .suffix(".dcm")
        .tempfile_in(spool_dir)?;
    let (file, path) = temp_file.into_parts();
    let mut out = BufWriter::with_capacity(256 * 1024, file);
    strata_dicom::write_part10_header(
        &mut out,
        &sop_class_uid,
        &sop_instance_uid,
        EXPLICIT_VR_LITTLE_ENDIAN,
    )
    .map_err(|error| BuildError::malformed(error.reason))?;
    let encoder = Encoder {
        bulk_parts,
        unicode: dataset.values().any(has_non_ascii_text),
    };
    encoder.write_dataset(&mut out, dataset, true)?;
    out.flush()?;
    out.get_ref().sync_all()?;
    Ok(BuiltFile(path))
}

fn has_non_ascii_text(value: &Json) -> bool {
    match value {
        Json::String(text) => !text.is_ascii(),
        Json::Array(items) => items.iter().any(has_non_ascii_text),
        Json::Object(map) => map
            .iter()
            .filter(|(key, _)| key.as_str() != "InlineBinary" && key.as_str() != "BulkDataURI")
            .any(|(_, value)| has_non_ascii_text(value)),
        _ => false,
    }
}

/// VRs with a 4-byte length (and two reserved bytes) in Explicit VR encoding.
fn has_long_length(vr: &str) -> bool {
    matches!(
        vr,
        "OB" | "OD" | "OF" | "OL" | "OV" | "OW" | "SQ" | "SV" | "UC" | "UN" | "UR" | "UT" | "UV"
    )
}

struct Encoder<'a> {
    bulk_parts: &'a HashMap<String, BulkPart>,
    /// Whether text is written as UTF-8 with Specific Character Set `ISO_IR 192`.
    unicode: bool,
}

impl Encoder<'_> {
    fn write_dataset(
        &self,
        out: &mut impl Write,
        dataset: &Map<String, Json>,
        top_level: bool,
    ) -> Result<(), BuildError> {
        let mut elements: Vec<(u32, &Json)> = Vec::with_capacity(dataset.len());
        for (key, element) in dataset {
            let tag = u32::from_str_radix(key, 16)
                .ok()
                .filter(|_| key.len() == 8)
                .ok_or_else(|| BuildError::malformed(format!("`{key}` is not a tag")))?;
            let group = tag >> 16;
            // File Meta elements are written by the header; group lengths are not needed.
            if group == 0x0002 || tag & 0xFFFF == 0 {
                continue;
            }
            elements.push((tag, element));
        }
        elements.sort_by_key(|(tag, _)| *tag);
        let mut wrote_charset = false;
        for (tag, element) in elements {
            if top_level && tag == 0x0008_0005 && self.unicode {
                self.write_charset(out)?;
                wrote_charset = true;
                continue;
            }
            if top_level && !wrote_charset && self.unicode && tag > 0x0008_0005 {
                self.write_charset(out)?;
                wrote_charset = true;
            }
            self.write_element(out, tag, element)?;
        }
        if top_level && !wrote_charset && self.unicode {
            self.write_charset(out)?;
        }
        Ok(())
    }

    fn write_charset(&self, out: &mut impl Write) -> Result<(), BuildError> {
        write_header(out, 0x0008_0005, "CS", 10)?;
        out.write_all(b"ISO_IR 192")?;
        Ok(())
    }

    fn write_element(
        &self,
        out: &mut impl Write,
        tag: u32,
        element: &Json,
    ) -> Result<(), BuildError> {
        let name = format!("({:04X},{:04X})", tag >> 16, tag & 0xFFFF);
        let Json::Object(element) = element else {
            return Err(BuildError::malformed(format!(
                "element {name} is not an object"
            )));
        };
        let vr = element
            .get("vr")
            .and_then(Json::as_str)
            .and_then(|vr| resolve_vr(tag, vr))
            .ok_or_else(|| BuildError::malformed(format!("element {name} has no valid vr")))?;
        let value = element.get("Value");
        let inline = element.get("InlineBinary");
        let bulk_uri = element.get("BulkDataURI");
        if usize::from(value.is_some())
            + usize::from(inline.is_some())
            + usize::from(bulk_uri.is_some())
            > 1
        {
            return Err(BuildError::malformed(format!(
                "element {name} has more than one of Value, InlineBinary and BulkDataURI"
            )));
        }
        if vr == "SQ" {
            return self.write_sequence(out, tag, &name, value);
        }
        if let Some(uri) = bulk_uri {
            let uri = uri.as_str().ok_or_else(|| {
                BuildError::malformed(format!("the BulkDataURI of {name} is not a string"))
            })?;
            return self.write_bulk(out, tag, vr, &name, uri);
        }
        let bytes = match (inline, value) {
            (Some(inline), _) => {
                let text = inline.as_str().ok_or_else(|| {
                    BuildError::malformed(format!("the InlineBinary of {name} is not a string"))
                })?;
                let mut bytes = base64::engine::general_purpose::STANDARD
                    .decode(text.trim())
                    .map_err(|error| {
                        BuildError::malformed(format!(
                            "the InlineBinary of {name} is not base64: {error}"
                        ))
                    })?;
                if bytes.len() % 2 == 1 {
                    bytes.push(0);
                }
                bytes
            }
            (None, Some(value)) => {
                let items = value.as_array().ok_or_else(|| {
                    BuildError::malformed(format!("the Value of {name} is not an array"))
                })?;
                encode_values(vr, items).map_err(|message| {
                    BuildError::malformed(format!("element {name}: {message}"))
                })?
            }
            (None, None) => Vec::new(),
        };
        let length = u32::try_from(bytes.len())
            .ok()
            .filter(|length| has_long_length(vr) || *length <= 0xFFFE)
            .ok_or_else(|| {
                BuildError::malformed(format!("the value of {name} is too long for VR {vr}"))
            })?;
        write_header(out, tag, vr, length)?;
        out.write_all(&bytes)?;
        Ok(())
    }

    fn write_sequence(
        &self,
        out: &mut impl Write,
        tag: u32,
        name: &str,
        value: Option<&Json>,
    ) -> Result<(), BuildError> {
        let items = match value {
            None => &Vec::new(),
            Some(Json::Array(items)) => items,
            Some(_) => {
                return Err(BuildError::malformed(format!(
                    "the Value of {name} is not an array"
                )));
            }
        };
        write_header(out, tag, "SQ", 0xFFFF_FFFF)?;
        for item in items {
            let Json::Object(item) = item else {
                return Err(BuildError::malformed(format!(
                    "an item of {name} is not an object"
                )));
            };
            write_tag(out, 0xFFFE_E000)?;
            out.write_all(&0xFFFF_FFFFu32.to_le_bytes())?;
            self.write_dataset(out, item, false)?;
            write_tag(out, 0xFFFE_E00D)?;
            out.write_all(&0u32.to_le_bytes())?;
        }
        write_tag(out, 0xFFFE_E0DD)?;
        out.write_all(&0u32.to_le_bytes())?;
        Ok(())
    }

    fn write_bulk(
        &self,
        out: &mut impl Write,
        tag: u32,
        vr: &str,
        name: &str,
        uri: &str,
    ) -> Result<(), BuildError> {
        let part = self.bulk_parts.get(uri.trim()).ok_or_else(|| {
            BuildError::malformed(format!(
                "the BulkDataURI of {name} names no part of the request (by Content-Location)"
            ))
        })?;
        if let Some(content_type) = part
            .content_type
            .as_deref()
            .filter(|content_type| *content_type != "application/octet-stream")
        {
            return Err(BuildError::malformed(format!(
                "the bulk data of {name} has Content-Type `{content_type}`: only uncompressed \
                 application/octet-stream bulk data is supported"
            )));
        }
        let size = part.spooled.size_bytes;
        let padded = size + size % 2;
        let length = u32::try_from(padded)
            .ok()
            .filter(|length| *length != 0xFFFF_FFFF)
            .filter(|length| has_long_length(vr) || *length <= 0xFFFE)
            .ok_or_else(|| {
                BuildError::malformed(format!("the bulk data of {name} is too long for VR {vr}"))
            })?;
        write_header(out, tag, vr, length)?;
        let mut file = File::open(part.spooled.path())?;
        let mut buffer = vec![0u8; 256 * 1024];
        let mut copied = 0u64;
        loop {
            let read = file.read(&mut buffer)?;
            if read == 0 {
                break;
            }
            out.write_all(&buffer[..read])?;
            copied += read as u64;
        }
        if copied != size {
            return Err(std::io::Error::other("a spooled bulk data part changed size").into());
        }
        if size % 2 == 1 {
            out.write_all(&[0])?;
        }
        Ok(())
    }
}

/// Returns the VR to write for `vr` as found in the JSON. PS3.18 F.2.3 wants one VR, but some
/// writers (pydicom among them) emit the dictionary's ambiguous form, `OB or OW`: Pixel Data
/// then becomes OW (valid for any Bits Allocated in Explicit VR), anything else the first
/// alternative.
fn resolve_vr(tag: u32, vr: &str) -> Option<&str> {
    let is_vr = |text: &str| text.len() == 2 && text.bytes().all(|byte| byte.is_ascii_uppercase());
    if is_vr(vr) {
        return Some(vr);
    }
    let alternatives: Vec<&str> = vr.split(" or ").collect();
    if alternatives.len() < 2 || !alternatives.iter().all(|alternative| is_vr(alternative)) {
        return None;
    }
    if tag == 0x7FE0_0010 && alternatives.contains(&"OW") {
        return Some("OW");
    }
    alternatives.first().copied()
}

fn write_tag(out: &mut impl Write, tag: u32) -> std::io::Result<()> {
    out.write_all(&((tag >> 16) as u16).to_le_bytes())?;
    out.write_all(&((tag & 0xFFFF) as u16).to_le_bytes())
}

fn write_header(out: &mut impl Write, tag: u32, vr: &str, length: u32) -> std::io::Result<()> {
    write_tag(out, tag)?;
    out.write_all(vr.as_bytes())?;
    if has_long_length(vr) {
        out.write_all(&[0, 0])?;
        out.write_all(&length.to_le_bytes())
    } else {
        // The caller checked that the length fits.
        out.write_all(&(length as u16).to_le_bytes())
    }
}

/// Encodes the `Value` array of a non-sequence element.
fn encode_values(vr: &str, items: &[Json]) -> Result<Vec<u8>, String> {
    let mut bytes = Vec::new();
    match vr {
        "US" | "SS" | "UL" | "SL" | "FL" | "FD" | "UV" | "SV" => {
            for item in items {
                encode_binary_number(vr, item, &mut bytes)?;
            }
        }
        "AT" => {
            for item in items {
                let text = item.as_str().ok_or("an AT value is not a string")?;
                let tag = u32::from_str_radix(text, 16)
                    .ok()
                    .filter(|_| text.len() == 8)
                    .ok_or_else(|| format!("AT value `{text}` is not a tag"))?;
                bytes.extend_from_slice(&((tag >> 16) as u16).to_le_bytes());
                bytes.extend_from_slice(&((tag & 0xFFFF) as u16).to_le_bytes());
            }
        }
        "OB" | "OD" | "OF" | "OL" | "OV" | "OW" | "UN" => {
            return Err(format!(
                "VR {vr} must use InlineBinary or BulkDataURI, not Value"
            ));
        }
        _ => {
            let mut texts = Vec::with_capacity(items.len());
            for item in items {
                texts.push(match item {
                    Json::Null => String::new(),
                    Json::String(text) => text.clone(),
                    Json::Number(number) => number.to_string(),
                    Json::Object(name) if vr == "PN" => person_name(name)?,
                    _ => return Err(format!("a {vr} value has the wrong JSON type")),
                });
            }
            let text = texts.join("\\");
            if text.contains('\\') && matches!(vr, "LT" | "ST" | "UT" | "UR") && texts.len() > 1 {
                return Err(format!("VR {vr} holds a single value"));
            }
            bytes.extend_from_slice(text.as_bytes());
            if bytes.len() % 2 == 1 {
                bytes.push(if vr == "UI" { 0 } else { b' ' });
            }
        }
    }
    Ok(bytes)
}

fn encode_binary_number(vr: &str, item: &Json, bytes: &mut Vec<u8>) -> Result<(), String> {
    let integer = || -> Result<i128, String> {
        match item {
            Json::Number(number) => number
                .as_i64()
                .map(i128::from)
                .or_else(|| number.as_u64().map(i128::from))
                .ok_or_else(|| format!("{vr} value {number} is not an integer")),
            Json::String(text) => text
                .trim()
                .parse::<i128>()
                .map_err(|_| format!("{vr} value `{text}` is not an integer")),
            _ => Err(format!("a {vr} value is not a number")),
        }
    };
    let out_of_range = || format!("a {vr} value is out of range");
    match vr {
        "US" => bytes.extend_from_slice(
            &u16::try_from(integer()?)
                .map_err(|_| out_of_range())?
                .to_le_bytes(),
        ),
        "SS" => bytes.extend_from_slice(
            &i16::try_from(integer()?)
                .map_err(|_| out_of_range())?
                .to_le_bytes(),
        ),
        "UL" => bytes.extend_from_slice(
            &u32::try_from(integer()?)
                .map_err(|_| out_of_range())?
                .to_le_bytes(),
        ),
        "SL" => bytes.extend_from_slice(
            &i32::try_from(integer()?)
                .map_err(|_| out_of_range())?
                .to_le_bytes(),
        ),
        "UV" => bytes.extend_from_slice(
            &u64::try_from(integer()?)
                .map_err(|_| out_of_range())?
                .to_le_bytes(),
        ),
        "SV" => bytes.extend_from_slice(
            &i64::try_from(integer()?)
                .map_err(|_| out_of_range())?
                .to_le_bytes(),
        ),
        _ => {
            let float = match item {
                Json::Number(number) => number.as_f64(),
                Json::String(text) => text.trim().parse::<f64>().ok(),
                _ => None,
            }
            .ok_or_else(|| format!("a {vr} value is not a number"))?;
            if vr == "FL" {
                bytes.extend_from_slice(&(float as f32).to_le_bytes());
            } else {
                bytes.extend_from_slice(&float.to_le_bytes());
            }
        }
    }
    Ok(())
}

/// Joins the component groups of a PN value (PS3.18 F.2.2): `Alphabetic=Ideographic=Phonetic`,
/// trailing empty groups dropped.
fn person_name(name: &Map<String, Json>) -> Result<String, String> {
    let mut groups = Vec::with_capacity(3);
    for key in ["Alphabetic", "Ideographic", "Phonetic"] {
        groups.push(match name.get(key) {
            None | Some(Json::Null) => "",
            Some(Json::String(text)) => text.as_str(),
            Some(_) => return Err(format!("the {key} group of a PN value is not a string")),
        });
    }
    while groups.last() == Some(&"") {
        groups.pop();
    }
    Ok(groups.join("="))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(vr: &str, value: Json) -> Result<Vec<u8>, String> {
        encode_values(vr, value.as_array().expect("array"))
    }

    #[test]
    fn test_values_encode_with_dicom_padding() {
        assert_eq!(
            encoded("UI", serde_json::json!(["1.2.3"])).unwrap(),
            b"1.2.3\0"
        );
        assert_eq!(
            encoded("CS", serde_json::json!(["A", "BC"])).unwrap(),
            b"A\\BC"
        );
        assert_eq!(
            encoded("CS", serde_json::json!(["A", "B"])).unwrap(),
            b"A\\B "
        );
        assert_eq!(encoded("IS", serde_json::json!([12])).unwrap(), b"12");
        assert_eq!(
            encoded(
                "PN",
                serde_json::json!([{"Alphabetic": "Doe^J", "Ideographic": ""}])
            )
            .unwrap(),
            b"Doe^J "
        );
        assert_eq!(
            encoded("US", serde_json::json!([1, 512])).unwrap(),
            vec![1, 0, 0, 2]
        );
        assert_eq!(
            encoded("AT", serde_json::json!(["7FE00010"])).unwrap(),
            vec![0xE0, 0x7F, 0x10, 0x00]
        );
        assert!(encoded("US", serde_json::json!([70000])).is_err());
        assert!(encoded("OB", serde_json::json!(["x"])).is_err());
        assert!(encoded("LO", serde_json::json!([{"a": 1}])).is_err());
        assert_eq!(resolve_vr(0x7FE0_0010, "OB or OW"), Some("OW"));
        assert_eq!(resolve_vr(0x0028_0106, "US or SS"), Some("US"));
        assert_eq!(resolve_vr(0x0010_0010, "P N"), None);
    }

    #[test]
    fn test_built_file_parses_and_holds_bulk_data() {
        let spool = tempfile::tempdir().unwrap();
        let bulk_path = spool.path().join("bulk");
        std::fs::write(&bulk_path, [1u8, 2, 3]).unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let spooled = runtime
            .block_on(SpooledObject::from_file(spool.path(), &bulk_path, 1 << 20))
            .unwrap();
        let mut bulk_parts = HashMap::new();
        bulk_parts.insert(
            "bulk/1".to_owned(),
            BulkPart {
                spooled,
                content_type: Some("application/octet-stream".to_owned()),
            },
        );
        let dataset = serde_json::json!({
            "00080016": {"vr": "UI", "Value": ["1.2.840.10008.5.1.4.1.1.7"]},
            "00080018": {"vr": "UI", "Value": ["2.25.1"]},
            "00100010": {"vr": "PN", "Value": [{"Alphabetic": "Müller^Jörg"}]},
            "0040A730": {"vr": "SQ", "Value": [{"0040A160": {"vr": "UT", "Value": ["text"]}}]},
            "00091001": {"vr": "OB", "BulkDataURI": "bulk/1"},
        });
        let Json::Object(dataset) = dataset else {
            unreachable!()
        };
        let built = build_part10(spool.path(), &dataset, &bulk_parts).unwrap();
        let bytes = std::fs::read(&*built).unwrap();
        assert_eq!(&bytes[128..132], b"DICM");
        let text = String::from_utf8_lossy(&bytes);
        assert!(text.contains("ISO_IR 192"), "UTF-8 declared");
        assert!(text.contains("Müller^Jörg"));
        // The bulk part is copied and padded to even length.
        assert!(bytes.windows(4).any(|window| window == [1, 2, 3, 0]));

        let missing = serde_json::json!({"00091001": {"vr": "OB", "BulkDataURI": "bulk/404"}});
        let Json::Object(missing) = missing else {
            unreachable!()
        };
        let error = build_part10(spool.path(), &missing, &bulk_parts).unwrap_err();
        assert_eq!(error.reason, FailureReason::CannotUnderstand);
        assert!(error.message.contains("names no part"), "{}", error.message);
    }
}
