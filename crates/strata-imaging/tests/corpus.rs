//! Renders and transcodes the shared corpus (`../shared/corpus`, skipped when absent).

use std::path::PathBuf;

use dicom_dictionary_std::uids;
use dicom_pixeldata::PixelDecoder;
use strata_imaging::{
    ImageFormat, ImagingErrorKind, RenderParams, Viewport, open_object, render_file, transcode_file,
};

fn corpus(relative: &str) -> Option<PathBuf> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/corpus");
    let path = root.join(relative);
    path.is_file().then_some(path)
}

fn png_size(bytes: &[u8]) -> (u32, u32) {
    assert_eq!(&bytes[1..4], b"PNG");
    let width = u32::from_be_bytes(bytes[16..20].try_into().unwrap());
    let height = u32::from_be_bytes(bytes[20..24].try_into().unwrap());
    (width, height)
}

#[test]
fn test_renders_every_decodable_corpus_image() {
    let files = [
        "valid/ct_explicit_le_private_tags.dcm",
        "valid/mr_implicit_le.dcm",
        "valid/mr_explicit_be_retired.dcm",
        "valid/us_rgb_explicit_le.dcm",
        "valid/us_rgb_explicit_be_retired.dcm",
        "valid/sc_ybr_full_422_uncompressed.dcm",
        "valid/dx_explicit_le.dcm",
        "valid/seg_binary_3frames.dcm",
        "compressed/mr_rle_lossless.dcm",
        "compressed/mr_jpegls_lossless.dcm",
        "compressed/mr_j2k_lossless.dcm",
        "compressed/sc_deflated_explicit_le.dcm",
        "compressed/sc_jpeg_baseline_ybr_full.dcm",
        "compressed/ct_jpeg_lossless_sv1.dcm",
        "compressed/us_j2k_lossless_ybr_rct.dcm",
        "compressed/sc_htj2k_lossless.dcm",
        "multiframe/us_rle_palette_2frames.dcm",
        "multiframe/us_jpeg_baseline_ybr422_30frames.dcm",
        "multiframe/sc_rgb_rle_16bit_2frames.dcm",
    ];
    let mut failures = Vec::new();
    for file in files {
        let Some(path) = corpus(file) else { return };
        let params = RenderParams {
            viewport: Some(Viewport {
                width: 32,
                height: 32,
                source: None,
            }),
            format: ImageFormat::Png,
            ..RenderParams::default()
        };
        match render_file(&path, 0, &params) {
            Ok(bytes) => {
                let (width, height) = png_size(&bytes);
                assert!(width == 32 || height == 32, "{file}: {width}x{height}");
            }
            Err(error) => failures.push(format!("{file}: {error:?}")),
        }
        let jpeg = render_file(&path, 0, &RenderParams::default());
        if let Ok(bytes) = jpeg {
            assert_eq!(&bytes[..2], &[0xFF, 0xD8], "{file}");
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn test_render_errors_have_kinds() {
    let Some(sr) = corpus("valid/sr_basic_text.dcm") else {
        return;
    };
    let error = render_file(&sr, 0, &RenderParams::default()).unwrap_err();
    assert_eq!(error.kind, ImagingErrorKind::NotAnImage);
    // jpeg-decoder has no 12-bit (Process 4) support: a decoding error, which the web maps to 406.
    let Some(nm) = corpus("compressed/nm_jpeg_extended_12bit.dcm") else {
        return;
    };
    let error = render_file(&nm, 0, &RenderParams::default()).unwrap_err();
    assert_eq!(error.kind, ImagingErrorKind::CannotTranscode);
    let Some(ct) = corpus("valid/ct_explicit_le_private_tags.dcm") else {
        return;
    };
    let error = render_file(&ct, 1, &RenderParams::default()).unwrap_err();
    assert_eq!(error.kind, ImagingErrorKind::FrameOutOfRange);
}

fn pixels(path: &std::path::Path) -> Vec<u8> {
    let object = open_object(path).unwrap();
    object.decode_pixel_data().unwrap().data().to_vec()
}

#[test]
fn test_lossless_transcodes_keep_the_pixels() {
    let Some(reference) = corpus("valid/mr_explicit_le.dcm") else {
        return;
    };
    let expected = pixels(&reference);
    let spool = tempfile::tempdir().unwrap();
    for (file, target) in [
        ("valid/mr_implicit_le.dcm", uids::EXPLICIT_VR_LITTLE_ENDIAN),
        (
            "valid/mr_explicit_be_retired.dcm",
            uids::EXPLICIT_VR_LITTLE_ENDIAN,
        ),
        (
            "compressed/mr_rle_lossless.dcm",
            uids::EXPLICIT_VR_LITTLE_ENDIAN,
        ),
        (
            "compressed/mr_jpegls_lossless.dcm",
            uids::EXPLICIT_VR_LITTLE_ENDIAN,
        ),
        (
            "compressed/mr_j2k_lossless.dcm",
            uids::EXPLICIT_VR_LITTLE_ENDIAN,
        ),
        ("valid/mr_explicit_le.dcm", uids::JPEGLS_LOSSLESS),
        ("compressed/mr_j2k_lossless.dcm", uids::JPEGLS_LOSSLESS),
    ] {
        let source = corpus(file).unwrap();
        let destination = spool.path().join("out.dcm");
        let outcome = transcode_file(&source, &destination, target)
            .unwrap_or_else(|error| panic!("{file} -> {target}: {error:?}"));
        assert_eq!(outcome.target_transfer_syntax_uid, target);
        let written = open_object(&destination).unwrap();
        assert_eq!(
            written.meta().transfer_syntax().trim_end_matches('\0'),
            target
        );
        assert_eq!(pixels(&destination), expected, "{file} -> {target}");
    }
}

#[test]
fn test_near_lossless_and_baseline_targets_stay_close() {
    let spool = tempfile::tempdir().unwrap();
    for (file, target, tolerance) in [
        ("valid/mr_explicit_le.dcm", uids::JPEGLS_NEAR_LOSSLESS, 4.0),
        (
            "valid/us_rgb_explicit_le.dcm",
            uids::JPEG_BASELINE8_BIT,
            8.0,
        ),
    ] {
        let Some(source) = corpus(file) else { return };
        let destination = spool.path().join("out.dcm");
        transcode_file(&source, &destination, target)
            .unwrap_or_else(|error| panic!("{file} -> {target}: {error:?}"));
        let original = open_object(&source).unwrap();
        let original = original.decode_pixel_data().unwrap();
        let written = open_object(&destination).unwrap();
        let decoded = written.decode_pixel_data().unwrap();
        let (expected, actual): (Vec<f64>, Vec<f64>) = if original.bits_allocated() == 16 {
            (
                original
                    .data_ow()
                    .iter()
                    .map(|value| f64::from(*value as i16))
                    .collect(),
                decoded
                    .data_ow()
                    .iter()
                    .map(|value| f64::from(*value as i16))
                    .collect(),
            )
        } else {
            (
                original
                    .data()
                    .iter()
                    .map(|value| f64::from(*value))
                    .collect(),
                decoded
                    .data()
                    .iter()
                    .map(|value| f64::from(*value))
                    .collect(),
            )
        };
        assert_eq!(expected.len(), actual.len(), "{file}");
        let mean_error = expected
            .iter()
            .zip(&actual)
            .map(|(left, right)| (left - right).abs())
            .sum::<f64>()
            / expected.len() as f64;
        assert!(
            mean_error < tolerance,
            "{file} -> {target}: mean error {mean_error}"
        );
    }
}

#[test]
fn test_unencodable_targets_are_unsupported() {
    let Some(source) = corpus("valid/mr_explicit_le.dcm") else {
        return;
    };
    let spool = tempfile::tempdir().unwrap();
    let error =
        transcode_file(&source, &spool.path().join("out.dcm"), uids::RLE_LOSSLESS).unwrap_err();
    assert_eq!(error.kind, ImagingErrorKind::UnsupportedTransferSyntax);
}
