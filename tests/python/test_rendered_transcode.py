"""End-to-end tests of rendered/thumbnail resources, transfer syntax negotiation and
transcoding (WADO-RS), and WADO-URI, against `strata serve` with the shared corpus.

Images are decoded with Pillow, DICOM with pydicom. Files of the corpus that share one
SOP Instance UID across transfer syntaxes (group G01) each get their own archive.
"""

from __future__ import annotations

import io
from collections.abc import Iterator

import numpy
import pydicom
import pytest
import requests
from PIL import Image

import e2e_support
from e2e_support import Archive, ArchiveFactory, CorpusEntry

MANIFEST_BY_PATH = {entry.path: entry for entry in e2e_support.load_manifest()}
TIMEOUT = e2e_support.HTTP_TIMEOUT_SECONDS

EXPLICIT_LE = "1.2.840.10008.1.2.1"
IMPLICIT_LE = "1.2.840.10008.1.2"
EXPLICIT_BE = "1.2.840.10008.1.2.2"
JPEG_LS_LOSSLESS = "1.2.840.10008.1.2.4.80"
JPEG_2000_LOSSLESS = "1.2.840.10008.1.2.4.90"
JPEG_BASELINE = "1.2.840.10008.1.2.4.50"
NEVER_ON_THE_WEB = {IMPLICIT_LE, EXPLICIT_BE}


def dicom_accept(transfer_syntax: str | None) -> str:
    accept = 'multipart/related; type="application/dicom"'
    if transfer_syntax is not None:
        accept += f"; transfer-syntax={transfer_syntax}"
    return accept


def entry(path: str) -> CorpusEntry:
    return MANIFEST_BY_PATH[path]


def instance_path(corpus_entry: CorpusEntry) -> str:
    return (
        f"studies/{corpus_entry.study_instance_uid}/series/{corpus_entry.series_instance_uid}"
        f"/instances/{corpus_entry.sop_instance_uid}"
    )


def store(archive: Archive, paths: list[str]) -> None:
    result = e2e_support.stow_raw(archive.base_url, [entry(path).read_bytes() for path in paths])
    # 202: stored with warnings (attribute coercion), which these tests do not look at.
    assert result.status_code in (200, 202), result.describe()
    stored = set(result.referenced_sop_instance_uids)
    for path in paths:
        assert entry(path).sop_instance_uid in stored, f"{path} not stored: {result.describe()}"


def get(archive: Archive, path: str, accept: str | None = None, **params) -> requests.Response:
    headers = {"Accept": accept} if accept else {}
    return requests.get(f"{archive.dicomweb_url}/{path}", headers=headers, params=params, timeout=TIMEOUT)


def image_of(response: requests.Response, media_type: str = "image/jpeg") -> Image.Image:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == media_type
    image = Image.open(io.BytesIO(response.content))
    image.load()
    assert image.format == {"image/jpeg": "JPEG", "image/png": "PNG"}[media_type]
    return image


def assert_problem(response: requests.Response, status: int, *words: str) -> None:
    assert response.status_code == status, f"{response.status_code}: {response.text}"
    assert response.headers["content-type"].startswith("application/problem+json")
    detail = response.json()["detail"]
    for word in words:
        assert word in detail, detail


def dicom_parts(response: requests.Response) -> list[e2e_support.MultipartPart]:
    assert response.status_code == 200, response.text
    return e2e_support.decode_multipart_related(response.headers["content-type"], response.content)


def part_transfer_syntax(part: e2e_support.MultipartPart) -> str:
    return e2e_support._content_type_parameter(part.headers["content-type"], "transfer-syntax")


def pixels(data: bytes) -> numpy.ndarray:
    return pydicom.dcmread(io.BytesIO(data), force=True).pixel_array


IMAGING_FILES = [
    "valid/ct_explicit_le_private_tags.dcm",
    "valid/us_rgb_explicit_le.dcm",
    "valid/us_rgb_explicit_be_retired.dcm",
    "multiframe/mr_legacy_16frames_8bit.dcm",
    "valid/sr_basic_text.dcm",
    "compressed/sc_jpeg_baseline_ybr_full.dcm",
    "compressed/ct_rle_lossless.dcm",
    "valid/rtdose_implicit_le_15frames.dcm",
    "valid/mr_explicit_le.dcm",
    "valid/dx_explicit_le.dcm",
]


