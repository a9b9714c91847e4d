"""Authentication, audit and TLS (docs/security.md), against a real `strata serve` with real
clients: dicomweb-client and requests over HTTP and HTTPS, pynetdicom for DIMSE.

Tokens are made by `strata token new` (the command an operator runs); the TLS certificate by
the `openssl` command line. Instances are synthetic (no patient data), but carry a recognisable
patient name and ID so the test can check that the audit trail never holds them.
"""

from __future__ import annotations

import json
import re
import socket
import ssl
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
import requests
from dicomweb_client.api import DICOMwebClient
from dicomweb_client.session_utils import create_session
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage
from pynetdicom import AE
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)

from e2e_support import Archive, run_archive

HTTP_TIMEOUT = 60
PATIENT_NAME = "Auditcheck^Geheim"
PATIENT_ID = "AUDIT-SECRET-4711"


def new_uid() -> str:
    return f"2.25.{uuid.uuid4().int}"


def synthetic_instance(study_uid: str) -> Dataset:
    dataset = Dataset()
    dataset.SOPClassUID = SecondaryCaptureImageStorage
    dataset.SOPInstanceUID = new_uid()
    dataset.StudyInstanceUID = study_uid
    dataset.SeriesInstanceUID = new_uid()
    dataset.PatientName = PATIENT_NAME
    dataset.PatientID = PATIENT_ID
    dataset.PatientBirthDate = "19610203"
    dataset.StudyDate = "20240102"
    dataset.Modality = "OT"
    dataset.SeriesNumber = 1
    dataset.InstanceNumber = 1
    dataset.SamplesPerPixel = 1
    dataset.PhotometricInterpretation = "MONOCHROME2"
    dataset.Rows = 4
    dataset.Columns = 4
    dataset.BitsAllocated = 8
    dataset.BitsStored = 8
    dataset.HighBit = 7
    dataset.PixelRepresentation = 0
    dataset.PixelData = bytes(range(16))
    dataset.file_meta = FileMetaDataset()
    dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset.file_meta.MediaStorageSOPClassUID = dataset.SOPClassUID
    dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
    return dataset


