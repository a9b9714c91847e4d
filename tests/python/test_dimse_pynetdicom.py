"""DIMSE with a second third-party peer, pynetdicom (issue 8).

Stores the valid corpus with C-STORE, finds the studies with C-FIND, gets every study back
with C-GET (SCP/SCU role selection) and moves it with C-MOVE to a pynetdicom Storage SCP, and
checks that every instance comes back with the same SOP Instance UID and pixel data. The dcmtk
peers are driven from `crates/strata-dimse/tests/dcmtk.rs`.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pydicom
import pytest
from pynetdicom import AE, build_role, evt
from pynetdicom.sop_class import (
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)

import e2e_support
from conftest import base_child_env

CORPUS_DIR = Path(os.environ.get("STRATA_CORPUS_DIR", Path(__file__).resolve().parents[3] / "shared" / "corpus"))
UNCOMPRESSED = ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2"]


def valid_corpus() -> dict[str, pydicom.Dataset]:
    """The valid corpus files in little endian, one per SOP Instance UID."""
    datasets: dict[str, pydicom.Dataset] = {}
    for path in sorted((CORPUS_DIR / "valid").glob("*.dcm")):
        dataset = pydicom.dcmread(path)
        if dataset.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.2":
            continue  # pydicom 3 no longer writes big endian
        datasets.setdefault(str(dataset.SOPInstanceUID), dataset)
    return datasets


def pixel_bytes(dataset: pydicom.Dataset) -> bytes | None:
    for keyword in ("PixelData", "FloatPixelData"):
        if keyword in dataset:
            return bytes(dataset[keyword].value)
    return None


def same_pixels(original: bytes | None, received: bytes | None) -> bool:
    if original is not None and received is not None and len(original) % 2 == 1:
        # An odd value may arrive padded to even length.
        return received in (original, original + b"\0")
    return original == received


@pytest.fixture
def dimse_archive(strata_bin: Path, tmp_path: Path, backend):
    # DIMSE does not depend on the catalog or store backend: run once, on the embedded one.
    if backend.name != "embedded":
        pytest.skip("DIMSE runs on the embedded backend only")
    move_port = e2e_support.free_port()
    env = base_child_env()
    env["STRATA__DIMSE__PEERS__PYSCP"] = f"127.0.0.1:{move_port}"
    server = e2e_support.StrataServer(strata_bin, tmp_path / "data", env, "dimse")
    server.start(timeout_seconds=60)
    try:
        yield server, move_port
    finally:
        server.stop()


def test_pynetdicom_store_find_get_move_round_trip(dimse_archive) -> None:
    server, move_port = dimse_archive
    host, port = server.dimse_addr
    corpus = valid_corpus()
    assert len(corpus) >= 10

    ae = AE(ae_title="PYNETDICOM")
    ae.add_requested_context(Verification)
    for sop_class_uid in sorted({str(dataset.SOPClassUID) for dataset in corpus.values()}):
        ae.add_requested_context(sop_class_uid, UNCOMPRESSED)
    association = ae.associate(host, port, ae_title="STRATA")
    assert association.is_established
    assert association.send_c_echo().Status == 0x0000
    for sop_instance_uid, dataset in corpus.items():
        status = association.send_c_store(dataset)
        assert status.Status in (0x0000, 0xB000, 0xB007), (sop_instance_uid, hex(status.Status))
    association.release()

    # C-FIND: one response per study.
    study_uids = {str(dataset.StudyInstanceUID) for dataset in corpus.values()}
    find_ae = AE(ae_title="PYNETDICOM")
    find_ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    association = find_ae.associate(host, port, ae_title="STRATA")
    query = pydicom.Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = ""
    query.PatientName = ""
    found = set()
    for status, identifier in association.send_c_find(query, StudyRootQueryRetrieveInformationModelFind):
        if status.Status == 0xFF00:
            found.add(str(identifier.StudyInstanceUID))
        else:
            assert status.Status == 0x0000
    association.release()
    assert found == study_uids

    # C-GET: the instances come back on the same association (role selection).
    received: dict[str, pydicom.Dataset] = {}

    def on_store(event: evt.Event) -> int:
        dataset = event.dataset
        dataset.file_meta = event.file_meta
        received[str(dataset.SOPInstanceUID)] = dataset
        return 0x0000

    sop_classes = sorted({str(dataset.SOPClassUID) for dataset in corpus.values()})
    get_ae = AE(ae_title="PYNETDICOM")
    get_ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    for sop_class_uid in sop_classes:
        get_ae.add_requested_context(sop_class_uid, UNCOMPRESSED)
    roles = [build_role(sop_class_uid, scp_role=True) for sop_class_uid in sop_classes]
    association = get_ae.associate(
        host, port, ae_title="STRATA", ext_neg=roles, evt_handlers=[(evt.EVT_C_STORE, on_store)]
    )
    assert association.is_established
    for study_uid in study_uids:
        query = pydicom.Dataset()
        query.QueryRetrieveLevel = "STUDY"
        query.StudyInstanceUID = study_uid
        statuses = [
            status.Status for status, _ in association.send_c_get(query, StudyRootQueryRetrieveInformationModelGet)
        ]
        assert statuses[-1] == 0x0000, [hex(status) for status in statuses]
    association.release()
    assert set(received) == set(corpus)
    for sop_instance_uid, dataset in corpus.items():
        assert same_pixels(pixel_bytes(dataset), pixel_bytes(received[sop_instance_uid])), sop_instance_uid

    # C-MOVE to a pynetdicom Storage SCP known to the archive as PYSCP.
    moved: dict[str, pydicom.Dataset] = {}
    moved_lock = threading.Lock()

    def on_moved(event: evt.Event) -> int:
        with moved_lock:
            moved[str(event.dataset.SOPInstanceUID)] = event.dataset
        return 0x0000

    scp_ae = AE(ae_title="PYSCP")
    for sop_class_uid in sop_classes:
        scp_ae.add_supported_context(sop_class_uid, UNCOMPRESSED)
    scp = scp_ae.start_server(("127.0.0.1", move_port), block=False, evt_handlers=[(evt.EVT_C_STORE, on_moved)])
    try:
        move_ae = AE(ae_title="PYNETDICOM")
        move_ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
        association = move_ae.associate(host, port, ae_title="STRATA")
        for study_uid in study_uids:
            query = pydicom.Dataset()
            query.QueryRetrieveLevel = "STUDY"
            query.StudyInstanceUID = study_uid
            statuses = [
                status.Status
                for status, _ in association.send_c_move(query, "PYSCP", StudyRootQueryRetrieveInformationModelMove)
            ]
            assert statuses[-1] == 0x0000, [hex(status) for status in statuses]
        # An unknown destination is refused with 0xA801.
        query = pydicom.Dataset()
        query.QueryRetrieveLevel = "STUDY"
        query.StudyInstanceUID = next(iter(study_uids))
        statuses = [
            status.Status
            for status, _ in association.send_c_move(query, "NOWHERE", StudyRootQueryRetrieveInformationModelMove)
        ]
        assert statuses == [0xA801]
        association.release()
    finally:
        scp.shutdown()
    assert set(moved) == set(corpus)
    for sop_instance_uid, dataset in corpus.items():
        assert same_pixels(pixel_bytes(dataset), pixel_bytes(moved[sop_instance_uid])), sop_instance_uid
