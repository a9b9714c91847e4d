"""Tiered storage end to end (issue 4, docs/tiering.md), on `strata serve` with three tiers:
hot ([storage]), `cold` (a local directory) and `archive` (S3 storage class GLACIER on the moto
server, restore required).

- rules move a CT study to `archive` and every other study to `cold`, from the event log;
- WADO-RS reads from `cold` transparently, byte for byte;
- a read from `archive` before the restore answers 503 with Retry-After and a problem body,
  starts the restore, and succeeds afterwards (moto completes restores at once);
- a DIMSE C-GET of an archived study is refused with 0xA702 until restored, then succeeds;
- a byte flipped in a `cold` object is reported by the fixity API (no replica to repair from);
- the admin API and the `strata tier` / `strata fixity` CLI report the same state.

Skipped when `moto_server` (pip `moto[server]`) is not installed.
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import time
from pathlib import Path

import pydicom
import pytest
import requests
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE, build_role, evt
from pynetdicom.sop_class import CTImageStorage, MRImageStorage, StudyRootQueryRetrieveInformationModelGet

import e2e_support
from e2e_support import StrataServer

REQUEST_TIMEOUT = 30
RETRY_AFTER_SECONDS = 120


def synthetic_image(sop_class: str, modality: str, study_uid: str, seed: int, size: int = 16) -> bytes:
    return e2e_support.synthetic_ct(
        study_uid,
        None,
        seed,
        size=size,
        sop_class=sop_class,
        Modality=modality,
        PatientName="TIERING^TEST",
        PatientID="TIER-1",
    )


@pytest.fixture
def moto_endpoint():
    binary = shutil.which("moto_server")
    if binary is None:
        pytest.skip("moto_server is not installed (pip install 'moto[server]')")
    port = e2e_support.free_port()
    process = subprocess.Popen(
        [binary, "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                requests.get(endpoint, timeout=1)
                break
            except requests.ConnectionError:
                if time.monotonic() > deadline:
                    pytest.fail("moto_server did not start")
                time.sleep(0.1)
        import boto3

        boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        ).create_bucket(Bucket="strata-archive")
        yield endpoint
    finally:
        process.terminate()
        process.wait(timeout=10)


def tiering_config(path: Path, cold_dir: Path, moto_endpoint: str) -> None:
    path.write_text(
        f"""
[tiering]
enabled = true
poll_interval_ms = 200
scan_interval_seconds = 1
restore_retry_after_seconds = {RETRY_AFTER_SECONDS}
access_flush_seconds = 1

[tiering.tiers.cold]
uri = "file://{cold_dir}"

[tiering.tiers.archive]
uri = "s3://strata-archive/objects"
storage_class = "GLACIER"
requires_restore = true

[tiering.tiers.archive.s3]
endpoint = "{moto_endpoint}"
region = "us-east-1"
access_key_id = "testing"
secret_access_key = "testing"
path_style = true
allow_http = true

[[tiering.rules]]
name = "ct-to-archive"
tier = "archive"
modalities = ["CT"]

