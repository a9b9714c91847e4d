"""Strata as separate role processes (issue 7): ingest, gateway (two replicas), search and
tiering as their own `strata serve --roles ...` processes against one PostgreSQL catalog and
one S3 bucket, after one `strata migrate`.

- every route is served by its role and refused, with the role named, elsewhere;
- instances stored through ingest (STOW-RS and DIMSE C-STORE) are read through both gateways
  (QIDO-RS, WADO-RS byte for byte, FHIR), and found through the search API that a gateway
  forwards to the search process;
- one gateway and one ingest process are stopped (SIGTERM) in the middle of a load: no
  acknowledged instance is lost and no request hangs;
- the search process killed (SIGKILL) in the middle of its catch-up, then restarted, ends with
  every study indexed exactly once.

Runs on the postgres-s3 backend only: roles share nothing but the catalog and the store.
"""

from __future__ import annotations

import concurrent.futures
import io
import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
import pytest
import requests
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage, StudyRootQueryRetrieveInformationModelFind

import e2e_support
from e2e_support import StrataServer

pytestmark = pytest.mark.skipif(
    os.environ.get("STRATA_E2E_BACKEND", "embedded") != "postgres-s3",
    reason="role processes share a PostgreSQL catalog and an S3 store (STRATA_E2E_BACKEND=postgres-s3)",
)

REQUEST_TIMEOUT = 30  # seconds; a request that takes longer counts as hanging
STOW_TYPE = 'multipart/related; type="application/dicom"'


def synthetic_ct(study_uid: str, series_uid: str, number: int) -> bytes:
    return e2e_support.synthetic_ct(
        study_uid,
        series_uid,
        number,
        PatientName="ROLES^TEST",
        PatientID="ROLES-1",
        StudyDescription="CT thorax roles test",
        AccessionNumber="ACC" + study_uid[-6:],
    )


def sop_uid_of(data: bytes) -> str:
    return str(e2e_support.read_file_meta(data).MediaStorageSOPInstanceUID)


def stow(base_url: str, parts: list[bytes]) -> requests.Response:
    body, content_type = e2e_support.encode_multipart_related(parts)
    return requests.post(
        f"{base_url}/dicomweb/studies",
        data=body,
        headers={"Content-Type": content_type, "Accept": "application/dicom+json"},
        timeout=REQUEST_TIMEOUT,
    )


def wado_instance(base_url: str, study: str, series: str, sop: str) -> bytes:
    response = e2e_support.wado_get(base_url, f"studies/{study}/series/{series}/instances/{sop}")
    assert response.status_code == 200, response.text[:300]
    parts = e2e_support.decode_multipart_related(response.headers["Content-Type"], response.content)
    assert len(parts) == 1
    return parts[0].content


@dataclass
class Cluster:
    binary: Path
    root: Path
    env: dict[str, str]
    servers: list[StrataServer] = field(default_factory=list)

    def start(self, label: str, roles: str, extra_env: dict[str, str] | None = None) -> StrataServer:
        env = dict(self.env)
        env.update(extra_env or {})
        server = StrataServer(self.binary, self.root / label, env, label, extra_args=["--roles", roles])
        self.servers.append(server)
        server.start(timeout_seconds=60)
        return server

    def stop_all(self) -> None:
        for server in self.servers:
            server.stop()


