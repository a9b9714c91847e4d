"""WADO-RS retrieval beyond whole instances, driven by dicomweb-client and raw
requests: frames (native and encapsulated, multi-fragment frames with and
without a Basic Offset Table), bulk data with HTTP Range, application/zip of a
study and a series, series metadata ETag / If-None-Match, JSON compression and
CORS.

Every content assertion compares with what pydicom reads from the stored file.
"""

from __future__ import annotations

import copy
import io
import json
import os
import urllib.parse
import zipfile

import numpy as np
import pydicom
import pytest
import requests
from pydicom.encaps import encapsulate, generate_frames
from pydicom.uid import generate_uid

import e2e_support
from e2e_support import Archive, StrataServer

MANIFEST_BY_PATH = {entry.path: entry for entry in e2e_support.load_manifest()}

FRAME_FILES = [
    "valid/ct_explicit_le_private_tags.dcm",
    "valid/mr_explicit_be_retired.dcm",
    "valid/rtdose_implicit_le_15frames.dcm",
    "valid/us_rgb_explicit_le.dcm",
    "multiframe/mr_enhanced_10frames.dcm",
    "multiframe/xa_jpeg_baseline_96frames.dcm",
    "multiframe/us_rle_palette_2frames.dcm",
    "compressed/us_j2k_lossless_ybr_rct.dcm",
    "compressed/mr_jpegls_near_lossless.dcm",
    "compressed/nm_jpeg_lossless_sv1.dcm",
    "compressed/sc_htj2k_lossy.dcm",
]
NON_IMAGE_FILE = "valid/sr_basic_text.dcm"
PRIVATE_BULK_FILE = "valid/mr_siemens_implicit_csa_private.dcm"
HTTP_TIMEOUT = 60

MEDIA_TYPES = {
    "1.2.840.10008.1.2.4.50": "image/jpeg",
    "1.2.840.10008.1.2.4.70": "image/jpeg",
    "1.2.840.10008.1.2.4.80": "image/jls",
    "1.2.840.10008.1.2.4.81": "image/jls",
    "1.2.840.10008.1.2.4.90": "image/jp2",
    "1.2.840.10008.1.2.4.91": "image/jp2",
    "1.2.840.10008.1.2.4.203": "image/jphc",
    "1.2.840.10008.1.2.5": "image/dicom-rle",
}


def expected_frames(dataset: pydicom.Dataset) -> list[bytes]:
    """The frames of a data set as pydicom reads them (native: little endian)."""
    num_frames = int(getattr(dataset, "NumberOfFrames", 1) or 1)
    if dataset.file_meta.TransferSyntaxUID.is_encapsulated:
        return list(generate_frames(dataset.PixelData, number_of_frames=num_frames))
    if dataset.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.2":
        dtype = np.dtype(f">u{dataset.BitsAllocated // 8}")
        data = np.frombuffer(dataset.PixelData, dtype=dtype).astype(dtype.newbyteorder("<")).tobytes()
    else:
        data = dataset.PixelData
    if num_frames == 1:
        return [data]
    frame_len = dataset.Rows * dataset.Columns * dataset.SamplesPerPixel * dataset.BitsAllocated // 8
    return [data[index * frame_len : (index + 1) * frame_len] for index in range(num_frames)]


class Stored:
    def __init__(self, data: bytes, retrieve_url: str):
        self.data = data
        self.dataset = pydicom.dcmread(io.BytesIO(data), force=True)
        self.url = retrieve_url
        _, rest = retrieve_url.split("/studies/", 1)
        self.study, _, self.series, _, self.sop = rest.split("/")[:5]
        self.series_url = retrieve_url.rsplit("/instances/", 1)[0]


def store(archive: Archive, data: bytes) -> Stored:
    result = e2e_support.stow_raw(archive.base_url, [data])
    assert result.status_code in (200, 202), result.describe()
    item = result.referenced_items[0]
    url = e2e_support.json_first_value(item, "00081190")
    return Stored(data, url)


@pytest.fixture(scope="module")
def archive(start_archive) -> Archive:
    return start_archive("wado-retrieval")


