"""Fixtures for the black-box DICOMweb tests: start `strata serve` on a free port
with an embedded (SQLite + local dir) or a PostgreSQL + S3 backend.

Environment:
  STRATA_BIN            the strata binary (default $CARGO_TARGET_DIR/debug/strata,
                        else <repo>/target/debug/strata)
  STRATA_CORPUS_DIR     the shared corpus (default <repo>/../shared/corpus)
  STRATA_E2E_BACKEND    `embedded` (default) or `postgres-s3`; the latter reads
                        STRATA_TEST_POSTGRES_URI (a role with CREATEDB) and
                        STRATA_TEST_S3_{ENDPOINT,BUCKET,ACCESS_KEY_ID,SECRET_ACCESS_KEY,REGION}
  STRATA_E2E_STARTUP_TIMEOUT  seconds to wait for `node ready` (default 60)
  STRATA_E2E_KEEP_DATA  set to 1 to keep the per-archive databases
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import urllib.parse
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

import e2e_support
from e2e_support import Archive, ArchiveFactory, ArchiveResources, StrataServer

BACKENDS = ("embedded", "postgres-s3")
S3_ENV_VARS = (
    "STRATA_TEST_S3_ENDPOINT",
    "STRATA_TEST_S3_BUCKET",
    "STRATA_TEST_S3_ACCESS_KEY_ID",
    "STRATA_TEST_S3_SECRET_ACCESS_KEY",
    "STRATA_TEST_S3_REGION",
)


def pytest_configure(config: pytest.Config) -> None:
    # `timeout` and CI stop pytest with SIGTERM; turning it into KeyboardInterrupt
    # lets pytest run the fixture finalizers that stop the servers.
    def interrupt(signal_number: int, _frame) -> None:
        raise KeyboardInterrupt(f"received signal {signal_number}")

    signal.signal(signal.SIGTERM, interrupt)


def pytest_report_header(config: pytest.Config) -> list[str]:
    return [
        f"strata backend: {os.environ.get('STRATA_E2E_BACKEND', 'embedded')}",
        f"strata binary: {default_strata_bin()}",
        f"corpus: {e2e_support.corpus_dir()}",
    ]


def default_strata_bin() -> Path:
    configured = os.environ.get("STRATA_BIN")
    if configured:
        return Path(configured)
    target_dir = os.environ.get("CARGO_TARGET_DIR")
    if target_dir:
        return Path(target_dir) / "debug" / "strata"
    return e2e_support.REPO_ROOT / "target" / "debug" / "strata"


# --------------------------------------------------------------- backends


def _psql(database_uri: str, sql: str) -> str:
    completed = subprocess.run(
        ["psql", "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", database_uri, "-c", sql],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"psql failed ({completed.returncode}) running {sql!r}: {completed.stderr.strip()}")
    return completed.stdout


def _with_database(postgres_uri: str, database_name: str) -> str:
    parsed = urllib.parse.urlsplit(postgres_uri)
    return urllib.parse.urlunsplit(parsed._replace(path=f"/{database_name}"))


class Backend:
    """Builds the environment of one `strata serve` process."""

    name = "embedded"

    def provision(self, label: str) -> ArchiveResources:
        # The data dir given on the command line holds the SQLite catalog and the objects.
        return ArchiveResources(env=base_child_env())


class PostgresS3Backend(Backend):
    name = "postgres-s3"

    def __init__(self) -> None:
        missing = [name for name in ("STRATA_TEST_POSTGRES_URI", *S3_ENV_VARS) if not os.environ.get(name)]
        if missing:
            raise pytest.UsageError(f"STRATA_E2E_BACKEND=postgres-s3 needs {', '.join(missing)}")
        self.postgres_uri = os.environ["STRATA_TEST_POSTGRES_URI"]
        self.s3_endpoint = os.environ["STRATA_TEST_S3_ENDPOINT"]
        self.s3_bucket = os.environ["STRATA_TEST_S3_BUCKET"]
        self.s3_region = os.environ["STRATA_TEST_S3_REGION"]
        self.s3_access_key_id = os.environ["STRATA_TEST_S3_ACCESS_KEY_ID"]
        self.s3_secret_access_key = os.environ["STRATA_TEST_S3_SECRET_ACCESS_KEY"]
        self.run_id = uuid.uuid4().hex[:8]

    def provision(self, label: str) -> ArchiveResources:
        safe_label = re.sub(r"[^a-z0-9_]", "_", label.lower())[:30]
        database_name = f"strata_e2e_{self.run_id}_{safe_label}_{uuid.uuid4().hex[:6]}"
        _psql(self.postgres_uri, f'CREATE DATABASE "{database_name}"')
        catalog_uri = _with_database(self.postgres_uri, database_name)
        s3_prefix = f"e2e/{self.run_id}/{safe_label}-{uuid.uuid4().hex[:6]}"
        env = base_child_env()
        env.update(
            {
                "STRATA__CATALOG__URI": catalog_uri,
                "STRATA__STORAGE__URI": f"s3://{self.s3_bucket}/{s3_prefix}",
                "STRATA__STORAGE__S3__ENDPOINT": self.s3_endpoint,
                "STRATA__STORAGE__S3__REGION": self.s3_region,
                "STRATA__STORAGE__S3__ACCESS_KEY_ID": self.s3_access_key_id,
                "STRATA__STORAGE__S3__SECRET_ACCESS_KEY": self.s3_secret_access_key,
                "STRATA__STORAGE__S3__PATH_STYLE": "true",
            }
        )
        if self.s3_endpoint.startswith("http://"):
            env["STRATA__STORAGE__S3__ALLOW_HTTP"] = "true"

        def cleanup() -> None:
            if os.environ.get("STRATA_E2E_KEEP_DATA") == "1":
                return
            _psql(self.postgres_uri, f'DROP DATABASE IF EXISTS "{database_name}" WITH (FORCE)')

        return ArchiveResources(env=env, catalog_uri=catalog_uri, s3_prefix=s3_prefix, cleanup=cleanup)

    def s3_client(self):
        """Returns a boto3 S3 client for the test bucket."""
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.s3_endpoint,
            region_name=self.s3_region,
            aws_access_key_id=self.s3_access_key_id,
            aws_secret_access_key=self.s3_secret_access_key,
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 2}),
        )


def base_child_env() -> dict[str, str]:
    """The parent environment without STRATA__* (a developer's own configuration
    must not leak into the archive under test), with plain-text logs."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("STRATA__")}
    env.setdefault("RUST_LOG", "info")
    env["NO_COLOR"] = "1"
    env.setdefault("RUST_BACKTRACE", "1")
    return env