@pytest.fixture(scope="module")
def imaging_archive(start_archive: ArchiveFactory) -> Archive:
    archive = start_archive("imaging")
    store(archive, IMAGING_FILES)
    return archive


# ------------------------------------------------------------ rendered


def test_rendered_instance_decodes_at_native_size(imaging_archive: Archive) -> None:
    ct = entry("valid/ct_explicit_le_private_tags.dcm")
    image = image_of(get(imaging_archive, f"{instance_path(ct)}/rendered"))
    assert image.size == (128, 128)
    assert image.mode == "L"
    assert numpy.asarray(image).std() > 5, "a CT slice renders with contrast"


def test_rendered_viewport_keeps_aspect_ratio_and_png(imaging_archive: Archive) -> None:
    ct = entry("valid/ct_explicit_le_private_tags.dcm")
    square = image_of(get(imaging_archive, f"{instance_path(ct)}/rendered", "image/png", viewport="64,64"), "image/png")
    assert square.size == (64, 64)
    wide = image_of(get(imaging_archive, f"{instance_path(ct)}/rendered", "image/png", viewport="64,32"), "image/png")
    assert wide.size == (32, 32)
    rgb = entry("valid/us_rgb_explicit_le.dcm")
    color = image_of(get(imaging_archive, f"{instance_path(rgb)}/rendered", viewport="160,160", quality="60"))
    assert color.size == (160, 120)
    assert color.mode == "RGB"
    cropped = image_of(get(imaging_archive, f"{instance_path(ct)}/rendered", viewport="40,20,0,0,64,32"))
    assert cropped.size == (40, 20)


def test_rendered_window_parameter_is_applied(imaging_archive: Archive) -> None:
    ct = entry("valid/ct_explicit_le_private_tags.dcm")
    path = f"{instance_path(ct)}/rendered"
    white = numpy.asarray(image_of(get(imaging_archive, path, "image/png", window="-100000,1,linear"), "image/png"))
    assert (white == 255).all()
    black = numpy.asarray(image_of(get(imaging_archive, path, "image/png", window="100000,10,sigmoid"), "image/png"))
    assert (black == 0).all()
    default = numpy.asarray(image_of(get(imaging_archive, path, "image/png"), "image/png"))
    assert 0 < default.mean() < 255


def test_monochrome1_is_inverted(imaging_archive: Archive) -> None:
    dx = entry("valid/dx_explicit_le.dcm")
    path = f"{instance_path(dx)}/rendered"
    # Every value is above this window, so MONOCHROME2 would be white: MONOCHROME1 is black.
    inverted = numpy.asarray(image_of(get(imaging_archive, path, "image/png", window="-100000,1"), "image/png"))
    assert inverted.shape == (169, 211)
    assert (inverted == 0).all()


def test_color_and_compressed_instances_render(imaging_archive: Archive) -> None:
    for path, size, mode in [
        ("valid/us_rgb_explicit_be_retired.dcm", (80, 60), "RGB"),
        ("compressed/sc_jpeg_baseline_ybr_full.dcm", (100, 100), "RGB"),
        ("compressed/ct_rle_lossless.dcm", (512, 512), "L"),
    ]:
        corpus_entry = entry(path)
        image = image_of(get(imaging_archive, f"{instance_path(corpus_entry)}/rendered", "image/png"), "image/png")
        assert (image.size, image.mode) == (size, mode), path


def test_rendered_frames(imaging_archive: Archive) -> None:
    mr = entry("multiframe/mr_legacy_16frames_8bit.dcm")
    first = numpy.asarray(
        image_of(get(imaging_archive, f"{instance_path(mr)}/frames/1/rendered", "image/png"), "image/png")
    )
    last = numpy.asarray(
        image_of(get(imaging_archive, f"{instance_path(mr)}/frames/16/rendered", "image/png"), "image/png")
    )
    assert first.shape == (256, 256)
    assert not numpy.array_equal(first, last), "frames 1 and 16 differ"
    assert_problem(get(imaging_archive, f"{instance_path(mr)}/frames/17/rendered"), 404, "17")
    assert_problem(get(imaging_archive, f"{instance_path(mr)}/frames/0/rendered"), 400, "frames")
    assert_problem(get(imaging_archive, f"{instance_path(mr)}/frames/1,2/rendered"), 400, "frames")