def make_token(strata_bin: Path, name: str, scopes: str) -> tuple[str, str]:
    """Runs `strata token new`; returns (token, tokens-file line)."""
    output = subprocess.run(
        [str(strata_bin), "token", "new", "--name", name, "--scopes", scopes],
        check=True,
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout
    token = re.search(r"^token: (\S+)$", output, re.MULTILINE)
    line = re.search(r"^tokens-file line: (.+)$", output, re.MULTILINE)
    assert token and line, output
    return token.group(1), line.group(1)


def client_with_token(base_url: str, token: str, verify: str | bool = True) -> DICOMwebClient:
    session = create_session()
    session.headers["Authorization"] = f"Bearer {token}"
    session.verify = verify
    return DICOMwebClient(url=f"{base_url}/dicomweb", session=session, timeout=HTTP_TIMEOUT)


def start_server(strata_bin, backend, tmp_path: Path, label: str, extra_env: dict[str, str]) -> Iterator[Archive]:
    return run_archive(strata_bin, backend, tmp_path / "data", label, extra_env)


def audit_lines(path: Path, until) -> list[dict]:
    """The audit file's records, once `until(records)` holds (they are written by a thread),
    or after 10 s."""
    deadline = time.monotonic() + 10
    while True:
        text = path.read_text(encoding="utf-8") if path.exists() else ""
        records = [json.loads(line) for line in text.splitlines() if line.strip()]
        if until(records) or time.monotonic() > deadline:
            return records
        time.sleep(0.05)


@pytest.fixture
def secured(strata_bin, backend, tmp_path: Path) -> Iterator[tuple[Archive, dict[str, str], Path]]:
    """An archive that requires tokens and writes an audit file; yields it, the tokens by
    name and the audit file."""
    tokens: dict[str, str] = {}
    lines = ["# name scopes sha256"]
    for name, scopes in [("viewer", "read"), ("modality", "write"), ("admin-desk", "read,write,delete,admin")]:
        token, line = make_token(strata_bin, name, scopes)
        tokens[name] = token
        lines.append(line)
    tokens_file = tmp_path / "tokens"
    tokens_file.write_text("\n".join(lines) + "\n", encoding="utf-8")
    audit_file = tmp_path / "audit" / "audit.jsonl"
    env = {
        "STRATA__AUTH__TOKENS_FILE": str(tokens_file),
        "STRATA__AUDIT__FILE": str(audit_file),
        "STRATA__DICOMWEB__ALLOW_DELETE": "true",
    }
    for archive in start_server(strata_bin, backend, tmp_path, "secured", env):
        yield archive, tokens, audit_file


def test_tokens_and_scopes_guard_every_http_api(secured) -> None:
    archive, tokens, audit_file = secured
    base = archive.base_url
    study_uid = new_uid()
    dataset = synthetic_instance(study_uid)

    # No token, or a wrong one: 401 with a Bearer challenge, on every API.
    for url in [f"{base}/dicomweb/studies", f"{base}/fhir/ImagingStudy", f"{base}/api/search?q=x"]:
        response = requests.get(url, timeout=HTTP_TIMEOUT)
        assert response.status_code == 401, (url, response.text)
        assert response.headers["www-authenticate"].startswith("Bearer")
        assert response.headers["content-type"].startswith("application/problem+json")
    wrong = requests.get(
        f"{base}/dicomweb/studies", headers={"Authorization": "Bearer strata_wrong"}, timeout=HTTP_TIMEOUT
    )
    assert wrong.status_code == 401
    assert 'error="invalid_token"' in wrong.headers["www-authenticate"]
    # Probes and metrics stay open; a CORS preflight is not challenged.
    assert requests.get(f"{base}/livez", timeout=HTTP_TIMEOUT).status_code == 200
    assert requests.get(f"{base}/readyz", timeout=HTTP_TIMEOUT).status_code == 200
    assert requests.get(f"{base}/metrics", timeout=HTTP_TIMEOUT).status_code == 200
    assert requests.options(f"{base}/dicomweb/studies", timeout=HTTP_TIMEOUT).status_code != 401

    viewer = client_with_token(base, tokens["viewer"])
    modality = client_with_token(base, tokens["modality"])
    # A read-only token cannot store; a write-only token cannot read.
    with pytest.raises(requests.HTTPError) as refused:
        viewer.store_instances([dataset])
    assert refused.value.response.status_code == 403
    assert "write" in refused.value.response.json()["detail"]
    modality.store_instances([dataset])
    with pytest.raises(requests.HTTPError) as refused:
        modality.search_for_studies(search_filters={"PatientName": PATIENT_NAME})
    assert refused.value.response.status_code == 403

    found = viewer.search_for_studies(search_filters={"PatientName": PATIENT_NAME})
    assert [study["0020000D"]["Value"][0] for study in found] == [study_uid]
    retrieved = viewer.retrieve_instance(study_uid, dataset.SeriesInstanceUID, dataset.SOPInstanceUID)
    assert retrieved.PixelData == dataset.PixelData
    fhir = requests.get(
        f"{base}/fhir/ImagingStudy",
        params={"identifier": f"urn:dicom:uid|urn:oid:{study_uid}"},
        headers={"Authorization": f"Bearer {tokens['viewer']}"},
        timeout=HTTP_TIMEOUT,
    )
    assert fhir.status_code == 200, fhir.text

    # Deleting and changing tiering need their own scopes.
    study_path = f"{base}/dicomweb/studies/{study_uid}"
    as_viewer = {"Authorization": f"Bearer {tokens['viewer']}"}
    as_admin = {"Authorization": f"Bearer {tokens['admin-desk']}"}
    assert requests.delete(study_path, headers=as_viewer, timeout=HTTP_TIMEOUT).status_code == 403
    hold = {"legal_hold": True, "retain_until_ms": None}
    retention = f"{base}/api/tiering/studies/{study_uid}/retention"
    assert requests.put(retention, json=hold, headers=as_viewer, timeout=HTTP_TIMEOUT).status_code == 403
    assert requests.put(retention, json=hold, headers=as_admin, timeout=HTTP_TIMEOUT).status_code == 200
    assert requests.delete(study_path, headers=as_admin, timeout=HTTP_TIMEOUT).status_code == 409

    # The audit trail: who did what, with which outcome; never patient data or query strings.
    records = audit_lines(audit_file, until=lambda records: any(record["action"] == "DELETE" for record in records))
    http_records = [record for record in records if record["protocol"] == "http"]
    assert any(
        record["principal"] == "anonymous" and record["outcome"] == "401" and record["resource"] == "/dicomweb/studies"
        for record in http_records
    ), http_records
    assert any(
        record["principal"] == "viewer" and record["action"] == "POST" and record["outcome"] == "403"
        for record in http_records
    )
    assert any(
        record["principal"] == "modality" and record["action"] == "POST" and record["outcome"] == "200"
        for record in http_records
    )
    assert any(
        record["principal"] == "viewer"
        and record["action"] == "GET"
        and record["resource"].endswith(f"/instances/{dataset.SOPInstanceUID}")
        and record["outcome"] == "200"
        for record in http_records
    )
    assert any(
        record["principal"] == "admin-desk" and record["action"] == "DELETE" and record["outcome"] == "409"
        for record in http_records
    )
    assert all(record["remote_addr"].startswith("127.0.0.1:") for record in http_records)
    assert not any(record["resource"] in ("/livez", "/readyz", "/metrics") for record in http_records)
    text = audit_file.read_text(encoding="utf-8")
    for secret in ["Auditcheck", "Geheim", PATIENT_ID, "19610203", "?", tokens["viewer"], tokens["modality"]]:
        assert secret not in text, f"{secret!r} is in the audit file"
    assert (audit_file.stat().st_mode & 0o777) == 0o600
    # The same records reach the log, on the `audit` target.
    log = Path(archive.server.log_path).read_text(encoding="utf-8")
    assert "audit" in log and "principal=viewer" in log


def test_dimse_operations_are_audited_with_the_calling_ae_title(secured) -> None:
    archive, _tokens, audit_file = secured
    host, port = archive.server.dimse_addr
    ae = AE(ae_title="AUDIT_SCU")
    ae.add_requested_context(Verification)
    ae.add_requested_context(SecondaryCaptureImageStorage, ExplicitVRLittleEndian)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    dataset = synthetic_instance(new_uid())
    association = ae.associate(host, port, ae_title="STRATA")
    assert association.is_established
    try:
        assert association.send_c_echo().Status == 0x0000
        assert association.send_c_store(dataset).Status == 0x0000
        query = Dataset()
        query.QueryRetrieveLevel = "STUDY"
        query.StudyInstanceUID = dataset.StudyInstanceUID
        query.PatientName = PATIENT_NAME
        responses = list(association.send_c_find(query, StudyRootQueryRetrieveInformationModelFind))
        assert [status.Status for status, _ in responses] == [0xFF00, 0x0000]
    finally:
        association.release()
    stored = audit_lines(audit_file, until=lambda records: any(record["action"] == "C-FIND" for record in records))
    records = [record for record in stored if record["protocol"] == "dimse"]
    assert {(record["action"], record["principal"], record["outcome"]) for record in records} >= {
        ("C-ECHO", "AUDIT_SCU", "0x0000"),
        ("C-STORE", "AUDIT_SCU", "0x0000"),
    }, records
    store = next(record for record in records if record["action"] == "C-STORE")
    assert store["resource"] == dataset.SOPInstanceUID
    # A query is recorded by its level and Study Instance UID, never its other keys.
    find = next(record for record in records if record["action"] == "C-FIND")
    assert (find["resource"], find["outcome"]) == (f"STUDY {dataset.StudyInstanceUID}", "0x0000")
    text = audit_file.read_text(encoding="utf-8")
    for secret in [PATIENT_ID, "Auditcheck", "Geheim"]:
        assert secret not in text


@pytest.fixture
def tls_archive(strata_bin, backend, tmp_path: Path) -> Iterator[tuple[Archive, Path]]:
    """An archive serving HTTPS with a self-signed certificate for 127.0.0.1."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    env = {"STRATA__HTTP__TLS_CERT_FILE": str(cert), "STRATA__HTTP__TLS_KEY_FILE": str(key)}
    for archive in start_server(strata_bin, backend, tmp_path, "tls", env):
        yield archive, cert


def test_https_serves_dicomweb_and_refuses_plain_http(tls_archive) -> None:
    archive, cert = tls_archive
    assert "https://" in Path(archive.server.log_path).read_text(encoding="utf-8")
    https_base = archive.base_url.replace("http://", "https://")
    session = create_session()
    # Otherwise REQUESTS_CA_BUNDLE from the environment would override `verify`.
    session.trust_env = False
    session.verify = str(cert)
    client = DICOMwebClient(url=f"{https_base}/dicomweb", session=session, timeout=HTTP_TIMEOUT)
    study_uid = new_uid()
    dataset = synthetic_instance(study_uid)
    client.store_instances([dataset])
    retrieved = client.retrieve_instance(study_uid, dataset.SeriesInstanceUID, dataset.SOPInstanceUID)
    assert retrieved.PixelData == dataset.PixelData
    assert requests.get(f"{https_base}/readyz", verify=str(cert), timeout=HTTP_TIMEOUT).status_code == 200
    # An untrusted certificate is refused by the client; plain HTTP gets no HTTP answer.
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(f"{https_base}/livez", timeout=HTTP_TIMEOUT)
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(f"{archive.base_url}/livez", timeout=HTTP_TIMEOUT)
    # The server is still up after both.
    assert requests.get(f"{https_base}/livez", verify=str(cert), timeout=HTTP_TIMEOUT).status_code == 200


def dcmtk(tool: str) -> str:
    """dcmtk's tool from the Debian package (pynetdicom installs console scripts of the same
    names earlier on PATH)."""
    path = Path("/usr/bin") / tool
    assert path.exists(), f"dcmtk's {tool} is not installed (apt-get install dcmtk)"
    return str(path)


def openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def make_pki(directory: Path) -> dict[str, Path]:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, all EC P-256."""
    files = {
        name: directory / f"{name}.pem" for name in ["ca", "ca-key", "server", "server-key", "client", "client-key"]
    }
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    openssl("req", "-x509", *ec, "-days", "2", "-subj", "/CN=Strata test CA",
            "-keyout", str(files["ca-key"]), "-out", str(files["ca"]))  # fmt: skip
    for name, extension in [("server", "subjectAltName=IP:127.0.0.1"), ("client", "extendedKeyUsage=clientAuth")]:
        request = directory / f"{name}.csr"
        extension_file = directory / f"{name}.ext"
        extension_file.write_text(extension + "\n", encoding="utf-8")
        openssl("req", "-new", *ec, "-subj", f"/CN={name}", "-keyout", str(files[f"{name}-key"]), "-out", str(request))
        openssl("x509", "-req", "-in", str(request), "-CA", str(files["ca"]), "-CAkey", str(files["ca-key"]),
                "-CAcreateserial", "-days", "2", "-extfile", str(extension_file), "-out", str(files[name]))  # fmt: skip
    return files