@pytest.fixture(scope="module")
def stored(archive: Archive) -> dict[str, Stored]:
    paths = [*FRAME_FILES, NON_IMAGE_FILE, PRIVATE_BULK_FILE]
    return {path: store(archive, MANIFEST_BY_PATH[path].read_bytes()) for path in paths}


# ------------------------------------------------------------------ frames


@pytest.mark.parametrize("path", FRAME_FILES)
def test_frames_equal_pydicom_frames(archive: Archive, stored: dict[str, Stored], path: str) -> None:
    item = stored[path]
    frames = expected_frames(item.dataset)
    numbers = list(range(1, len(frames) + 1))
    if len(numbers) > 3:
        numbers = [numbers[-1], 1, numbers[len(numbers) // 2]]
    # dicomweb-client's default Accept for frames (type="*/*" ... transfer-syntax=*).
    retrieved = archive.client().retrieve_instance_frames(item.study, item.series, item.sop, frame_numbers=numbers)
    assert len(retrieved) == len(numbers)
    for number, frame in zip(numbers, retrieved, strict=True):
        assert frame == frames[number - 1], f"{path}: frame {number}"

    # Raw HTTP: the part media type is the stored representation.
    response = requests.get(
        f"{item.url}/frames/1",
        headers={"Accept": 'multipart/related; type="*/*"; transfer-syntax=*'},
        timeout=HTTP_TIMEOUT,
    )
    assert response.status_code == 200
    parts = e2e_support.decode_multipart_related(response.headers["Content-Type"], response.content)
    transfer_syntax = str(item.dataset.file_meta.TransferSyntaxUID)
    media_type = MEDIA_TYPES.get(transfer_syntax, "application/octet-stream")
    assert parts[0].headers["content-type"].startswith(media_type)
    assert parts[0].content == frames[0]


@pytest.mark.parametrize("has_bot", [True, False], ids=["basic-offset-table", "no-offset-table"])
def test_multi_fragment_frames(archive: Archive, has_bot: bool) -> None:
    """Frames split over three fragments each: found by the Basic Offset Table, or by the
    JPEG start-of-image markers when the table is empty."""
    source = pydicom.dcmread(MANIFEST_BY_PATH["multiframe/us_jpeg_baseline_ybr422_30frames.dcm"].file_path)
    original = list(generate_frames(source.PixelData, number_of_frames=int(source.NumberOfFrames)))
    dataset = copy.deepcopy(source)
    dataset.SOPInstanceUID = generate_uid()
    dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
    dataset.PixelData = encapsulate(original, fragments_per_frame=3, has_bot=has_bot)
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    item = store(archive, buffer.getvalue())
    expected = list(generate_frames(item.dataset.PixelData, number_of_frames=int(source.NumberOfFrames)))
    assert len(expected) == 30
    assert all(frame.startswith(b"\xff\xd8") for frame in expected)
    numbers = [30, 1, 2, 17]
    retrieved = archive.client().retrieve_instance_frames(item.study, item.series, item.sop, frame_numbers=numbers)
    for number, frame in zip(numbers, retrieved, strict=True):
        assert frame == expected[number - 1], f"frame {number}"


def test_frames_of_data_sets_received_without_a_file_meta_header(archive: Archive) -> None:
    """The archive writes a Part 10 header in front of a bare data set: the recorded pixel
    data offsets move with it."""
    # (A bare data set carries no transfer syntax: only native pixel data applies.)
    path = "multiframe/mr_legacy_16frames_8bit.dcm"
    dataset = pydicom.dcmread(MANIFEST_BY_PATH[path].file_path)
    dataset.SOPInstanceUID = generate_uid()
    dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    with_header = buffer.getvalue()
    bare = with_header[e2e_support.dataset_offset(with_header) :]
    assert bare[:4] != b"DICM" and len(bare) < len(with_header)
    item = store(archive, bare)
    frames = expected_frames(dataset)
    retrieved = archive.client().retrieve_instance_frames(item.study, item.series, item.sop, frame_numbers=[16, 1])
    assert retrieved == [frames[15], frames[0]]
    bulk = requests.get(f"{item.url}/bulk/7FE00010", headers={"Range": "bytes=65536-65545"}, timeout=HTTP_TIMEOUT)
    assert bulk.status_code == 206
    assert bulk.content == frames[1][:10]


def test_frame_errors(archive: Archive, stored: dict[str, Stored]) -> None:
    native = stored["valid/ct_explicit_le_private_tags.dcm"]

    def get(url: str, accept: str | None = None) -> requests.Response:
        headers = {"Accept": accept} if accept else {}
        return requests.get(url, headers=headers, timeout=HTTP_TIMEOUT)

    out_of_range = get(f"{native.url}/frames/2")
    assert out_of_range.status_code == 404
    assert out_of_range.headers["Content-Type"] == "application/problem+json"
    assert "frame 2" in out_of_range.json()["detail"]
    for bad in ["0", "1,x", "-3"]:
        response = get(f"{native.url}/frames/{bad}")
        assert response.status_code == 400, bad
        assert response.headers["Content-Type"] == "application/problem+json"
    not_an_image = get(f"{stored[NON_IMAGE_FILE].url}/frames/1")
    assert not_an_image.status_code == 400
    assert "Pixel Data" in not_an_image.json()["detail"]
    # Transcoding of frames is not offered here: another media type is 406.
    assert get(f"{native.url}/frames/1", 'multipart/related; type="image/jpeg"').status_code == 406
    jpeg = stored["multiframe/xa_jpeg_baseline_96frames.dcm"]
    assert get(f"{jpeg.url}/frames/1", 'multipart/related; type="application/octet-stream"').status_code == 406
    assert (
        get(
            f"{jpeg.url}/frames/1", 'multipart/related; type="image/jpeg"; transfer-syntax=1.2.840.10008.1.2.4.50'
        ).status_code
        == 200
    )
    assert get(f"{native.series_url}/instances/1.2.3.999/frames/1").status_code == 404


# --------------------------------------------------------------- bulk data


def bulk_data_uris(attributes: dict, found: list[tuple[str, str]], path: str = "") -> list[tuple[str, str]]:
    for tag, attribute in attributes.items():
        if "BulkDataURI" in attribute:
            found.append((f"{path}{tag}", attribute["BulkDataURI"]))
        for index, item in enumerate(attribute.get("Value", []) if attribute.get("vr") == "SQ" else []):
            bulk_data_uris(item, found, f"{path}{tag}/{index}/")
    return found


def element_bytes(dataset: pydicom.Dataset, path: str) -> bytes:
    parts = path.split("/")
    current = dataset
    for index in range(0, len(parts) - 1, 2):
        current = current[int(parts[index], 16)].value[int(parts[index + 1])]
    element = current[int(parts[-1], 16)]
    if isinstance(element.value, (bytes, bytearray)):
        return bytes(element.value)
    # Numeric values (FD, FL, UL ...) are bulk data too, as little endian binary.
    dtypes = {"FD": "<f8", "FL": "<f4", "UL": "<u4", "SL": "<i4", "US": "<u2", "SS": "<i2", "UV": "<u8", "SV": "<i8"}
    return np.asarray(element.value, dtype=dtypes[element.VR]).tobytes()


def test_every_bulk_data_uri_resolves_with_ranges(archive: Archive, stored: dict[str, Stored]) -> None:
    client = archive.client()
    num_checked = 0
    for path in [PRIVATE_BULK_FILE, "valid/ct_explicit_le_private_tags.dcm", "valid/mr_explicit_be_retired.dcm"]:
        item = stored[path]
        metadata = client.retrieve_instance_metadata(item.study, item.series, item.sop)
        for tag_path, advertised in bulk_data_uris(metadata, []):
            # dicomweb-client sends `Host` without the port, so the advertised URIs have none:
            # compare and fetch by path.
            path_part = urllib.parse.urlsplit(advertised).path
            assert path_part.startswith(urllib.parse.urlsplit(item.url).path + "/bulk/")
            uri = archive.base_url + path_part
            if tag_path == "7FE00010":
                expected = expected_frames(item.dataset)[0]
            else:
                expected = element_bytes(item.dataset, tag_path)
            # dicomweb-client: multipart/related; type="*/*" (its default).
            assert client.retrieve_bulkdata(uri) == [expected], f"{path} {tag_path}"
            assert client.retrieve_bulkdata(uri, byte_range=(2, 9)) == [expected[2:10]], f"{path} {tag_path}"
            # Raw HTTP single-part: 206 with Content-Range, exactly the requested bytes.
            response = requests.get(uri, headers={"Range": "bytes=5-"}, timeout=HTTP_TIMEOUT)
            assert response.status_code == 206
            assert response.headers["Content-Range"] == f"bytes 5-{len(expected) - 1}/{len(expected)}"
            assert response.content == expected[5:]
            unsatisfiable = requests.get(uri, headers={"Range": f"bytes={len(expected)}-"}, timeout=HTTP_TIMEOUT)
            assert unsatisfiable.status_code == 416
            assert unsatisfiable.headers["Content-Range"] == f"bytes */{len(expected)}"
            num_checked += 1
    assert num_checked >= 4


def test_encapsulated_pixel_data_bulk_data_is_its_frames(archive: Archive, stored: dict[str, Stored]) -> None:
    item = stored["multiframe/us_rle_palette_2frames.dcm"]
    retrieved = archive.client().retrieve_bulkdata(f"{item.url}/bulk/7FE00010")
    assert retrieved == expected_frames(item.dataset)


# --------------------------------------------------------------------- zip


def test_zip_of_a_study_and_a_series_holds_the_stored_objects(archive: Archive, stored: dict[str, Stored]) -> None:
    item = stored["multiframe/xa_jpeg_baseline_96frames.dcm"]
    by_sop = {entry.sop: entry.data for entry in stored.values()}
    for url in [f"{archive.dicomweb_url}/studies/{item.study}", item.series_url]:
        response = requests.get(url, headers={"Accept": "application/zip"}, timeout=HTTP_TIMEOUT)
        assert response.status_code == 200
        assert response.headers["Content-Type"] == "application/zip"
        assert "Content-Encoding" not in response.headers
        with zipfile.ZipFile(io.BytesIO(response.content)) as archive_zip:
            assert archive_zip.testzip() is None  # every CRC-32 checks out
            names = archive_zip.namelist()
            assert names
            for name in names:
                sop = name.rsplit("/", 1)[-1].removesuffix(".dcm")
                assert archive_zip.read(name) == by_sop[sop], name
    missing = requests.get(
        f"{archive.dicomweb_url}/studies/1.2.3.999", headers={"Accept": "application/zip"}, timeout=HTTP_TIMEOUT
    )
    assert missing.status_code == 404


# ---------------------------------------------------- metadata, ETag, gzip


def test_series_metadata_etag_and_compression(archive: Archive) -> None:
    source = pydicom.dcmread(MANIFEST_BY_PATH["valid/ct_explicit_le_private_tags.dcm"].file_path)
    study_uid, series_uid = generate_uid(), generate_uid()

    def instance(number: int) -> bytes:
        dataset = copy.deepcopy(source)
        dataset.StudyInstanceUID = study_uid
        dataset.SeriesInstanceUID = series_uid
        dataset.SOPInstanceUID = generate_uid()
        dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
        dataset.InstanceNumber = number
        buffer = io.BytesIO()
        dataset.save_as(buffer, enforce_file_format=True)
        return buffer.getvalue()

    first = store(archive, instance(1))
    url = f"{first.series_url}/metadata"
    response = requests.get(url, headers={"Accept-Encoding": "gzip"}, timeout=HTTP_TIMEOUT)
    assert response.status_code == 200
    assert response.headers["Content-Encoding"] == "gzip"  # requests decodes it
    assert len(response.json()) == 1
    etag = response.headers["ETag"]
    not_modified = requests.get(url, headers={"If-None-Match": etag}, timeout=HTTP_TIMEOUT)
    assert not_modified.status_code == 304
    assert not_modified.headers["ETag"] == etag
    assert not_modified.content == b""

    second = store(archive, instance(2))
    changed = requests.get(url, headers={"If-None-Match": etag}, timeout=HTTP_TIMEOUT)
    assert changed.status_code == 200
    assert changed.headers["ETag"] != etag
    assert [item["00080018"]["Value"][0] for item in changed.json()] == [first.sop, second.sop]

    # Pixel and DICOM bodies are never compressed, even when the client accepts gzip.
    frames = requests.get(f"{first.url}/frames/1", headers={"Accept-Encoding": "gzip, br"}, timeout=HTTP_TIMEOUT)
    assert frames.status_code == 200 and "Content-Encoding" not in frames.headers
    instance_response = requests.get(first.url, headers={"Accept-Encoding": "gzip"}, timeout=HTTP_TIMEOUT)
    assert "Content-Encoding" not in instance_response.headers
    # No CORS headers unless configured.
    assert (
        "Access-Control-Allow-Origin"
        not in requests.get(url, headers={"Origin": "https://viewer.example.org"}, timeout=HTTP_TIMEOUT).headers
    )


def test_series_metadata_of_a_large_series_is_precomputed(archive: Archive) -> None:
    """200 instances: the second request is served from the precomputed document."""
    source = pydicom.dcmread(MANIFEST_BY_PATH["series/p77654033_study1_cr_series_a.dcm"].file_path)
    study_uid, series_uid = generate_uid(), generate_uid()
    objects = []
    for number in range(1, 201):
        dataset = copy.deepcopy(source)
        dataset.StudyInstanceUID = study_uid
        dataset.SeriesInstanceUID = series_uid
        dataset.SOPInstanceUID = generate_uid()
        dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
        dataset.InstanceNumber = number
        buffer = io.BytesIO()
        dataset.save_as(buffer, enforce_file_format=True)
        objects.append(buffer.getvalue())
    for start in range(0, len(objects), 50):
        result = e2e_support.stow_raw(archive.base_url, objects[start : start + 50])
        assert result.status_code == 200, result.describe()
    client = archive.client()
    first = client.retrieve_series_metadata(study_uid, series_uid)
    second = client.retrieve_series_metadata(study_uid, series_uid)
    assert len(first) == 200
    assert first == second
    assert [item["00200013"]["Value"][0] for item in first] == list(range(1, 201))


# -------------------------------------------------------------------- CORS


@pytest.fixture(scope="module")
def cors_archive(strata_bin, backend, tmp_path_factory) -> Archive:
    resources = backend.provision("cors")
    env = dict(resources.env)
    config_dir = tmp_path_factory.mktemp("cors-config")
    config_file = config_dir / "strata.toml"
    config_file.write_text('[dicomweb]\ncors_allowed_origins = ["https://viewer.example.org"]\n')
    data_dir = tmp_path_factory.mktemp("archive-cors") / "data"
    server = StrataServer(strata_bin, data_dir, env, "cors", extra_args=["--config", str(config_file)])
    server.start(timeout_seconds=float(os.environ.get("STRATA_E2E_STARTUP_TIMEOUT", "60")))
    yield Archive(server=server, resources=resources, backend=backend)
    server.stop()
    if resources.cleanup is not None:
        resources.cleanup()


def test_cors_allows_configured_origins(cors_archive: Archive) -> None:
    url = f"{cors_archive.dicomweb_url}/studies"
    preflight = requests.options(
        url,
        headers={
            "Origin": "https://viewer.example.org",
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "accept, if-none-match",
        },
        timeout=HTTP_TIMEOUT,
    )
    assert preflight.status_code == 200
    assert preflight.headers["Access-Control-Allow-Origin"] == "https://viewer.example.org"
    assert "GET" in preflight.headers["Access-Control-Allow-Methods"]
    allowed = requests.get(url, headers={"Origin": "https://viewer.example.org"}, timeout=HTTP_TIMEOUT)
    assert allowed.status_code in (200, 204)
    assert allowed.headers["Access-Control-Allow-Origin"] == "https://viewer.example.org"
    assert "etag" in allowed.headers["Access-Control-Expose-Headers"].lower()
    other = requests.get(url, headers={"Origin": "https://elsewhere.example.org"}, timeout=HTTP_TIMEOUT)
    assert "Access-Control-Allow-Origin" not in other.headers
    assert json.loads(other.text or "[]") == []
