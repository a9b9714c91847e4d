//! WADO-RS frames, bulk data, zip retrieval and the series metadata cache, on every backend:
//! frames equal the pixel data of the stored files (as dicom-rs reads them), bulk data ranges
//! are exactly the requested bytes, zip entries are the stored objects byte for byte, and the
//! series metadata answers 304 until the series changes.

use std::collections::HashMap;

use dicom_core::value::Value;
use dicom_dictionary_std::tags;
use dicom_object::OpenFileOptions;
use dicom_object::file::ReadPreamble;
use strata_tests::corpus;
use strata_tests::synthetic::SyntheticInstance;
use strata_tests::{Backend, TestArchive};

/// Corpus files whose frames are checked, with the media type their frames come in.
const IMAGE_FILES: &[(&str, &str)] = &[
    (
        "valid/ct_explicit_le_private_tags.dcm",
        "application/octet-stream",
    ),
    (
        "valid/mr_explicit_be_retired.dcm",
        "application/octet-stream",
    ),
    (
        "valid/rtdose_implicit_le_15frames.dcm",
        "application/octet-stream",
    ),
    (
        "multiframe/mr_legacy_16frames_8bit.dcm",
        "application/octet-stream",
    ),
    (
        "multiframe/sm_wsi_tiled_25frames.dcm",
        "application/octet-stream",
    ),
    (
        "multiframe/us_jpeg_baseline_ybr422_30frames.dcm",
        "image/jpeg",
    ),
    ("multiframe/sc_rgb_rle_16bit_2frames.dcm", "image/dicom-rle"),
    ("compressed/cr_j2k_lossy_10bit.dcm", "image/jp2"),
    ("compressed/ct_rle_lossless.dcm", "image/dicom-rle"),
    ("compressed/sc_htj2k_lossless.dcm", "image/jphc"),
];
const NON_IMAGE_FILE: &str = "valid/rtplan_implicit_le.dcm";
const SINGLE_BIT_FILE: &str = "multiframe/seg_sm_tiled_full_1250frames.dcm";
const PRIVATE_BULK_FILE: &str = "valid/mr_siemens_implicit_csa_private.dcm";

struct Stored {
    bytes: Vec<u8>,
    url: String,
    series_url: String,
    study: String,
}

/// The frames of a Part 10 file as dicom-rs reads them: native values in little endian,
/// split by frame; encapsulated fragments grouped one per frame (or all for one frame).
fn expected_frames(bytes: &[u8]) -> Vec<Vec<u8>> {
    let object = OpenFileOptions::new()
        .read_preamble(ReadPreamble::Auto)
        .from_reader(bytes)
        .expect("corpus file parses");
    let number = |tag| {
        object
            .element(tag)
            .ok()
            .and_then(|element| element.to_int::<u64>().ok())
    };
    let num_frames = number(tags::NUMBER_OF_FRAMES).unwrap_or(1).max(1) as usize;
    let element = object.element(tags::PIXEL_DATA).expect("pixel data");
    match element.value() {
        Value::PixelSequence(sequence) => {
            let fragments = sequence.fragments();
            if num_frames == 1 {
                vec![fragments.iter().flatten().copied().collect()]
            } else {
                assert_eq!(fragments.len(), num_frames, "one fragment per frame");
                fragments.iter().map(|fragment| fragment.to_vec()).collect()
            }
        }
        Value::Primitive(primitive) => {
            let all = primitive.to_bytes().into_owned();
            if num_frames == 1 {
                return vec![all];
            }
            let rows = number(tags::ROWS).unwrap() as usize;
            let columns = number(tags::COLUMNS).unwrap() as usize;
            let samples = number(tags::SAMPLES_PER_PIXEL).unwrap_or(1) as usize;
            let bits = number(tags::BITS_ALLOCATED).unwrap() as usize;
            let frame_len = rows * columns * samples * bits / 8;
            (0..num_frames)
                .map(|index| all[index * frame_len..(index + 1) * frame_len].to_vec())
                .collect()
        }
        Value::Sequence(_) => panic!("pixel data is a sequence"),
    }
}