@pytest.fixture
def dimse_tls_archive(strata_bin, backend, tmp_path: Path) -> Iterator[tuple[Archive, dict[str, Path], Path]]:
    """An archive whose DIMSE listener takes DICOM TLS only, with client certificates from the
    test CA required (mutual TLS), and an audit file."""
    pki = make_pki(tmp_path)
    audit_file = tmp_path / "audit.jsonl"
    destination_port = free_port()
    env = {
        "STRATA__DIMSE__TLS_CERT_FILE": str(pki["server"]),
        "STRATA__DIMSE__TLS_KEY_FILE": str(pki["server-key"]),
        "STRATA__DIMSE__TLS_CLIENT_CA_FILE": str(pki["ca"]),
        # A C-MOVE destination reached over TLS (dcmtk's storescp in the test).
        "STRATA__DIMSE__PEERS__TLSDEST": f"127.0.0.1:{destination_port}",
        "STRATA__DIMSE__TLS_PEERS": "TLSDEST",
        "STRATA__DIMSE__TLS_PEER_CA_FILE": str(pki["ca"]),
        "STRATA__AUDIT__FILE": str(audit_file),
    }
    pki["destination_port"] = destination_port  # type: ignore[assignment]
    for archive in start_server(strata_bin, backend, tmp_path, "dimse_tls", env):
        yield archive, pki, audit_file


