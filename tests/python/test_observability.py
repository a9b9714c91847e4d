"""Observability of the real binary (issue 7): Prometheus `/metrics`, JSON logs that carry the
trace id of an incoming W3C `traceparent`, and no patient identifier in any log line.

The span tree itself (one connected trace across HTTP, ingest, storage and catalog, exported
over OTLP) is asserted in `crates/strata-telemetry/tests/stow_trace.rs` with an in-process
OTLP receiver.
"""

from __future__ import annotations

import json
import re
import secrets
import time
from pathlib import Path

import pytest
import requests

import e2e_support
from conftest import base_child_env

PATIENT_NAME = "Geheimnis^Henriette"
PATIENT_ID = "PRIVATE-4711"


def planted_instance() -> bytes:
    return e2e_support.synthetic_ct(PatientName=PATIENT_NAME, PatientID=PATIENT_ID, PatientBirthDate="19450312")


@pytest.fixture
def json_logging_server(strata_bin: Path, tmp_path: Path, backend):
    if backend.name != "embedded":
        pytest.skip("telemetry does not depend on the backend: run once, on the embedded one")
    env = base_child_env()
    env["STRATA_LOG"] = "debug"  # the most verbose level must not leak either
    server = e2e_support.StrataServer(strata_bin, tmp_path / "data", env, "otel", extra_args=["--log-format", "json"])
    server.start(timeout_seconds=60)
    try:
        yield server
    finally:
        server.stop()


def metric_value(text: str, name: str, labels: dict[str, str]) -> float | None:
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        if all(f'{key}="{value}"' in line for key, value in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


def test_metrics_json_logs_and_trace_ids(json_logging_server) -> None:
    server = json_logging_server
    trace_id = secrets.token_hex(16)
    traceparent = f"00-{trace_id}-{secrets.token_hex(8)}-01"
    body, content_type = e2e_support.encode_multipart_related([planted_instance()])
    response = requests.post(
        f"{server.base_url}/dicomweb/studies",
        data=body,
        headers={"Content-Type": content_type, "Accept": "application/dicom+json", "traceparent": traceparent},
        timeout=60,
    )
    assert response.status_code == 200, response.text[:300]
    # A QIDO-RS query that names the patient: the query string must not reach logs or spans.
    found = requests.get(
        f"{server.base_url}/dicomweb/studies", params={"PatientName": PATIENT_NAME, "PatientID": PATIENT_ID}, timeout=30
    )
    assert found.status_code == 200 and len(found.json()) == 1

    metrics = requests.get(f"{server.base_url}/metrics", timeout=30)
    assert metrics.status_code == 200
    assert metrics.headers["Content-Type"].startswith("text/plain")
    text = metrics.text
    stored = metric_value(text, "strata_ingest_instances_total", {"outcome": "stored"})
    assert stored == 1.0, [line for line in text.splitlines() if "ingest" in line]
    assert metric_value(text, "strata_http_request_duration_seconds_count", {"route": "/dicomweb/studies"})
    assert PATIENT_NAME.split("^")[0] not in text and PATIENT_ID not in text

    time.sleep(0.5)  # the log reader thread catches up
    lines = server.log_text().splitlines()
    records = []
    for line in lines:
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            pytest.fail(f"a log line is not JSON: {line[:200]}")
    assert records, "no log lines"
    traced = [record for record in records if record.get("trace_id") == trace_id]
    assert traced, "no log line carries the trace id of the incoming traceparent"
    log_text = "\n".join(lines)
    for secret in (PATIENT_NAME, PATIENT_NAME.split("^")[0], PATIENT_ID, "19450312"):
        assert secret not in log_text, f"a log line contains patient data ({secret!r})"
    assert re.search(r'"level"\s*:', log_text)