async fn get_with(
    archive: &TestArchive,
    url: &str,
    headers: &[(&str, &str)],
) -> anyhow::Result<reqwest::Response> {
    let mut request = archive.client.get(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    Ok(request.send().await?)
}

async fn get_raw(archive: &TestArchive, url: &str) -> anyhow::Result<reqwest::Response> {
    get_with(archive, url, &[]).await
}

fn content_type(response: &reqwest::Response) -> String {
    response
        .headers()
        .get("content-type")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

async fn store_files(
    archive: &TestArchive,
    paths: &[&str],
) -> anyhow::Result<HashMap<String, Stored>> {
    let entries = corpus::entries();
    let mut stored = HashMap::new();
    for path in paths {
        let entry = entries
            .iter()
            .find(|entry| entry.path == *path)
            .unwrap_or_else(|| panic!("{path} in the manifest"));
        let bytes = entry.bytes();
        let (status, response) = archive
            .stow("/studies", std::slice::from_ref(&bytes))
            .await?;
        anyhow::ensure!(
            status == 200 || status == 202,
            "{path}: STOW {status} {response}"
        );
        // The archive's own URL (some files lack Study or Series UIDs and get derived ones).
        let url = response["00081199"]["Value"][0]["00081190"]["Value"][0]
            .as_str()
            .unwrap_or_else(|| panic!("{path}: RetrieveURL in {response}"))
            .to_owned();
        let series_url = url[..url.find("/instances/").expect("instance URL")].to_owned();
        let study = url
            .split("/studies/")
            .nth(1)
            .and_then(|rest| rest.split('/').next())
            .expect("study in URL")
            .to_owned();
        stored.insert(
            (*path).to_owned(),
            Stored {
                bytes,
                url,
                series_url,
                study,
            },
        );
    }
    Ok(stored)
}

async fn check_frames(
    archive: &TestArchive,
    stored: &HashMap<String, Stored>,
) -> anyhow::Result<()> {
    for (path, media_type) in IMAGE_FILES {
        let file = &stored[*path];
        let expected = expected_frames(&file.bytes);
        // Every frame, in a shuffled list; with dicomweb-client's default Accept.
        let mut numbers: Vec<usize> = (1..=expected.len()).rev().collect();
        if numbers.len() > 2 {
            numbers.swap(0, 1);
        }
        let list = numbers
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",");
        let response = get_with(
            archive,
            &format!("{}/frames/{list}", file.url),
            &[(
                "accept",
                "multipart/related; type=\"*/*\"; transfer-syntax=*",
            )],
        )
        .await?;
        assert_eq!(response.status(), 200, "{path}");
        let response_type = content_type(&response);
        assert!(
            response_type.contains(&format!("type=\"{media_type}\"")),
            "{path}: {response_type}"
        );
        let body = response.bytes().await?;
        let parts = strata_tests::multipart::parse_related(&response_type, &body)?;
        assert_eq!(parts.len(), numbers.len(), "{path}");
        for (part, number) in parts.iter().zip(&numbers) {
            assert!(
                part == &expected[number - 1],
                "{path}: frame {number} differs ({} bytes, expected {})",
                part.len(),
                expected[number - 1].len()
            );
        }
        // A frame beyond the last: 404 naming it.
        let beyond = expected.len() + 1;
        let response = archive
            .client
            .get(format!("{}/frames/{beyond}", file.url))
            .send()
            .await?;
        assert_eq!(response.status(), 404, "{path}");
        assert!(response.text().await?.contains(&format!("frame {beyond}")));
    }

    // Native frames in another media type (transcoding is not done here): 406.
    let native = &stored["valid/ct_explicit_le_private_tags.dcm"];
    let response = get_with(
        archive,
        &format!("{}/frames/1", native.url),
        &[("accept", "multipart/related; type=\"image/jpeg\"")],
    )
    .await?;
    assert_eq!(response.status(), 406);
    // One frame asked for as a single part.
    let response = get_with(
        archive,
        &format!("{}/frames/1", native.url),
        &[("accept", "application/octet-stream")],
    )
    .await?;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.bytes().await?.to_vec(),
        expected_frames(&native.bytes)[0]
    );
    // Malformed frame lists, a non-image, unaligned single-bit frames, an unknown instance.
    for bad in ["0", "1,,2", "x"] {
        let response = get_raw(archive, &format!("{}/frames/{bad}", native.url)).await?;
        assert_eq!(response.status(), 400, "frame list {bad}");
    }
    let rtplan = &stored[NON_IMAGE_FILE];
    let response = get_raw(archive, &format!("{}/frames/1", rtplan.url)).await?;
    assert_eq!(response.status(), 400);
    assert!(response.text().await?.contains("Pixel Data"));
    let segmentation = &stored[SINGLE_BIT_FILE];
    let response = get_raw(archive, &format!("{}/frames/2", segmentation.url)).await?;
    assert_eq!(response.status(), 406);
    let response = get_raw(
        archive,
        &format!("{}/instances/1.2.3.4.5/frames/1", native.series_url),
    )
    .await?;
    assert_eq!(response.status(), 404);
    Ok(())
}