def test_study_series_rendered_and_thumbnails(imaging_archive: Archive) -> None:
    ct = entry("valid/ct_explicit_le_private_tags.dcm")
    study = f"studies/{ct.study_instance_uid}"
    series = f"{study}/series/{ct.series_instance_uid}"
    assert image_of(get(imaging_archive, f"{study}/rendered")).size == (128, 128)
    assert image_of(get(imaging_archive, f"{series}/rendered", "image/png"), "image/png").size == (128, 128)
    assert image_of(get(imaging_archive, f"{study}/thumbnail")).size == (128, 128)
    assert image_of(get(imaging_archive, f"{series}/thumbnail", viewport="32,32")).size == (32, 32)
    rgb = entry("valid/us_rgb_explicit_le.dcm")
    thumbnail = image_of(get(imaging_archive, f"{instance_path(rgb)}/thumbnail"))
    assert thumbnail.size == (128, 96)
    mr = entry("multiframe/mr_legacy_16frames_8bit.dcm")
    assert image_of(get(imaging_archive, f"{instance_path(mr)}/frames/3/thumbnail", viewport="50,50")).size == (50, 50)


def test_rendered_errors(imaging_archive: Archive) -> None:
    ct = entry("valid/ct_explicit_le_private_tags.dcm")
    path = f"{instance_path(ct)}/rendered"
    assert_problem(get(imaging_archive, path, window="40"), 400, "window")
    assert_problem(get(imaging_archive, path, window="40,0"), 400, "window")
    assert_problem(get(imaging_archive, path, window="40,400,cubic"), 400, "window")
    assert_problem(get(imaging_archive, path, viewport="0,10"), 400, "viewport")
    assert_problem(get(imaging_archive, path, viewport="10"), 400, "viewport")
    assert_problem(get(imaging_archive, path, quality="0"), 400, "quality")
    assert_problem(get(imaging_archive, path, bogus="1"), 400, "bogus")
    assert_problem(get(imaging_archive, path, "application/dicom"), 406)
    assert get(imaging_archive, path, annotation="patient").status_code == 200
    sr = entry("valid/sr_basic_text.dcm")
    assert_problem(get(imaging_archive, f"{instance_path(sr)}/rendered"), 400, "Pixel Data")
    assert_problem(get(imaging_archive, "studies/1.2.3.999/rendered"), 404)
    assert_problem(get(imaging_archive, f"studies/{ct.study_instance_uid}/series/1.2.3.999/thumbnail"), 404)


def test_undecodable_pixel_data_is_406_and_still_retrievable(start_archive: ArchiveFactory) -> None:
    archive = start_archive("imaging_nm12")
    nm = entry("compressed/nm_jpeg_extended_12bit.dcm")
    store(archive, [nm.path])
    assert_problem(get(archive, f"{instance_path(nm)}/rendered"), 406, "1.2.840.10008.1.2.4.51")
    as_stored = dicom_parts(get(archive, instance_path(nm), dicom_accept("*")))
    assert [part.content for part in as_stored] == [nm.read_bytes()]
    assert_problem(get(archive, instance_path(nm), dicom_accept(EXPLICIT_LE)), 406)


# ------------------------------------------------------------ transfer syntaxes

MR_REFERENCE = "valid/mr_explicit_le.dcm"
MR_VARIANTS = [
    "valid/mr_implicit_le.dcm",
    "valid/mr_explicit_be_retired.dcm",
    "compressed/mr_rle_lossless.dcm",
    "compressed/mr_jpegls_lossless.dcm",
    "compressed/mr_j2k_lossless.dcm",
]


@pytest.fixture(scope="module")
def mr_variant_archives(start_archive: ArchiveFactory) -> Iterator[dict[str, Archive]]:
    archives = {}
    for index, path in enumerate(MR_VARIANTS):
        archive = start_archive(f"mr_variant_{index}")
        store(archive, [path])
        archives[path] = archive
    yield archives


