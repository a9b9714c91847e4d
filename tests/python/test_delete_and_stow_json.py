"""DICOMweb DELETE and STOW-RS of application/dicom+json with bulk data, against a real
`strata serve` (docs/dicomweb.md, "DELETE" and "STOW-RS of metadata and bulk data").

Instances are synthetic (pydicom, no patient data); stores and reads go through
dicomweb-client, the JSON variant of STOW-RS and DELETE through raw HTTP (dicomweb-client
sends application/dicom only and has no delete call).
"""

from __future__ import annotations

import io
import json
import re
import threading
import uuid
from collections.abc import Iterator

import pydicom
import pytest
import requests
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage

import e2e_support
from e2e_support import (
    TAG_FAILED_SOP_SEQUENCE,
    TAG_FAILURE_REASON,
    TAG_REFERENCED_SOP_INSTANCE_UID,
    TAG_REFERENCED_SOP_SEQUENCE,
    Archive,
)

HTTP_TIMEOUT = 60
UID_ROOT = "2.25."
FAILURE_CANNOT_UNDERSTAND = 0xC000
FAILURE_MISSING_IDENTIFIER = 0xA900


def new_uid() -> str:
    return f"{UID_ROOT}{uuid.uuid4().int}"


@pytest.fixture
def deletable_archive(
    strata_bin, backend, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Archive]:
    """A fresh archive with `dicomweb.allow_delete = true` (off by default)."""
    label = re.sub(r"\W+", "_", request.node.name)[:40]
    data_dir = tmp_path_factory.mktemp(f"archive-{label}") / "data"
    yield from e2e_support.run_archive(strata_bin, backend, data_dir, label, {"STRATA__DICOMWEB__ALLOW_DELETE": "true"})


def synthetic_instance(study_uid: str, series_uid: str, number: int, patient_name: str = "Synthétique^Jörg") -> Dataset:
    """A small Secondary Capture instance with 8x8 16-bit pixels (no real patient data)."""
    dataset = Dataset()
    dataset.SpecificCharacterSet = "ISO_IR 192"
    dataset.SOPClassUID = SecondaryCaptureImageStorage
    dataset.SOPInstanceUID = new_uid()
    dataset.StudyInstanceUID = study_uid
    dataset.SeriesInstanceUID = series_uid
    dataset.PatientName = patient_name
    dataset.PatientID = "SYN-DELETE"
    dataset.StudyDate = "20240102"
    dataset.StudyTime = "101500"
    dataset.AccessionNumber = "ACCDEL1"
    dataset.StudyID = "1"
    dataset.Modality = "OT"
    dataset.SeriesNumber = 1
    dataset.InstanceNumber = number
    dataset.ConversionType = "WSD"
    dataset.SamplesPerPixel = 1
    dataset.PhotometricInterpretation = "MONOCHROME2"
    dataset.Rows = 8
    dataset.Columns = 8
    dataset.BitsAllocated = 16
    dataset.BitsStored = 16
    dataset.HighBit = 15
    dataset.PixelRepresentation = 0
    dataset.PixelData = bytes((number + index) % 256 for index in range(8 * 8 * 2))
    dataset.file_meta = FileMetaDataset()
    dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset.file_meta.MediaStorageSOPClassUID = dataset.SOPClassUID
    dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
    return dataset


def delete(archive: Archive, path: str) -> requests.Response:
    return requests.delete(f"{archive.dicomweb_url}{path}", timeout=HTTP_TIMEOUT)


