"""C-CANCEL of a running C-GET and C-MOVE, sent by a real peer (pynetdicom), issue 8.

A study of 40 CT instances is stored; the peer cancels its retrieve once a few sub-operations
have completed. The archive must stop sending, answer with the Cancel status (0xFE00) and the
sub-operation counts of PS3.4 C.4.2.1.6/C.4.3.1.5 (completed so far, remaining not sent), and
keep the association usable: a second retrieve on it completes in full.
"""

from __future__ import annotations

import io
import threading
import time
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE, build_role, evt
from pynetdicom.sop_class import (
    CTImageStorage,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)

import e2e_support
from conftest import base_child_env

NUM_INSTANCES = 40
CANCEL_AFTER = 3
CANCEL_STATUS = 0xFE00


def ct_instance(study_uid: str, series_uid: str, number: int) -> Dataset:
    data = e2e_support.synthetic_ct(
        study_uid,
        series_uid,
        number,
        size=256,
        pixel_fill=bytes([number % 256]),
        PatientName="CANCEL^TEST",
        PatientID="CANCEL-1",
    )
    return pydicom.dcmread(io.BytesIO(data))


@pytest.fixture
def cancel_archive(strata_bin: Path, tmp_path: Path, backend):
    if backend.name != "embedded":
        pytest.skip("DIMSE runs on the embedded backend only")
    move_port = e2e_support.free_port()
    env = base_child_env()
    env["STRATA__DIMSE__PEERS__CANCELSCP"] = f"127.0.0.1:{move_port}"
    server = e2e_support.StrataServer(strata_bin, tmp_path / "data", env, "dimse-cancel")
    server.start(timeout_seconds=60)
    study_uid, series_uid = generate_uid(), generate_uid()
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    host, port = server.dimse_addr
    association = ae.associate(host, port, ae_title="STRATA")
    assert association.is_established
    for number in range(1, NUM_INSTANCES + 1):
        assert association.send_c_store(ct_instance(study_uid, series_uid, number)).Status == 0x0000
    association.release()
    try:
        yield server, move_port, study_uid
    finally:
        server.stop()


def study_query(study_uid: str) -> Dataset:
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = study_uid
    return query


def context_id(association, abstract_syntax: str) -> int:
    return next(
        context.context_id for context in association.accepted_contexts if context.abstract_syntax == abstract_syntax
    )


def run_with_cancel(association, responses, model: str, on_pending=None) -> list[Dataset]:
    """Iterates a C-GET/C-MOVE response generator, sending C-CANCEL once CANCEL_AFTER
    sub-operations completed; returns every status dataset."""
    statuses = []
    cancelled = False
    for status, _identifier in responses:
        statuses.append(status)
        completed = int(getattr(status, "NumberOfCompletedSuboperations", 0) or 0)
        if status.Status == 0xFF00 and completed >= CANCEL_AFTER and not cancelled:
            association.send_c_cancel(1, context_id(association, model))
            cancelled = True
    assert cancelled, "the retrieve finished before it could be cancelled"
    return statuses


def check_cancelled(final: Dataset, num_received: int) -> None:
    assert final.Status == CANCEL_STATUS, hex(final.Status)
    completed = int(final.NumberOfCompletedSuboperations)
    remaining = int(final.NumberOfRemainingSuboperations)
    assert completed >= CANCEL_AFTER
    assert remaining > 0, "a cancelled retrieve reports what it did not send"
    assert completed + remaining + int(final.get("NumberOfFailedSuboperations", 0) or 0) <= NUM_INSTANCES
    assert num_received == completed, (num_received, completed)


def test_c_get_cancelled_by_peer(cancel_archive) -> None:
    server, _move_port, study_uid = cancel_archive
    host, port = server.dimse_addr
    received: list[str] = []

    def on_store(event: evt.Event) -> int:
        received.append(str(event.dataset.SOPInstanceUID))
        time.sleep(0.05)  # a slow workstation: the cancel arrives while instances remain
        return 0x0000

    ae = AE(ae_title="WORKSTATION")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    association = ae.associate(
        host,
        port,
        ae_title="STRATA",
        ext_neg=[build_role(CTImageStorage, scp_role=True)],
        evt_handlers=[(evt.EVT_C_STORE, on_store)],
    )
    assert association.is_established
    responses = association.send_c_get(study_query(study_uid), StudyRootQueryRetrieveInformationModelGet)
    statuses = run_with_cancel(association, responses, StudyRootQueryRetrieveInformationModelGet)
    check_cancelled(statuses[-1], len(received))

    # The association is still in step: a second C-GET runs to completion.
    received.clear()
    statuses = list(association.send_c_get(study_query(study_uid), StudyRootQueryRetrieveInformationModelGet))
    assert statuses[-1][0].Status == 0x0000
    assert len(set(received)) == NUM_INSTANCES
    association.release()


def test_c_move_cancelled_by_peer(cancel_archive) -> None:
    server, move_port, study_uid = cancel_archive
    host, port = server.dimse_addr
    moved: list[str] = []
    lock = threading.Lock()

    def on_moved(event: evt.Event) -> int:
        with lock:
            moved.append(str(event.dataset.SOPInstanceUID))
        time.sleep(0.05)
        return 0x0000

    scp_ae = AE(ae_title="CANCELSCP")
    scp_ae.add_supported_context(CTImageStorage, ExplicitVRLittleEndian)
    scp = scp_ae.start_server(("127.0.0.1", move_port), block=False, evt_handlers=[(evt.EVT_C_STORE, on_moved)])
    try:
        ae = AE(ae_title="WORKSTATION")
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
        association = ae.associate(host, port, ae_title="STRATA")
        assert association.is_established
        responses = association.send_c_move(
            study_query(study_uid), "CANCELSCP", StudyRootQueryRetrieveInformationModelMove
        )
        statuses = run_with_cancel(association, responses, StudyRootQueryRetrieveInformationModelMove)
        with lock:
            num_moved = len(moved)
        check_cancelled(statuses[-1], num_moved)

        with lock:
            moved.clear()
        statuses = list(
            association.send_c_move(study_query(study_uid), "CANCELSCP", StudyRootQueryRetrieveInformationModelMove)
        )
        assert statuses[-1][0].Status == 0x0000
        with lock:
            assert len(set(moved)) == NUM_INSTANCES
        association.release()
    finally:
        scp.shutdown()