@pytest.fixture(scope="session")
def backend() -> Backend:
    name = os.environ.get("STRATA_E2E_BACKEND", "embedded")
    if name == "embedded":
        return Backend()
    if name == "postgres-s3":
        return PostgresS3Backend()
    raise pytest.UsageError(f"STRATA_E2E_BACKEND={name!r}: expected one of {', '.join(BACKENDS)}")


# ---------------------------------------------------------------- servers


@pytest.fixture(scope="session")
def strata_bin() -> Path:
    binary = default_strata_bin()
    if not (binary.is_file() and os.access(binary, os.X_OK)):
        pytest.fail(
            f"strata binary not found at {binary}: run `cargo build -p strata-cli` or set STRATA_BIN",
            pytrace=False,
        )
    return binary


@pytest.fixture(scope="session")
def start_archive(
    strata_bin: Path, backend: Backend, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ArchiveFactory]:
    """Returns a function that starts a new, empty archive; all are stopped at session end."""
    started: list[Archive] = []
    startup_timeout = float(os.environ.get("STRATA_E2E_STARTUP_TIMEOUT", "60"))

    def start(label: str) -> Archive:
        resources = backend.provision(label)
        data_dir = tmp_path_factory.mktemp(f"archive-{label}") / "data"
        server = StrataServer(strata_bin, data_dir, resources.env, label)
        archive = Archive(server=server, resources=resources, backend=backend)
        start_error = None
        try:
            server.start(timeout_seconds=startup_timeout)
        except e2e_support.ServerStartError as error:
            start_error = str(error)
        if start_error is not None:
            server.stop()
            if resources.cleanup is not None:
                resources.cleanup()
            pytest.fail(start_error, pytrace=False)
        started.append(archive)
        return archive

    yield start

    crashed = []
    for archive in started:
        if archive.server.has_crashed():
            crashed.append(archive)
        archive.server.stop()
        if archive.resources.cleanup is not None:
            try:
                archive.resources.cleanup()
            except Exception as error:  # noqa: BLE001 - cleanup is best effort
                print(f"cleanup of archive {archive.server.label} failed: {error}")
    if crashed:
        details = "\n\n".join(archive.server.log_tail() for archive in crashed)
        pytest.fail(f"strata exited while tests were still using it:\n{details}", pytrace=False)


@pytest.fixture
def fresh_archive(start_archive: ArchiveFactory, request: pytest.FixtureRequest) -> Iterator[Archive]:
    """A new, empty archive for one test, stopped after it."""
    label = re.sub(r"\W+", "_", request.node.name)[:40]
    archive = start_archive(label)
    yield archive
    crashed = archive.server.has_crashed()
    archive.server.stop()
    if crashed:
        pytest.fail(f"strata exited during the test:\n{archive.server.log_tail()}", pytrace=False)


# --------------------------------------------------- failure diagnostics


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    outcome = yield
    report = outcome.get_result()
    if not report.failed:
        return
    seen = set()
    for value in getattr(item, "funcargs", {}).values():
        server = value if isinstance(value, StrataServer) else getattr(value, "server", None)
        if isinstance(server, StrataServer) and id(server) not in seen:
            seen.add(id(server))
            state = "running" if server.is_running() else f"exited with code {server.process.returncode}"
            report.sections.append((f"strata log: {server.label} ({state})", server.log_tail()))