def test_dicom_tls_with_client_certificates_and_dcmtk(dimse_tls_archive, tmp_path: Path) -> None:
    archive, pki, audit_file = dimse_tls_archive
    host, port = archive.server.dimse_addr
    client_tls = ["+tls", str(pki["client-key"]), str(pki["client"]), "+cf", str(pki["ca"]), "-pw"]
    called = ["-aet", "TLS_SCU", "-aec", "STRATA"]

    echo = subprocess.run(
        [dcmtk("echoscu"), *called, *client_tls, host, str(port)], capture_output=True, text=True, timeout=60
    )
    assert echo.returncode == 0, echo.stdout + echo.stderr

    dataset = synthetic_instance(new_uid())
    path = tmp_path / "instance.dcm"
    dataset.save_as(path, enforce_file_format=True)
    store = subprocess.run(
        [dcmtk("storescu"), *called, *client_tls, host, str(port), str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert store.returncode == 0, store.stdout + store.stderr
    found = requests.get(
        f"{archive.base_url}/dicomweb/studies/{dataset.StudyInstanceUID}/instances",
        headers={"accept": "application/dicom+json"},
        timeout=HTTP_TIMEOUT,
    )
    assert found.status_code == 200, found.text
    assert [item["00080018"]["Value"][0] for item in found.json()] == [dataset.SOPInstanceUID]

    # Without TLS, or over TLS without a client certificate: no association.
    plain = subprocess.run([dcmtk("echoscu"), *called, host, str(port)], capture_output=True, text=True, timeout=60)
    assert plain.returncode != 0, plain.stdout
    anonymous = subprocess.run(
        [dcmtk("echoscu"), *called, "+tla", "+cf", str(pki["ca"]), host, str(port)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert anonymous.returncode != 0, anonymous.stdout
    # The listener still serves afterwards.
    again = subprocess.run(
        [dcmtk("echoscu"), *called, *client_tls, host, str(port)], capture_output=True, text=True, timeout=60
    )
    assert again.returncode == 0, again.stdout + again.stderr

    records = audit_lines(audit_file, until=lambda records: sum(r["action"] == "C-ECHO" for r in records) >= 2)
    dimse = {(record["action"], record["principal"], record["outcome"]) for record in records}
    assert ("C-STORE", "TLS_SCU", "0x0000") in dimse, records
    assert ("C-ECHO", "TLS_SCU", "0x0000") in dimse, records

    # C-MOVE to a destination over DICOM TLS: dcmtk's storescp takes the sub-association with
    # Strata's certificate (it requires a client certificate by default).
    received = tmp_path / "received"
    received.mkdir()
    destination = subprocess.Popen(
        [dcmtk("storescp"), "+tls", str(pki["server-key"]), str(pki["server"]), "+cf", str(pki["ca"]), "-pw",
         "-aet", "TLSDEST", "-od", str(received), str(pki["destination_port"])],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip
    try:
        time.sleep(0.5)
        # dcmtk's movescu has no TLS: pynetdicom asks for the move, over TLS with its certificate.
        tls_context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(pki["ca"]))
        tls_context.load_cert_chain(certfile=str(pki["client"]), keyfile=str(pki["client-key"]))
        ae = AE(ae_title="TLS_SCU")
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
        association = ae.associate(host, port, ae_title="STRATA", tls_args=(tls_context, "127.0.0.1"))
        assert association.is_established
        try:
            query = Dataset()
            query.QueryRetrieveLevel = "STUDY"
            query.StudyInstanceUID = dataset.StudyInstanceUID
            statuses = [
                status.Status
                for status, _ in association.send_c_move(query, "TLSDEST", StudyRootQueryRetrieveInformationModelMove)
            ]
        finally:
            association.release()
        assert statuses[-1] == 0x0000, statuses
        files = list(received.iterdir())
        assert len(files) == 1, files
        assert pydicom.dcmread(files[0]).SOPInstanceUID == dataset.SOPInstanceUID
    finally:
        destination.terminate()
        destination.wait(timeout=10)
    moved = audit_lines(audit_file, until=lambda records: any(r["action"] == "C-MOVE" for r in records))
    move_record = next(record for record in moved if record["action"] == "C-MOVE")
    assert (move_record["resource"], move_record["outcome"]) == (f"STUDY {dataset.StudyInstanceUID}", "0x0000")


def test_a_rotated_tokens_file_takes_effect_without_a_restart(secured, strata_bin, tmp_path: Path) -> None:
    archive, tokens, _audit_file = secured
    tokens_file = tmp_path / "tokens"
    url = f"{archive.base_url}/dicomweb/studies"
    assert requests.get(url, headers={"Authorization": f"Bearer {tokens['viewer']}"}, timeout=HTTP_TIMEOUT).ok
    late, late_line = make_token(strata_bin, "late", "read")
    # Rotate: the viewer's line goes, a new token comes (written whole, as a Secret update is).
    kept = [line for line in tokens_file.read_text(encoding="utf-8").splitlines() if not line.startswith("viewer ")]
    replacement = tmp_path / "tokens.new"
    replacement.write_text("\n".join([*kept, late_line]) + "\n", encoding="utf-8")
    replacement.replace(tokens_file)
    deadline = time.monotonic() + 20
    while requests.get(url, headers={"Authorization": f"Bearer {late}"}, timeout=HTTP_TIMEOUT).status_code != 200:
        assert time.monotonic() < deadline, "the new token was not accepted within 20 s"
        time.sleep(0.25)
    old = requests.get(url, headers={"Authorization": f"Bearer {tokens['viewer']}"}, timeout=HTTP_TIMEOUT)
    assert old.status_code == 401
    # A broken file is ignored: the tokens in force stay.
    tokens_file.write_text("late read not-a-digest\n", encoding="utf-8")
    time.sleep(6)
    assert requests.get(url, headers={"Authorization": f"Bearer {late}"}, timeout=HTTP_TIMEOUT).status_code == 200
    assert "cannot be used" in Path(archive.server.log_path).read_text(encoding="utf-8")