@pytest.mark.parametrize("path", MR_VARIANTS)
def test_transcoding_to_explicit_le_keeps_the_pixels(mr_variant_archives: dict[str, Archive], path: str) -> None:
    archive = mr_variant_archives[path]
    variant = entry(path)
    expected = pixels(entry(MR_REFERENCE).read_bytes())
    for accept in [dicom_accept(EXPLICIT_LE), dicom_accept(None)]:
        (part,) = dicom_parts(get(archive, instance_path(variant), accept))
        assert part_transfer_syntax(part) == EXPLICIT_LE
        dataset = pydicom.dcmread(io.BytesIO(part.content))
        assert dataset.file_meta.TransferSyntaxUID == EXPLICIT_LE
        assert dataset.SOPInstanceUID == variant.sop_instance_uid
        numpy.testing.assert_array_equal(dataset.pixel_array, expected)

    (part,) = dicom_parts(get(archive, instance_path(variant), dicom_accept("*")))
    if variant.transfer_syntax_uid in NEVER_ON_THE_WEB:
        assert part_transfer_syntax(part) == EXPLICIT_LE
        numpy.testing.assert_array_equal(pixels(part.content), expected)
    else:
        assert part_transfer_syntax(part) == variant.transfer_syntax_uid
        assert part.content == variant.read_bytes()


def test_implicit_and_big_endian_are_never_served(imaging_archive: Archive) -> None:
    ct = entry("valid/ct_explicit_le_private_tags.dcm")
    for forbidden in NEVER_ON_THE_WEB:
        assert_problem(get(imaging_archive, instance_path(ct), dicom_accept(forbidden)), 406, forbidden)
    rtdose = entry("valid/rtdose_implicit_le_15frames.dcm")
    assert_problem(get(imaging_archive, f"studies/{rtdose.study_instance_uid}", dicom_accept(IMPLICIT_LE)), 406)


def test_star_never_yields_implicit_or_big_endian(imaging_archive: Archive) -> None:
    stored_by_uid = {entry(path).sop_instance_uid: entry(path) for path in IMAGING_FILES}
    for path in ["valid/rtdose_implicit_le_15frames.dcm", "valid/us_rgb_explicit_be_retired.dcm"]:
        source = entry(path)
        (part,) = dicom_parts(get(imaging_archive, f"studies/{source.study_instance_uid}", dicom_accept("*")))
        assert part_transfer_syntax(part) == EXPLICIT_LE
        dataset = pydicom.dcmread(io.BytesIO(part.content))
        assert dataset.file_meta.TransferSyntaxUID == EXPLICIT_LE
        original = stored_by_uid[dataset.SOPInstanceUID]
        numpy.testing.assert_array_equal(dataset.pixel_array, pixels(original.read_bytes()))
    # A whole study with an explicit LE, a big endian and an implicit instance (several studies).
    for path in IMAGING_FILES:
        study = entry(path).study_instance_uid
        for part in dicom_parts(get(imaging_archive, f"studies/{study}", dicom_accept("*"))):
            assert part_transfer_syntax(part) not in NEVER_ON_THE_WEB
            meta = pydicom.dcmread(io.BytesIO(part.content), stop_before_pixels=True).file_meta
            assert meta.TransferSyntaxUID not in NEVER_ON_THE_WEB


def test_jpeg_ls_lossless_target_round_trips(imaging_archive: Archive, start_archive: ArchiveFactory) -> None:
    mr = entry(MR_REFERENCE)
    (part,) = dicom_parts(get(imaging_archive, instance_path(mr), dicom_accept(JPEG_LS_LOSSLESS)))
    assert part_transfer_syntax(part) == JPEG_LS_LOSSLESS
    dataset = pydicom.dcmread(io.BytesIO(part.content))
    assert dataset.file_meta.TransferSyntaxUID == JPEG_LS_LOSSLESS
    # pydicom needs a JPEG-LS plugin to decode; store the result elsewhere and get it back native.
    second = start_archive("imaging_jpegls")
    result = e2e_support.stow_raw(second.base_url, [part.content])
    assert result.status_code in (200, 202), result.describe()
    (native,) = dicom_parts(get(second, instance_path(mr), dicom_accept(EXPLICIT_LE)))
    numpy.testing.assert_array_equal(pixels(native.content), pixels(mr.read_bytes()))


def test_unencodable_target_is_406(imaging_archive: Archive) -> None:
    ct = entry("valid/ct_explicit_le_private_tags.dcm")
    assert_problem(get(imaging_archive, instance_path(ct), dicom_accept(JPEG_2000_LOSSLESS)), 406, JPEG_2000_LOSSLESS)
    # JPEG baseline is 8-bit: a 16-bit CT cannot be encoded.
    assert_problem(get(imaging_archive, instance_path(ct), dicom_accept(JPEG_BASELINE)), 406, JPEG_BASELINE)