@pytest.fixture
def cluster(strata_bin: Path, backend, tmp_path: Path):
    resources = backend.provision("roles")
    env = dict(resources.env)
    migrate = subprocess.run(
        [str(strata_bin), "migrate", "--data-dir", str(tmp_path / "migrate")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert migrate.returncode == 0, migrate.stdout + migrate.stderr
    # Serving processes never migrate: only `strata migrate` does (a Helm pre-upgrade Job).
    env["STRATA__CATALOG__AUTO_MIGRATE"] = "false"
    env["STRATA__SEARCH__POLL_INTERVAL_MS"] = "100"
    env["STRATA__DRAIN_TIMEOUT_SECONDS"] = "10"
    result = Cluster(binary=strata_bin, root=tmp_path, env=env)
    yield result
    crashed = [server for server in result.servers if server.has_crashed()]
    result.stop_all()
    if resources.cleanup is not None:
        resources.cleanup()
    if crashed:
        pytest.fail("\n\n".join(server.log_tail() for server in crashed), pytrace=False)


def test_serving_refuses_an_unmigrated_catalog(strata_bin: Path, backend, tmp_path: Path) -> None:
    resources = backend.provision("unmigrated")
    try:
        env = dict(resources.env, STRATA__CATALOG__AUTO_MIGRATE="false")
        completed = subprocess.run(
            [
                str(strata_bin),
                "serve",
                "--roles",
                "gateway",
                "--data-dir",
                str(tmp_path / "d"),
                "--http-addr",
                "127.0.0.1:0",
                "--dimse-addr",
                "127.0.0.1:0",
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert completed.returncode != 0
        assert "strata migrate" in completed.stderr, completed.stderr
    finally:
        if resources.cleanup is not None:
            resources.cleanup()


def test_roles_in_separate_processes_share_catalog_and_store(cluster: Cluster) -> None:
    search = cluster.start("search", "search")
    ingest = cluster.start("ingest", "ingest")
    gateways = [cluster.start(f"gateway{i}", "gateway", {"STRATA__SEARCH__URL": search.base_url}) for i in (1, 2)]
    tiering = cluster.start("tiering", "tiering")
    for server in [search, ingest, *gateways, tiering]:
        assert requests.get(f"{server.base_url}/readyz", timeout=10).status_code == 200, server.label

    # STOW-RS through ingest.
    study, series = generate_uid(), generate_uid()
    stowed = [synthetic_ct(study, series, number) for number in range(1, 6)]
    response = stow(ingest.base_url, stowed)
    assert response.status_code == 200, response.text[:500]

    # DIMSE C-STORE through ingest's listener (pynetdicom as the modality).
    dimse_instances = [synthetic_ct(study, series, number) for number in range(6, 9)]
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    host, port = ingest.dimse_addr
    association = ae.associate(host, port, ae_title="STRATA")
    assert association.is_established
    for data in dimse_instances:
        status = association.send_c_store(pydicom.dcmread(io.BytesIO(data)))
        assert status.Status == 0x0000
    # The ingest role does not offer the Query/Retrieve models.
    find_contexts = [
        context
        for context in association.accepted_contexts
        if context.abstract_syntax == StudyRootQueryRetrieveInformationModelFind
    ]
    assert find_contexts == []
    association.release()

    # The gateway stores nothing over DIMSE: 0122 with a comment naming the role.
    host, port = gateways[0].dimse_addr
    association = ae.associate(host, port, ae_title="STRATA")
    assert association.is_established
    status = association.send_c_store(pydicom.dcmread(io.BytesIO(synthetic_ct(study, series, 99))))
    assert status.Status == 0x0122
    association.release()

    # Routes of another role are refused with the role named.
    refused = stow(gateways[0].base_url, [synthetic_ct(study, series, 100)])
    assert refused.status_code == 404
    assert "`ingest` role" in refused.json()["detail"]
    refused = requests.get(f"{ingest.base_url}/dicomweb/studies", timeout=10)
    assert refused.status_code == 404
    assert "`gateway` role" in refused.json()["detail"]
    assert requests.get(f"{ingest.base_url}/api/search", params={"q": "x"}, timeout=10).status_code == 404

    # Both gateways read everything that ingest acknowledged, byte for byte.
    everything = stowed + dimse_instances
    for gateway in gateways:
        found = requests.get(f"{gateway.base_url}/dicomweb/studies/{study}/instances", timeout=REQUEST_TIMEOUT)
        assert found.status_code == 200
        assert len(found.json()) == len(everything)
        for data in stowed:
            assert wado_instance(gateway.base_url, study, series, sop_uid_of(data)) == data
        # C-STORE carries no file meta: Strata writes its own; the data set is unaltered.
        for data in dimse_instances:
            served = wado_instance(gateway.base_url, study, series, sop_uid_of(data))
            assert served[e2e_support.dataset_offset(served) :] == data[e2e_support.dataset_offset(data) :]
        fhir = requests.get(f"{gateway.base_url}/fhir/ImagingStudy/{study}", timeout=REQUEST_TIMEOUT)
        assert fhir.status_code == 200
        assert fhir.json()["numberOfInstances"] == len(everything)

    # The search process indexes from the shared event log; a gateway forwards /api/search.
    deadline = time.monotonic() + 30
    while True:
        answer = requests.get(
            f"{gateways[1].base_url}/api/search", params={"q": "thorax roles"}, timeout=REQUEST_TIMEOUT
        )
        assert answer.status_code == 200, answer.text[:300]
        hits = answer.json()["hits"]
        if hits and hits[0]["num_instances"] == len(everything):
            break
        assert time.monotonic() < deadline, f"search did not reflect the study: {answer.json()}"
        time.sleep(0.2)
    assert [hit["study_instance_uid"] for hit in hits] == [study]
    assert hits[0]["fhir_url"].endswith(f"/ImagingStudy/{study}")
    # A bad parameter is the search process's 400, passed through with its reason.
    bad = requests.get(f"{gateways[0].base_url}/api/search", params={"limit": "0"}, timeout=10)
    assert bad.status_code == 400
    assert "limit" in bad.json()["detail"]


def test_stopping_a_gateway_and_an_ingest_mid_load_loses_nothing(cluster: Cluster) -> None:
    ingests = [cluster.start(f"ingest{i}", "ingest") for i in (1, 2)]
    gateways = [cluster.start(f"gateway{i}", "gateway") for i in (1, 2)]
    study, series = generate_uid(), generate_uid()
    acknowledged: dict[str, bytes] = {}
    failures: list[str] = []
    lock = threading.Lock()
    stop_loading = threading.Event()

    def store_loop(worker: int) -> int:
        number = worker * 100_000
        sent = 0
        while not stop_loading.is_set():
            number += 1
            data = synthetic_ct(study, series, number)
            target = ingests[number % 2]
            try:
                response = stow(target.base_url, [data])
            except requests.Timeout:
                with lock:
                    failures.append(f"STOW to {target.label} hung for {REQUEST_TIMEOUT} s")
                continue
            except requests.ConnectionError:
                continue  # the process is gone: not acknowledged, nothing promised
            sent += 1
            if response.status_code == 200:
                result = e2e_support.parse_stow_response(response, "POST")
                if sop_uid_of(data) in result.referenced_sop_instance_uids:
                    with lock:
                        acknowledged[sop_uid_of(data)] = data
        return sent

    def read_loop() -> int:
        reads = 0
        while not stop_loading.is_set():
            gateway = gateways[reads % 2]
            reads += 1
            try:
                response = requests.get(
                    f"{gateway.base_url}/dicomweb/studies",
                    params={"StudyInstanceUID": study},
                    timeout=REQUEST_TIMEOUT,
                )
            except requests.Timeout:
                with lock:
                    failures.append(f"QIDO to {gateway.label} hung for {REQUEST_TIMEOUT} s")
                continue
            except requests.ConnectionError:
                continue
            if response.status_code not in (200, 204):
                with lock:
                    failures.append(f"QIDO to {gateway.label} answered {response.status_code}")
        return reads

    with concurrent.futures.ThreadPoolExecutor(max_workers=6) as pool:
        stores = [pool.submit(store_loop, worker) for worker in range(4)]
        reads = [pool.submit(read_loop) for _ in range(2)]
        time.sleep(3)
        with lock:
            acknowledged_before_stop = len(acknowledged)
        # SIGTERM: stop accepting, finish in-flight requests, exit within the drain timeout.
        exit_codes = [ingests[0].stop(timeout_seconds=20), gateways[0].stop(timeout_seconds=20)]
        time.sleep(3)
        stop_loading.set()
        num_sent = sum(future.result(timeout=2 * REQUEST_TIMEOUT) for future in stores)
        num_reads = sum(future.result(timeout=2 * REQUEST_TIMEOUT) for future in reads)

    assert exit_codes == [0, 0], "a stopped process must drain and exit cleanly"
    assert failures == []
    assert acknowledged_before_stop > 0 and num_reads > 0
    assert len(acknowledged) > acknowledged_before_stop, "the surviving ingest kept acknowledging"
    # Every acknowledged instance is in the catalog and the store, byte for byte.
    survivor = gateways[1]
    listed = requests.get(f"{survivor.base_url}/dicomweb/studies/{study}/instances", timeout=60)
    assert listed.status_code == 200
    listed_uids = {item["00080018"]["Value"][0] for item in listed.json()}
    missing = set(acknowledged) - listed_uids
    assert not missing, f"{len(missing)} acknowledged instances are missing"
    for sop_uid, data in acknowledged.items():
        assert wado_instance(survivor.base_url, study, series, sop_uid) == data
    print(f"sent {num_sent} STOW requests, {len(acknowledged)} acknowledged, {num_reads} QIDO reads")


def test_search_process_killed_mid_catch_up_loses_and_duplicates_nothing(cluster: Cluster) -> None:
    ingest = cluster.start("ingest", "ingest")
    num_studies, per_study = 150, 20
    studies = []
    for _ in range(num_studies):
        study, series = generate_uid(), generate_uid()
        parts = [synthetic_ct(study, series, number) for number in range(1, per_study + 1)]
        response = stow(ingest.base_url, parts)
        assert response.status_code == 200, response.text[:300]
        studies.append(study)

    # A search process with a backlog of 3,000 events (three batches of the log), committing often: kill it mid-way.
    search_env = {"STRATA__SEARCH__COMMIT_INTERVAL_MS": "50"}
    search = cluster.start("search", "search", search_env)
    events_total = num_studies * per_study
    seen_partial = None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        answer = requests.get(f"{search.base_url}/api/search", params={"limit": 1}, timeout=10).json()
        if 0 < answer["total"] < num_studies:
            seen_partial = answer["indexed_sequence"]
            break
        if answer["total"] == num_studies:
            break
        time.sleep(0.01)
    search.process.send_signal(signal.SIGKILL)
    search.process.wait(timeout=10)
    search.stopped_by_harness = True

    restarted = StrataServer(
        cluster.binary,
        search.data_dir,
        dict(cluster.env, **search_env),
        "search-restarted",
        extra_args=["--roles", "search"],
    )
    cluster.servers.append(restarted)
    restarted.start(timeout_seconds=60)
    deadline = time.monotonic() + 60
    while True:
        answer = requests.get(
            f"{restarted.base_url}/api/search", params={"limit": 200, "q": "roles"}, timeout=10
        ).json()
        if answer["total"] == num_studies and all(hit["num_instances"] == per_study for hit in answer["hits"]):
            break
        assert time.monotonic() < deadline, f"index incomplete after restart: total {answer['total']}"
        time.sleep(0.2)
    uids = [hit["study_instance_uid"] for hit in answer["hits"]]
    assert sorted(uids) == sorted(studies), "every study exactly once"
    assert answer["indexed_sequence"] >= events_total
    print(f"killed with the index at event {seen_partial} of {events_total}")
    assert seen_partial is not None, "the kill did not land mid-way (the catch-up finished first)"


def test_a_gateway_forwards_the_callers_token_to_the_search_process(cluster: Cluster) -> None:
    """With auth.tokens_file on every process (one Secret), a gateway forwards the caller's
    bearer token with the search it hands to the search process, which checks it again."""
    made = subprocess.run(
        [str(cluster.binary), "token", "new", "--name", "viewer", "--scopes", "read"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    token = made.split("token: ", 1)[1].split()[0]
    line = made.split("tokens-file line: ", 1)[1].strip()
    tokens_file = cluster.root / "tokens"
    tokens_file.write_text(line + "\n", encoding="utf-8")
    auth = {"STRATA__AUTH__TOKENS_FILE": str(tokens_file)}
    search = cluster.start("search", "search", auth)
    gateway = cluster.start("gateway", "gateway", {**auth, "STRATA__SEARCH__URL": search.base_url})
    with_token = {"Authorization": f"Bearer {token}"}
    url = f"{gateway.base_url}/api/search"
    assert requests.get(url, params={"q": "x"}, timeout=10).status_code == 401
    assert requests.get(f"{search.base_url}/api/search", params={"q": "x"}, timeout=10).status_code == 401
    answer = requests.get(url, params={"q": "x"}, headers=with_token, timeout=REQUEST_TIMEOUT)
    assert answer.status_code == 200, answer.text[:300]
    assert answer.json()["hits"] == []