[[tiering.rules]]
name = "rest-to-cold"
tier = "cold"
""",
        encoding="utf-8",
    )


def tier_counts(base_url: str) -> dict[str, int]:
    status = requests.get(f"{base_url}/api/tiering/status", timeout=REQUEST_TIMEOUT)
    assert status.status_code == 200, status.text[:300]
    return {tier["name"]: tier["num_objects"] for tier in status.json()["tiers"]}


def retrieve(base_url: str, study: str) -> requests.Response:
    return e2e_support.wado_get(base_url, f"studies/{study}")


def test_tiers_move_read_restore_and_check_fixity(
    strata_bin: Path, backend, tmp_path: Path, moto_endpoint: str
) -> None:
    cold_dir = tmp_path / "cold"
    config_path = tmp_path / "strata.toml"
    tiering_config(config_path, cold_dir, moto_endpoint)
    resources = backend.provision("tiering")
    env = dict(resources.env)
    env["STRATA_CONFIG"] = str(config_path)
    data_dir = tmp_path / "data"
    server = StrataServer(strata_bin, data_dir, env, "tiering")
    try:
        server.start(timeout_seconds=60)
        base_url = server.base_url
        mr_study, ct_study, dimse_study = generate_uid(), generate_uid(), generate_uid()
        web_study = generate_uid()
        mr_bytes = synthetic_image(MRImageStorage, "MR", mr_study, 1)
        ct_bytes = synthetic_image(CTImageStorage, "CT", ct_study, 2)
        dimse_bytes = synthetic_image(CTImageStorage, "CT", dimse_study, 3)
        web_bytes = synthetic_image(CTImageStorage, "CT", web_study, 4)
        for part in (mr_bytes, ct_bytes, dimse_bytes, web_bytes):
            body, content_type = e2e_support.encode_multipart_related([part])
            stored = requests.post(
                f"{base_url}/dicomweb/studies",
                data=body,
                headers={"Content-Type": content_type, "Accept": "application/dicom+json"},
                timeout=REQUEST_TIMEOUT,
            )
            assert stored.status_code == 200, stored.text[:300]

        # The service follows the event log and moves both studies off hot.
        deadline = time.monotonic() + 30
        while True:
            counts = tier_counts(base_url)
            if counts.get("cold") == 1 and counts.get("archive") == 3:
                break
            assert time.monotonic() < deadline, f"objects not moved: {counts}"
            time.sleep(0.2)
        assert counts.get("hot", 0) == 0
        cold_files = [path for path in cold_dir.rglob("*.dcm")]
        assert len(cold_files) == 1

        # Cold: transparent, byte for byte.
        response = retrieve(base_url, mr_study)
        assert response.status_code == 200, response.text[:300]
        parts = e2e_support.decode_multipart_related(response.headers["Content-Type"], response.content)
        assert [part.content for part in parts] == [mr_bytes]

        # Archive: refused with 503 + Retry-After until restored; the refusal starts the restore.
        refused = retrieve(base_url, ct_study)
        assert refused.status_code == 503, refused.text[:300]
        assert refused.headers["Retry-After"] == str(RETRY_AFTER_SECONDS)
        assert refused.headers["Content-Type"].startswith("application/problem+json")
        assert "restored" in refused.json()["detail"]
        restored = retrieve(base_url, ct_study)
        assert restored.status_code == 200, restored.text[:300]
        parts = e2e_support.decode_multipart_related(restored.headers["Content-Type"], restored.content)
        assert [part.content for part in parts] == [ct_bytes]

        # Frames, rendered images and WADO-URI read the same archived objects: 503 too.
        web = pydicom.dcmread(io.BytesIO(web_bytes))
        instance_url = (
            f"{base_url}/dicomweb/studies/{web_study}/series/{web.SeriesInstanceUID}/instances/{web.SOPInstanceUID}"
        )
        frame = requests.get(
            f"{instance_url}/frames/1",
            headers={"Accept": 'multipart/related; type="application/octet-stream"'},
            timeout=REQUEST_TIMEOUT,
        )
        assert frame.status_code == 503, frame.text[:300]
        assert frame.headers["Retry-After"] == str(RETRY_AFTER_SECONDS)
        assert frame.headers["Content-Type"].startswith("application/problem+json")
        rendered = requests.get(f"{instance_url}/rendered", timeout=REQUEST_TIMEOUT)
        assert rendered.status_code == 200, rendered.text[:300]
        assert rendered.headers["Content-Type"].startswith("image/jpeg")
        frame = requests.get(
            f"{instance_url}/frames/1",
            headers={"Accept": 'multipart/related; type="application/octet-stream"'},
            timeout=REQUEST_TIMEOUT,
        )
        assert frame.status_code == 200, frame.text[:300]

        # DIMSE C-GET: refused with 0xA702 (out of resources) while restoring, then served.
        host, port = server.dimse_addr
        received: list[bytes] = []

        def on_store(event) -> int:
            received.append(bytes(event.request.DataSet.getvalue()))
            return 0x0000

        ae = AE(ae_title="WORKSTATION")
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
        ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
        query = Dataset()
        query.QueryRetrieveLevel = "STUDY"
        query.StudyInstanceUID = dimse_study
        statuses = []
        for _attempt in range(2):
            association = ae.associate(
                host,
                port,
                ae_title="STRATA",
                ext_neg=[build_role(CTImageStorage, scp_role=True)],
                evt_handlers=[(evt.EVT_C_STORE, on_store)],
            )
            assert association.is_established
            responses = list(association.send_c_get(query, StudyRootQueryRetrieveInformationModelGet))
            association.release()
            statuses.append(responses[-1][0].Status)
        assert statuses == [0xA702, 0x0000], [hex(status) for status in statuses]
        assert len(received) == 1

        # The prefetch API answers for a restored study.
        prefetch = requests.post(f"{base_url}/api/studies/{ct_study}/restore", timeout=REQUEST_TIMEOUT)
        assert prefetch.status_code in (200, 202), prefetch.text[:300]
        assert prefetch.json()["num_objects"] == 1
        missing = requests.post(f"{base_url}/api/studies/1.2.3.999/restore", timeout=REQUEST_TIMEOUT)
        assert missing.status_code == 404

        # A flipped byte on cold is found by a deep fixity pass and listed.
        damaged = bytearray(cold_files[0].read_bytes())
        damaged[200] ^= 0x01
        cold_files[0].write_bytes(bytes(damaged))
        fixity = requests.post(f"{base_url}/api/tiering/fixity?deep=true", timeout=REQUEST_TIMEOUT)
        assert fixity.status_code == 200, fixity.text[:300]
        report = fixity.json()
        assert report["num_checked"] == 4
        assert [failure["status"] for failure in report["failures"]] == ["mismatch"]
        assert report["failures"][0]["tier"] == "cold"
        listed = requests.get(f"{base_url}/api/tiering/fixity", timeout=REQUEST_TIMEOUT).json()
        assert len(listed) == 1

        # The same through /metrics: the mismatch counted, objects per tier measured by the scans.
        def metric(name: str, label: str) -> float | None:
            text = requests.get(f"{base_url}/metrics", timeout=REQUEST_TIMEOUT).text
            for line in text.splitlines():
                if line.startswith(name + "{") and label in line:
                    return float(line.rsplit(" ", 1)[1])
            return None

        assert metric("strata_fixity_checks_total", 'outcome="mismatch"') == 1
        deadline = time.monotonic() + 10
        while metric("strata_tier_objects", 'tier="archive"') != 3:
            assert time.monotonic() < deadline, "strata_tier_objects{tier=archive} never reached 3"
            time.sleep(0.2)
        assert metric("strata_tier_objects", 'tier="cold"') == 1

        # The CLI sees the same state (it opens the catalog and stores itself).
        cli = run_cli(strata_bin, data_dir, env, "tier", "status")
        assert cli.returncode == 0, cli.stderr[-2000:]
        cli_counts = {tier["name"]: tier["num_objects"] for tier in json.loads(cli.stdout)["tiers"]}
        assert cli_counts["cold"] == 1 and cli_counts["archive"] == 3
        dry_run = run_cli(strata_bin, data_dir, env, "tier", "apply", "--dry-run")
        assert dry_run.returncode == 0, dry_run.stderr[-2000:]
        assert json.loads(dry_run.stdout)["num_planned"] == 0
        fixity_cli = run_cli(strata_bin, data_dir, env, "fixity", "check")
        assert fixity_cli.returncode == 1, fixity_cli.stdout[-2000:]
        assert json.loads(fixity_cli.stdout)["failures"][0]["status"] == "mismatch"
    finally:
        server.stop()
        if resources.cleanup is not None:
            resources.cleanup()


def run_cli(strata_bin: Path, data_dir: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    """Runs `strata ARGS --data-dir DATA_DIR` (the admin CLI opens the catalog and stores itself)."""
    return subprocess.run(
        [str(strata_bin), *args, "--data-dir", str(data_dir)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def pending_moves_offline(strata_bin: Path, data_dir: Path, env: dict[str, str]) -> int:
    """The journal rows left behind, read by the CLI while no server runs."""
    status = run_cli(strata_bin, data_dir, env, "tier", "status")
    status.check_returncode()
    return json.loads(status.stdout)["num_pending_moves"]


def test_killed_mid_moves_then_restarted_loses_nothing(strata_bin: Path, backend, tmp_path: Path) -> None:
    """SIGKILL while objects move hot → cold, until a kill leaves moves in the journal; each
    restart finishes or rolls them back: no object on two tiers, every instance retrievable
    byte for byte."""
    num_instances = 48
    cold_dir = tmp_path / "cold"
    config_path = tmp_path / "strata.toml"
    config_path.write_text(
        f"""