def test_jpeg_baseline_target_for_8_bit_color(imaging_archive: Archive) -> None:
    rgb = entry("valid/us_rgb_explicit_le.dcm")
    (part,) = dicom_parts(get(imaging_archive, instance_path(rgb), dicom_accept(JPEG_BASELINE)))
    assert part_transfer_syntax(part) == JPEG_BASELINE
    dataset = pydicom.dcmread(io.BytesIO(part.content))
    assert dataset.file_meta.TransferSyntaxUID == JPEG_BASELINE
    original = pixels(rgb.read_bytes()).astype(numpy.int16)
    assert dataset.LossyImageCompression == "01"
    decoded = dataset.pixel_array  # pydicom converts the YBR_FULL_422 JPEG to RGB
    assert decoded.shape == original.shape
    assert numpy.abs(decoded.astype(numpy.int16) - original).mean() < 8, "lossy but close"


# ------------------------------------------------------------ WADO-URI


def wado_uri(archive: Archive, corpus_entry: CorpusEntry | None = None, **params) -> requests.Response:
    query = {"requestType": "WADO"}
    if corpus_entry is not None:
        query.update(
            studyUID=corpus_entry.study_instance_uid,
            seriesUID=corpus_entry.series_instance_uid,
            objectUID=corpus_entry.sop_instance_uid,
        )
    query.update(params)
    return requests.get(f"{archive.dicomweb_url}/wado", params=query, timeout=TIMEOUT)


def test_wado_uri_returns_stored_dicom_and_images(imaging_archive: Archive) -> None:
    ct = entry("valid/ct_explicit_le_private_tags.dcm")
    response = wado_uri(imaging_archive, ct, contentType="application/dicom")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/dicom"
    assert response.content == ct.read_bytes()
    assert image_of(wado_uri(imaging_archive, ct)).size == (128, 128)
    assert image_of(wado_uri(imaging_archive, ct, contentType="image/png", rows="64"), "image/png").size == (64, 64)
    windowed = image_of(
        wado_uri(imaging_archive, ct, contentType="image/png", windowCenter="-100000", windowWidth="1"), "image/png"
    )
    assert (numpy.asarray(windowed) == 255).all()
    mr = entry("multiframe/mr_legacy_16frames_8bit.dcm")
    assert image_of(wado_uri(imaging_archive, mr, frameNumber="16", columns="128", imageQuality="50")).size == (
        128,
        128,
    )
    rtdose = entry("valid/rtdose_implicit_le_15frames.dcm")
    transcoded = wado_uri(imaging_archive, rtdose, contentType="application/dicom")
    assert pydicom.dcmread(io.BytesIO(transcoded.content)).file_meta.TransferSyntaxUID == EXPLICIT_LE


def test_wado_uri_errors_name_the_parameter(imaging_archive: Archive) -> None:
    ct = entry("valid/ct_explicit_le_private_tags.dcm")
    assert_problem(wado_uri(imaging_archive, None, studyUID=ct.study_instance_uid), 400, "seriesUID")
    response = requests.get(f"{imaging_archive.dicomweb_url}/wado", params={"studyUID": "1.2"}, timeout=TIMEOUT)
    assert_problem(response, 400, "requestType")
    assert_problem(wado_uri(imaging_archive, ct, requestType="WADO-RS"), 400, "requestType")
    assert_problem(wado_uri(imaging_archive, ct, frameNumber="x"), 400, "frameNumber")
    assert_problem(wado_uri(imaging_archive, ct, windowCenter="40"), 400, "windowWidth")
    assert_problem(wado_uri(imaging_archive, ct, contentType="application/dicom", rows="5"), 400, "rows")
    assert_problem(wado_uri(imaging_archive, ct, contentType="text/html"), 406, "contentType")
    assert_problem(wado_uri(imaging_archive, ct, contentType="application/dicom", transferSyntax=IMPLICIT_LE), 406)
    assert_problem(wado_uri(imaging_archive, ct, frameNumber="2"), 404)
    assert_problem(
        wado_uri(
            imaging_archive,
            None,
            studyUID=ct.study_instance_uid,
            seriesUID=ct.series_instance_uid,
            objectUID="1.2.3.999",
        ),
        404,
    )