def assert_problem(response: requests.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["status"] == status
    assert body["detail"]
    return body


def instance_uids(archive: Archive, study_uid: str) -> set[str]:
    response = requests.get(
        f"{archive.dicomweb_url}/studies/{study_uid}/instances",
        headers={"accept": "application/dicom+json"},
        timeout=HTTP_TIMEOUT,
    )
    if response.status_code == 204:
        return set()
    assert response.status_code == 200, response.text
    return {item[e2e_support.TAG_SOP_INSTANCE_UID]["Value"][0] for item in response.json()}


# ------------------------------------------------------------------- DELETE


def test_delete_is_refused_with_405_unless_enabled(fresh_archive: Archive) -> None:
    study_uid = new_uid()
    dataset = synthetic_instance(study_uid, new_uid(), 1)
    fresh_archive.client().store_instances([dataset])
    response = delete(fresh_archive, f"/studies/{study_uid}")
    body = assert_problem(response, 405)
    assert "allow_delete" in body["detail"]
    assert "GET" in response.headers["allow"]
    assert instance_uids(fresh_archive, study_uid) == {dataset.SOPInstanceUID}


def test_delete_instance_series_and_study(deletable_archive: Archive) -> None:
    client = deletable_archive.client()
    study_uid = new_uid()
    first_series, second_series = new_uid(), new_uid()
    datasets = [
        synthetic_instance(study_uid, first_series, 1),
        synthetic_instance(study_uid, first_series, 2),
        synthetic_instance(study_uid, second_series, 3),
    ]
    other_study = synthetic_instance(new_uid(), new_uid(), 1)
    client.store_instances([*datasets, other_study])
    assert len(instance_uids(deletable_archive, study_uid)) == 3

    # One instance: 204 with no body, gone from QIDO and WADO (frames too, though the archive
    # has just served one: its cache of frame sources must forget the instance), counts follow.
    first = datasets[0]
    frame_url = (
        f"{deletable_archive.dicomweb_url}/studies/{study_uid}/series/{first_series}"
        f"/instances/{first.SOPInstanceUID}/frames/1"
    )
    frame_accept = {"accept": 'multipart/related; type="application/octet-stream"; transfer-syntax=*'}
    assert requests.get(frame_url, headers=frame_accept, timeout=HTTP_TIMEOUT).status_code == 200
    response = delete(deletable_archive, f"/studies/{study_uid}/series/{first_series}/instances/{first.SOPInstanceUID}")
    assert response.status_code == 204, response.text
    assert response.content == b""
    assert instance_uids(deletable_archive, study_uid) == {datasets[1].SOPInstanceUID, datasets[2].SOPInstanceUID}
    gone = requests.get(
        f"{deletable_archive.dicomweb_url}/studies/{study_uid}/series/{first_series}/instances/{first.SOPInstanceUID}",
        headers={"accept": e2e_support.DICOM_MULTIPART_ANY_TRANSFER_SYNTAX},
        timeout=HTTP_TIMEOUT,
    )
    assert gone.status_code == 404
    assert requests.get(frame_url, headers=frame_accept, timeout=HTTP_TIMEOUT).status_code == 404
    studies = client.search_for_studies(search_filters={"StudyInstanceUID": study_uid})
    assert studies[0][e2e_support.TAG_NUMBER_OF_STUDY_RELATED_INSTANCES]["Value"] == [2]
    assert studies[0][e2e_support.TAG_NUMBER_OF_STUDY_RELATED_SERIES]["Value"] == [2]

    # Unknown or misplaced UIDs: 404; malformed: 400. Nothing changes.
    assert_problem(delete(deletable_archive, f"/studies/{study_uid}/series/{new_uid()}"), 404)
    assert_problem(
        delete(
            deletable_archive,
            f"/studies/{study_uid}/series/{second_series}/instances/{datasets[1].SOPInstanceUID}",
        ),
        404,
    )
    assert_problem(delete(deletable_archive, f"/studies/{new_uid()}"), 404)
    assert_problem(delete(deletable_archive, "/studies/" + "1." * 40), 400)  # longer than 64
    assert len(instance_uids(deletable_archive, study_uid)) == 2

    # A series, then the whole study.
    response = delete(deletable_archive, f"/studies/{study_uid}/series/{second_series}")
    assert response.status_code == 204, response.text
    assert instance_uids(deletable_archive, study_uid) == {datasets[1].SOPInstanceUID}
    studies = client.search_for_studies(search_filters={"StudyInstanceUID": study_uid})
    assert studies[0][e2e_support.TAG_NUMBER_OF_STUDY_RELATED_SERIES]["Value"] == [1]
    response = delete(deletable_archive, f"/studies/{study_uid}")
    assert response.status_code == 204, response.text
    assert client.search_for_studies(search_filters={"StudyInstanceUID": study_uid}) == []
    assert_problem(delete(deletable_archive, f"/studies/{study_uid}"), 404)

    # The other study is untouched, and a deleted instance can be stored again.
    assert instance_uids(deletable_archive, other_study.StudyInstanceUID) == {other_study.SOPInstanceUID}
    client.store_instances([first])
    retrieved = client.retrieve_instance(study_uid, first_series, first.SOPInstanceUID)
    assert retrieved.PixelData == first.PixelData
    frame = requests.get(frame_url, headers=frame_accept, timeout=HTTP_TIMEOUT)
    assert frame.status_code == 200
    assert bytes(first.PixelData) in frame.content


def test_delete_of_a_study_under_legal_hold_is_409(deletable_archive: Archive) -> None:
    study_uid, series_uid = new_uid(), new_uid()
    dataset = synthetic_instance(study_uid, series_uid, 1)
    deletable_archive.client().store_instances([dataset])
    retention_url = f"{deletable_archive.base_url}/api/tiering/studies/{study_uid}/retention"
    held = requests.put(retention_url, json={"legal_hold": True, "retain_until_ms": None}, timeout=HTTP_TIMEOUT)
    assert held.status_code == 200, held.text
    body = assert_problem(delete(deletable_archive, f"/studies/{study_uid}/series/{series_uid}"), 409)
    assert "legal hold" in body["detail"]
    assert instance_uids(deletable_archive, study_uid) == {dataset.SOPInstanceUID}

    released = requests.put(retention_url, json={"legal_hold": False, "retain_until_ms": None}, timeout=HTTP_TIMEOUT)
    assert released.status_code == 200, released.text
    assert delete(deletable_archive, f"/studies/{study_uid}").status_code == 204
    assert instance_uids(deletable_archive, study_uid) == set()


def test_delete_and_restore_race(deletable_archive: Archive) -> None:
    """Deletes an instance while another client stores the same instance again, many times.
    Either order is a valid outcome, but whenever QIDO-RS lists the instance, WADO-RS must
    return it whole: a store landing between the deletion's commit and its object purge once
    left a row without its object (content-addressed keys: the re-stored object is the very
    key the purge deletes)."""
    study_uid, series_uid = new_uid(), new_uid()
    # A second instance keeps the study alive, so a store never races the removal of its study.
    keeper = synthetic_instance(study_uid, series_uid, 1)
    contested = synthetic_instance(study_uid, series_uid, 2)
    deletable_archive.client().store_instances([keeper, contested])
    instance_path = f"/studies/{study_uid}/series/{series_uid}/instances/{contested.SOPInstanceUID}"
    outcomes = {"deleted": 0, "stored_after_delete": 0}
    for _round in range(40):
        if contested.SOPInstanceUID not in instance_uids(deletable_archive, study_uid):
            deletable_archive.client().store_instances([contested])
        start = threading.Barrier(2)
        results: dict[str, object] = {}

        def delete_it(start: threading.Barrier = start, results: dict[str, object] = results) -> None:
            start.wait()
            results["delete"] = delete(deletable_archive, instance_path).status_code

        def store_it(start: threading.Barrier = start, results: dict[str, object] = results) -> None:
            client = deletable_archive.client()
            start.wait()
            client.store_instances([contested])
            results["store"] = "ok"

        threads = [threading.Thread(target=delete_it), threading.Thread(target=store_it)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=HTTP_TIMEOUT)
        assert results.get("store") == "ok", results
        assert results.get("delete") in (204, 404), results

        if contested.SOPInstanceUID in instance_uids(deletable_archive, study_uid):
            outcomes["stored_after_delete"] += 1
            retrieved = deletable_archive.client().retrieve_instance(study_uid, series_uid, contested.SOPInstanceUID)
            assert retrieved.SOPInstanceUID == contested.SOPInstanceUID
            assert retrieved.PixelData == contested.PixelData
        else:
            outcomes["deleted"] += 1
    print("delete/restore outcomes:", outcomes)
    # Whichever order the rounds fell in, one retrieval after a delete and a re-store is checked.
    assert delete(deletable_archive, instance_path).status_code in (204, 404)
    deletable_archive.client().store_instances([contested])
    retrieved = deletable_archive.client().retrieve_instance(study_uid, series_uid, contested.SOPInstanceUID)
    assert retrieved.PixelData == contested.PixelData
    assert instance_uids(deletable_archive, study_uid) >= {keeper.SOPInstanceUID}


# -------------------------------------------------- STOW-RS of dicom+json


def json_and_bulk_parts(datasets: list[Dataset]) -> tuple[list[dict], list[tuple[str, bytes]]]:
    """Each data set's DICOM JSON with its Pixel Data as a BulkDataURI, and the bulk parts."""
    bulk_parts: list[tuple[str, bytes]] = []
    metadata = []
    for dataset in datasets:

        def handler(element, dataset=dataset) -> str:
            location = f"bulk/{dataset.SOPInstanceUID}/{element.tag:08X}"
            bulk_parts.append((location, bytes(element.value)))
            return location

        metadata.append(dataset.to_json_dict(bulk_data_threshold=64, bulk_data_element_handler=handler))
    return metadata, bulk_parts


def stow_json(
    archive: Archive,
    metadata: object,
    bulk_parts: list[tuple[str, bytes]],
    raw_metadata: bytes | None = None,
    bulk_type: str = "application/octet-stream",
) -> requests.Response:
    boundary = f"strata-{uuid.uuid4().hex}"
    body = io.BytesIO()
    metadata_bytes = raw_metadata if raw_metadata is not None else json.dumps(metadata).encode()
    parts = [(b"Content-Type: application/dicom+json\r\n", metadata_bytes)]
    for location, data in bulk_parts:
        headers = f"Content-Type: {bulk_type}\r\nContent-Location: {location}\r\n".encode()
        parts.append((headers, data))
    for headers, data in parts:
        body.write(f"--{boundary}\r\n".encode())
        body.write(headers)
        body.write(b"\r\n")
        body.write(data)
        body.write(b"\r\n")
    body.write(f"--{boundary}--\r\n".encode())
    return requests.post(
        f"{archive.dicomweb_url}/studies",
        data=body.getvalue(),
        headers={
            "content-type": f'multipart/related; type="application/dicom+json"; boundary={boundary}',
            "accept": "application/dicom+json",
        },
        timeout=HTTP_TIMEOUT,
    )


def failure_reasons(response: requests.Response) -> list[int]:
    return [
        item[TAG_FAILURE_REASON]["Value"][0]
        for item in e2e_support.sequence_items(response.json(), TAG_FAILED_SOP_SEQUENCE)
    ]


def test_stow_json_with_bulk_data_round_trips(fresh_archive: Archive) -> None:
    study_uid, series_uid = new_uid(), new_uid()
    datasets = [synthetic_instance(study_uid, series_uid, number) for number in (1, 2)]
    metadata, bulk_parts = json_and_bulk_parts(datasets)
    assert all("BulkDataURI" in item["7FE00010"] for item in metadata)
    response = stow_json(fresh_archive, metadata, bulk_parts)
    assert response.status_code == 200, response.text
    referenced = [
        item[TAG_REFERENCED_SOP_INSTANCE_UID]["Value"][0]
        for item in e2e_support.sequence_items(response.json(), TAG_REFERENCED_SOP_SEQUENCE)
    ]
    assert referenced == [dataset.SOPInstanceUID for dataset in datasets]

    client = fresh_archive.client()
    for dataset in datasets:
        retrieved = client.retrieve_instance(study_uid, series_uid, dataset.SOPInstanceUID)
        assert retrieved.PixelData == dataset.PixelData
        assert str(retrieved.PatientName) == "Synthétique^Jörg"
        assert retrieved.SpecificCharacterSet == "ISO_IR 192"
        assert retrieved.Rows == 8 and retrieved.InstanceNumber == dataset.InstanceNumber
        assert retrieved.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    # Same content again: stored already, still 200.
    assert stow_json(fresh_archive, metadata, bulk_parts).status_code == 200


def test_stow_json_refuses_bad_data_sets_one_by_one(fresh_archive: Archive) -> None:
    study_uid, series_uid = new_uid(), new_uid()
    good, missing_bulk, missing_uid = (synthetic_instance(study_uid, series_uid, number) for number in (1, 2, 3))
    metadata, bulk_parts = json_and_bulk_parts([good, missing_bulk, missing_uid])
    # Drop the bulk part of the second data set and the SOP Instance UID of the third.
    bulk_parts = [part for part in bulk_parts if missing_bulk.SOPInstanceUID not in part[0]]
    del metadata[2]["00080018"]
    response = stow_json(fresh_archive, metadata, bulk_parts)
    assert response.status_code == 202, response.text
    assert sorted(failure_reasons(response)) == sorted([FAILURE_CANNOT_UNDERSTAND, FAILURE_MISSING_IDENTIFIER])
    assert instance_uids(fresh_archive, study_uid) == {good.SOPInstanceUID}

    # Compressed bulk data is not supported: refused, not a 500.
    other = synthetic_instance(study_uid, series_uid, 4)
    metadata, bulk_parts = json_and_bulk_parts([other])
    response = stow_json(fresh_archive, metadata, bulk_parts, bulk_type="image/jpeg")
    assert response.status_code == 409, response.text
    assert failure_reasons(response) == [FAILURE_CANNOT_UNDERSTAND]

    # A bad element (a US value out of range) fails its data set only.
    metadata, bulk_parts = json_and_bulk_parts([synthetic_instance(study_uid, series_uid, 5)])
    metadata[0]["00280010"]["Value"] = [70000]
    response = stow_json(fresh_archive, metadata, bulk_parts)
    assert response.status_code == 409, response.text
    assert failure_reasons(response) == [FAILURE_CANNOT_UNDERSTAND]


@pytest.mark.parametrize(
    "raw_metadata",
    [b"{not json", b'"a string"', b"[]", b"[1, 2]"],
    ids=["malformed", "not-an-array", "empty", "not-objects"],
)
def test_stow_json_unparseable_metadata_is_400_or_failed(fresh_archive: Archive, raw_metadata: bytes) -> None:
    response = stow_json(fresh_archive, None, [], raw_metadata=raw_metadata)
    if raw_metadata == b"[1, 2]":
        # Parseable JSON: each non-object item is one failure.
        assert response.status_code == 409, response.text
        assert failure_reasons(response) == [FAILURE_CANNOT_UNDERSTAND] * 2
    else:
        assert_problem(response, 400)


def test_stow_json_without_metadata_part_is_400(fresh_archive: Archive) -> None:
    boundary = "strata-no-metadata"
    body = (
        f"--{boundary}\r\nContent-Type: application/octet-stream\r\nContent-Location: bulk/1\r\n\r\n"
        f"xx\r\n--{boundary}--\r\n"
    )
    response = requests.post(
        f"{fresh_archive.dicomweb_url}/studies",
        data=body.encode(),
        headers={"content-type": f'multipart/related; type="application/dicom+json"; boundary={boundary}'},
        timeout=HTTP_TIMEOUT,
    )
    assert_problem(response, 400)


def test_pydicom_reads_the_part10_object_built_from_json(fresh_archive: Archive) -> None:
    """The Part 10 object built from JSON is a valid file for an independent parser."""
    study_uid, series_uid = new_uid(), new_uid()
    dataset = synthetic_instance(study_uid, series_uid, 1)
    dataset.add_new(0x00081030, "LO", "Étude JSON")
    metadata, bulk_parts = json_and_bulk_parts([dataset])
    assert stow_json(fresh_archive, metadata, bulk_parts).status_code == 200
    response = e2e_support.wado_get(
        fresh_archive.base_url, f"studies/{study_uid}/series/{series_uid}/instances/{dataset.SOPInstanceUID}"
    )
    assert response.status_code == 200
    parts = e2e_support.decode_multipart_related(response.headers["content-type"], response.content)
    parsed = pydicom.dcmread(io.BytesIO(parts[0].content))
    assert parsed.StudyDescription == "Étude JSON"
    assert parsed.SOPInstanceUID == dataset.SOPInstanceUID
    assert parsed.PixelData == dataset.PixelData