async fn check_bulkdata(
    archive: &TestArchive,
    stored: &HashMap<String, Stored>,
) -> anyhow::Result<()> {
    // Native pixel data with ranges.
    let native = &stored["valid/ct_explicit_le_private_tags.dcm"];
    let pixels = expected_frames(&native.bytes).remove(0);
    let metadata: serde_json::Value = serde_json::from_str(
        &get_raw(archive, &format!("{}/metadata", native.url))
            .await?
            .text()
            .await?,
    )?;
    let pixel_uri = metadata[0]["7FE00010"]["BulkDataURI"]
        .as_str()
        .expect("pixel data bulk data URI")
        .to_owned();
    assert_eq!(pixel_uri, format!("{}/bulk/7FE00010", native.url));
    let whole = get_raw(archive, &pixel_uri).await?;
    assert_eq!(whole.status(), 200);
    assert_eq!(whole.bytes().await?.to_vec(), pixels);
    let partial = get_with(archive, &pixel_uri, &[("range", "bytes=100-1123")]).await?;
    assert_eq!(partial.status(), 206);
    assert_eq!(
        partial.headers()["content-range"].to_str()?,
        format!("bytes 100-1123/{}", pixels.len())
    );
    assert_eq!(partial.bytes().await?.to_vec(), pixels[100..1124].to_vec());
    let suffix = get_with(archive, &pixel_uri, &[("range", "bytes=-10")]).await?;
    assert_eq!(suffix.status(), 206);
    assert_eq!(
        suffix.bytes().await?.to_vec(),
        pixels[pixels.len() - 10..].to_vec()
    );
    let outside = get_with(archive, &pixel_uri, &[("range", "bytes=99999999-")]).await?;
    assert_eq!(outside.status(), 416);
    assert_eq!(
        outside.headers()["content-range"].to_str()?,
        format!("bytes */{}", pixels.len())
    );
    // A range inside multipart/related (dicomweb-client's retrieve_bulkdata with byte_range).
    let multipart = get_with(
        archive,
        &pixel_uri,
        &[
            ("accept", "multipart/related; type=\"*/*\""),
            ("range", "bytes=0-9"),
        ],
    )
    .await?;
    assert_eq!(multipart.status(), 206);
    let multipart_type = content_type(&multipart);
    let parts = strata_tests::multipart::parse_related(&multipart_type, &multipart.bytes().await?)?;
    assert_eq!(parts, vec![pixels[..10].to_vec()]);
    // Big endian pixel data comes back in little endian, also by range.
    let big_endian = &stored["valid/mr_explicit_be_retired.dcm"];
    let little = expected_frames(&big_endian.bytes).remove(0);
    let odd_range = get_with(
        archive,
        &format!("{}/bulk/7FE00010", big_endian.url),
        &[("range", "bytes=3-20")],
    )
    .await?;
    assert_eq!(odd_range.status(), 206);
    assert_eq!(odd_range.bytes().await?.to_vec(), little[3..21].to_vec());

    // Every other BulkDataURI of an object with private binary blobs resolves to its value.
    let siemens = &stored[PRIVATE_BULK_FILE];
    let object = OpenFileOptions::new()
        .read_preamble(ReadPreamble::Auto)
        .from_reader(siemens.bytes.as_slice())?;
    let metadata: serde_json::Value = serde_json::from_str(
        &get_raw(archive, &format!("{}/metadata", siemens.url))
            .await?
            .text()
            .await?,
    )?;
    let mut num_checked = 0;
    for (key, attribute) in metadata[0].as_object().expect("metadata object") {
        let Some(uri) = attribute["BulkDataURI"].as_str() else {
            continue;
        };
        if key == "7FE00010" {
            continue;
        }
        let tag_value = u32::from_str_radix(key, 16)?;
        let tag = dicom_core::Tag((tag_value >> 16) as u16, (tag_value & 0xFFFF) as u16);
        let expected = object.element(tag)?.to_bytes()?.into_owned();
        let response = get_raw(archive, uri).await?;
        assert_eq!(response.status(), 200, "{uri}");
        assert_eq!(response.bytes().await?.to_vec(), expected, "{uri}");
        let ranged = get_with(archive, uri, &[("range", "bytes=1-4")]).await?;
        assert_eq!(
            ranged.bytes().await?.to_vec(),
            expected[1..5].to_vec(),
            "{uri}"
        );
        num_checked += 1;
    }
    assert!(num_checked >= 1, "the Siemens file has private bulk data");
    let missing = get_raw(archive, &format!("{}/bulk/00291099", siemens.url)).await?;
    assert_eq!(missing.status(), 404);
    let malformed = get_raw(archive, &format!("{}/bulk/0029", siemens.url)).await?;
    assert_eq!(malformed.status(), 400);
    Ok(())
}