[tiering]
enabled = true
poll_interval_ms = 100
scan_interval_seconds = 1
move_concurrency = 4

[tiering.tiers.cold]
uri = "file://{cold_dir}"

[[tiering.rules]]
name = "all-cold"
tier = "cold"
""",
        encoding="utf-8",
    )
    resources = backend.provision("tiering_kill")
    env = dict(resources.env)
    env["STRATA_CONFIG"] = str(config_path)
    # Every process reads and writes only this archive; the rules stay off while storing.
    data_dir = tmp_path / "data"
    study = generate_uid()
    # 512 KiB each, so that a move (copy, read back, fsyncs) lasts long enough to be killed in.
    sent = [synthetic_image(MRImageStorage, "MR", study, seed, size=512) for seed in range(num_instances)]
    servers: list[StrataServer] = []
    interrupted_kills = 0
    try:
        for attempt in range(6):
            server = StrataServer(strata_bin, data_dir, env, f"tiering-kill-{attempt}")
            servers.append(server)
            server.start(timeout_seconds=60)
            if attempt == 0:
                for first in range(0, num_instances, 8):
                    body, content_type = e2e_support.encode_multipart_related(sent[first : first + 8])
                    stored = requests.post(
                        f"{server.base_url}/dicomweb/studies",
                        data=body,
                        headers={"Content-Type": content_type, "Accept": "application/dicom+json"},
                        timeout=REQUEST_TIMEOUT,
                    )
                    assert stored.status_code == 200, stored.text[:300]
            before = tier_counts(server.base_url).get("cold", 0)
            if before == num_instances:
                server.stop()
                break
            deadline = time.monotonic() + 30
            while tier_counts(server.base_url).get("cold", 0) == before:
                assert time.monotonic() < deadline, "no move observed"
                time.sleep(0.01)
            server.process.kill()
            server.process.wait(timeout=10)
            if pending_moves_offline(strata_bin, data_dir, env) > 0:
                interrupted_kills += 1
        assert interrupted_kills >= 1, "no kill landed in the middle of a move"

        final = StrataServer(strata_bin, data_dir, env, "tiering-kill-final")
        servers.append(final)
        final.start(timeout_seconds=60)
        deadline = time.monotonic() + 60
        while True:
            status = requests.get(f"{final.base_url}/api/tiering/status", timeout=REQUEST_TIMEOUT).json()
            counts = {tier["name"]: tier["num_objects"] for tier in status["tiers"]}
            if counts.get("cold") == num_instances and status["num_pending_moves"] == 0:
                break
            assert time.monotonic() < deadline, f"moves not finished: {status}"
            time.sleep(0.2)
        # One copy each: all on cold, none left on hot (embedded backend: a local directory).
        assert len(list(cold_dir.rglob("*.dcm"))) == num_instances
        hot_dir = data_dir / "objects"
        if hot_dir.is_dir():
            assert list(hot_dir.rglob("*.dcm")) == []
        response = retrieve(final.base_url, study)
        assert response.status_code == 200, response.text[:300]
        parts = e2e_support.decode_multipart_related(response.headers["Content-Type"], response.content)
        assert sorted(part.content for part in parts) == sorted(sent)
    finally:
        for server in servers:
            server.stop()
        if resources.cleanup is not None:
            resources.cleanup()