/// Walks a zip written with data descriptors: returns each entry's name and bytes.
fn zip_entries(zip: &[u8]) -> Vec<(String, Vec<u8>)> {
    let u16_at = |at: usize| u16::from_le_bytes([zip[at], zip[at + 1]]) as usize;
    let u32_at = |at: usize| u32::from_le_bytes([zip[at], zip[at + 1], zip[at + 2], zip[at + 3]]);
    let mut entries = Vec::new();
    let mut position = 0;
    while u32_at(position) == 0x0403_4b50 {
        let size = u32_at(position + 22) as usize;
        let name_len = u16_at(position + 26);
        let extra_len = u16_at(position + 28);
        let name_start = position + 30;
        let name = String::from_utf8(zip[name_start..name_start + name_len].to_vec()).unwrap();
        let data_start = name_start + name_len + extra_len;
        let data = zip[data_start..data_start + size].to_vec();
        let descriptor = data_start + size;
        assert_eq!(u32_at(descriptor), 0x0807_4b50, "data descriptor of {name}");
        assert_eq!(u32_at(descriptor + 4), crc32(&data), "CRC-32 of {name}");
        entries.push((name, data));
        position = descriptor + 16;
    }
    assert_eq!(
        u32_at(position),
        0x0201_4b50,
        "central directory follows the entries"
    );
    entries
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for byte in data {
        crc ^= u32::from(*byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

async fn check_zip(archive: &TestArchive, stored: &HashMap<String, Stored>) -> anyhow::Result<()> {
    let file = &stored["multiframe/us_jpeg_baseline_ybr422_30frames.dcm"];
    for url in [
        format!("{}/studies/{}", archive.base_url, file.study),
        file.series_url.clone(),
    ] {
        let response = get_with(archive, &url, &[("accept", "application/zip")]).await?;
        assert_eq!(response.status(), 200, "{url}");
        assert_eq!(content_type(&response), "application/zip");
        let zip = response.bytes().await?;
        let entries = zip_entries(&zip);
        assert!(!entries.is_empty());
        for (name, data) in &entries {
            let sop = name.trim_end_matches(".dcm").rsplit('/').next().unwrap();
            let original = stored
                .values()
                .find(|stored| stored.url.ends_with(&format!("/instances/{sop}")))
                .unwrap_or_else(|| panic!("entry {name} is a stored instance"));
            assert!(
                data == &original.bytes,
                "entry {name} equals the stored object"
            );
        }
    }
    Ok(())
}

async fn check_series_metadata_cache(archive: &TestArchive, seed: u64) -> anyhow::Result<()> {
    let first = SyntheticInstance::ct(seed, 1, 1, 1, 8, 8);
    let (status, _) = archive.stow("/studies", &[first.to_part10()]).await?;
    assert_eq!(status, 200);
    let url = format!(
        "{}/studies/{}/series/{}/metadata",
        archive.base_url, first.study_instance_uid, first.series_instance_uid
    );
    let response = get_raw(archive, &url).await?;
    assert_eq!(response.status(), 200);
    let etag = response.headers()["etag"].to_str()?.to_owned();
    let body: serde_json::Value = response.json().await?;
    assert_eq!(body.as_array().map(Vec::len), Some(1));
    // Unchanged: 304 with the same tag; the precomputed document answers the same body.
    let not_modified = get_with(archive, &url, &[("if-none-match", etag.as_str())]).await?;
    assert_eq!(not_modified.status(), 304);
    let again: serde_json::Value = get_raw(archive, &url).await?.json().await?;
    assert_eq!(again, body);
    // A new instance in the series: a new tag and both instances, in instance order.
    let second = SyntheticInstance::ct(seed, 1, 1, 2, 8, 8);
    let (status, _) = archive.stow("/studies", &[second.to_part10()]).await?;
    assert_eq!(status, 200);
    let changed = get_with(archive, &url, &[("if-none-match", etag.as_str())]).await?;
    assert_eq!(changed.status(), 200);
    assert_ne!(changed.headers()["etag"].to_str()?, etag);
    let body: serde_json::Value = changed.json().await?;
    let sops: Vec<&str> = body
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|instance| instance["00080018"]["Value"][0].as_str())
        .collect();
    assert_eq!(
        sops,
        vec![
            first.sop_instance_uid.as_str(),
            second.sop_instance_uid.as_str()
        ]
    );
    // Bulk data URIs point at each instance.
    assert_eq!(
        body[1]["7FE00010"]["BulkDataURI"].as_str(),
        Some(
            format!(
                "{}/studies/{}/series/{}/instances/{}/bulk/7FE00010",
                archive.base_url,
                second.study_instance_uid,
                second.series_instance_uid,
                second.sop_instance_uid
            )
            .as_str()
        )
    );
    // JSON is compressed when the client accepts gzip (reqwest here does not decode it).
    let compressed = get_with(archive, &url, &[("accept-encoding", "gzip")]).await?;
    assert_eq!(compressed.status(), 200);
    let encoding = compressed
        .headers()
        .get("content-encoding")
        .map(|value| value.to_str().unwrap_or_default().to_owned());
    if compressed.content_length().unwrap_or(u64::MAX) >= 512 || encoding.is_some() {
        assert_eq!(encoding.as_deref(), Some("gzip"));
    }
    // Study and instance metadata carry tags too.
    let study_url = format!(
        "{}/studies/{}/metadata",
        archive.base_url, first.study_instance_uid
    );
    let study = get_raw(archive, &study_url).await?;
    let study_etag = study.headers()["etag"].to_str()?.to_owned();
    let study_again = get_with(
        archive,
        &study_url,
        &[("if-none-match", study_etag.as_str())],
    )
    .await?;
    assert_eq!(study_again.status(), 304);
    // Frames of the synthetic instance equal its pixel data.
    let frames = archive
        .retrieve(&format!(
            "/studies/{}/series/{}/instances/{}/frames/1",
            second.study_instance_uid, second.series_instance_uid, second.sop_instance_uid
        ))
        .await?;
    assert_eq!(frames, expected_frames(&second.to_part10()));
    Ok(())
}

async fn run(backend: Backend) -> anyhow::Result<()> {
    if corpus::dir().is_none() {
        eprintln!("skipped: ../shared/corpus not found");
        return Ok(());
    }
    let archive = TestArchive::start(backend).await?;
    let mut paths: Vec<&str> = IMAGE_FILES.iter().map(|(path, _)| *path).collect();
    paths.extend([NON_IMAGE_FILE, SINGLE_BIT_FILE, PRIVATE_BULK_FILE]);
    let stored = store_files(&archive, &paths).await?;
    check_frames(&archive, &stored).await?;
    check_bulkdata(&archive, &stored).await?;
    check_zip(&archive, &stored).await?;
    check_series_metadata_cache(&archive, 7_000_000_000 + backend as u64).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_wado_frames_bulkdata_zip_and_metadata_on_every_backend() -> anyhow::Result<()> {
    for backend in Backend::available() {
        run(backend)
            .await
            .map_err(|error| error.context(format!("backend {backend:?}")))?;
    }
    Ok(())
}

/// Instances stored before pixel data layouts were recorded (layout column NULL) still serve
/// frames: the object is parsed once and the layout recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_frames_of_instances_without_a_recorded_layout() -> anyhow::Result<()> {
    if corpus::dir().is_none() {
        return Ok(());
    }
    let archive = TestArchive::start(Backend::SqliteLocal).await?;
    let path = "multiframe/us_jpeg_baseline_ybr422_30frames.dcm";
    let stored = store_files(&archive, &[path, "multiframe/mr_legacy_16frames_8bit.dcm"]).await?;
    let database = archive
        .config
        .catalog
        .uri
        .strip_prefix("sqlite://")
        .expect("sqlite catalog")
        .to_owned();
    let options = sqlx::sqlite::SqliteConnectOptions::new().filename(&database);
    let mut connection =
        <sqlx::SqliteConnection as sqlx::Connection>::connect_with(&options).await?;
    let cleared = sqlx::query("UPDATE instance SET pixel_data_layout = NULL")
        .execute(&mut connection)
        .await?;
    assert_eq!(cleared.rows_affected(), 2);
    for (path, stored) in &stored {
        let expected = expected_frames(&stored.bytes);
        let url = stored.url.trim_start_matches(&archive.base_url).to_owned();
        let parts = archive.retrieve(&format!("{url}/frames/2,1")).await?;
        assert_eq!(
            parts,
            vec![expected[1].clone(), expected[0].clone()],
            "{path}"
        );
    }
    let recorded: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM instance WHERE pixel_data_layout IS NOT NULL")
            .fetch_one(&mut connection)
            .await?;
    assert_eq!(recorded, 2, "the recovered layouts are recorded");
    Ok(())
}
