"""Helpers for the black-box DICOMweb tests: the corpus manifest, a `strata serve`
process, STOW-RS over plain HTTP, multipart parsing and Part 10 byte offsets.

Nothing here talks to pytest; the fixtures in conftest.py wire it together.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import os
import re
import signal
import struct
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pydicom
import requests

REPO_ROOT = Path(__file__).resolve().parents[2]
HTTP_TIMEOUT_SECONDS = 120

# DICOM JSON keys (tags as 8 hex digits) used by the tests.
TAG_FAILED_SOP_SEQUENCE = "00081198"
TAG_REFERENCED_SOP_SEQUENCE = "00081199"
TAG_FAILURE_REASON = "00081197"
TAG_REFERENCED_SOP_INSTANCE_UID = "00081155"
TAG_STUDY_INSTANCE_UID = "0020000D"
TAG_SERIES_INSTANCE_UID = "0020000E"
TAG_SOP_INSTANCE_UID = "00080018"
TAG_MODALITY = "00080060"
TAG_MODALITIES_IN_STUDY = "00080061"
TAG_PATIENT_NAME = "00100010"
TAG_NUMBER_OF_STUDY_RELATED_SERIES = "00201206"
TAG_NUMBER_OF_STUDY_RELATED_INSTANCES = "00201208"
TAG_ROWS = "00280010"
TAG_PIXEL_DATA = "7FE00010"

DICOM_MULTIPART = 'multipart/related; type="application/dicom"'
# `transfer-syntax=*` asks for the stored transfer syntax: without it PS3.18 makes
# Explicit VR Little Endian the default, which would allow transcoding.
DICOM_MULTIPART_ANY_TRANSFER_SYNTAX = 'multipart/related; type="application/dicom"; transfer-syntax=*'


# ------------------------------------------------------------------ corpus


def corpus_dir() -> Path:
    """Returns the shared corpus directory (env STRATA_CORPUS_DIR, else ../shared/corpus)."""
    configured = os.environ.get("STRATA_CORPUS_DIR")
    if configured:
        return Path(configured).resolve()
    return (REPO_ROOT.parent / "shared" / "corpus").resolve()


@dataclasses.dataclass(frozen=True)
class CorpusEntry:
    """One row of MANIFEST.tsv."""

    path: str
    category: str
    expected: str
    sop_instance_uid: str
    study_instance_uid: str
    series_instance_uid: str
    same_instance_group: str
    modality: str
    transfer_syntax_uid: str
    patient_name_decoded: str
    file_meta: str
    root: Path

    @property
    def file_path(self) -> Path:
        return self.root / self.path

    def read_bytes(self) -> bytes:
        return self.file_path.read_bytes()

    @property
    def is_accept(self) -> bool:
        return self.expected.startswith("accept")

    @property
    def has_hierarchy_uids(self) -> bool:
        """Whether the manifest lists Study, Series and SOP Instance UIDs."""
        return bool(self.study_instance_uid and self.series_instance_uid and self.sop_instance_uid)


def load_manifest(root: Path | None = None) -> list[CorpusEntry]:
    """Returns the manifest rows in file order."""
    root = root or corpus_dir()
    with open(root / "MANIFEST.tsv", newline="", encoding="utf-8") as manifest_file:
        rows = list(csv.DictReader(manifest_file, delimiter="\t"))
    group_pattern = re.compile(r"^(G\d+)")
    entries = []
    for row in rows:
        group_match = group_pattern.match(row.get("same_instance_group", "").strip())
        entries.append(
            CorpusEntry(
                path=row["path"],
                category=row["category"],
                expected=row["expected"],
                sop_instance_uid=row["sop_instance_uid"].strip(),
                study_instance_uid=row["study_instance_uid"].strip(),
                series_instance_uid=row["series_instance_uid"].strip(),
                same_instance_group=group_match.group(1) if group_match else "",
                modality=row["modality"].strip(),
                transfer_syntax_uid=row["transfer_syntax_uid"].strip(),
                patient_name_decoded=row["patient_name_decoded"],
                file_meta=row["file_meta"].strip(),
                root=root,
            )
        )
    return entries


def one_per_same_instance_group(entries: Iterable[CorpusEntry]) -> list[CorpusEntry]:
    """Keeps the first entry of each same-instance group (manifest order) and every
    entry outside a group."""
    seen_groups = set()
    kept = []
    for entry in entries:
        if entry.same_instance_group:
            if entry.same_instance_group in seen_groups:
                continue
            seen_groups.add(entry.same_instance_group)
        kept.append(entry)
    return kept


# -------------------------------------------------------- Part 10 structure

_EXPLICIT_VR_WITH_LONG_LENGTH = {
    b"OB",
    b"OD",
    b"OF",
    b"OL",
    b"OV",
    b"OW",
    b"SQ",
    b"SV",
    b"UC",
    b"UN",
    b"UR",
    b"UT",
    b"UV",
}


def has_part10_header(data: bytes) -> bool:
    """Whether the bytes start with the 128-byte preamble and `DICM`."""
    return len(data) >= 132 and data[128:132] == b"DICM"


def dataset_offset(data: bytes) -> int:
    """Returns the offset of the first byte after the File Meta Information group
    (0002,xxxx), walking its elements (always Explicit VR Little Endian) so that a
    missing or wrong group length does not matter. Returns 0 without a Part 10 header."""
    if not has_part10_header(data):
        return 0
    position = 132
    while position + 8 <= len(data):
        group, _element = struct.unpack_from("<HH", data, position)
        if group != 0x0002:
            break
        value_representation = data[position + 4 : position + 6]
        if value_representation in _EXPLICIT_VR_WITH_LONG_LENGTH:
            (value_length,) = struct.unpack_from("<I", data, position + 8)
            position += 12 + value_length
        else:
            (value_length,) = struct.unpack_from("<H", data, position + 6)
            position += 8 + value_length
    return position


def read_file_meta(data: bytes) -> pydicom.Dataset:
    """Returns the File Meta Information of Part 10 bytes."""
    return pydicom.dcmread(io.BytesIO(data[: dataset_offset(data)])).file_meta


def read_dataset(data: bytes) -> pydicom.Dataset:
    """Parses Part 10 bytes, or a bare data set with force=True."""
    return pydicom.dcmread(io.BytesIO(data), force=not has_part10_header(data))


def pydicom_round_trip_is_exact(data: bytes) -> bool:
    """Whether writing the parsed file back with pydicom, as dicomweb-client's
    store_instances does (`pydicom.dcmwrite(buffer, dataset)`), reproduces the
    data set bytes exactly. Only such files are sent through dicomweb-client;
    the others go as raw bytes so the stored bytes are the corpus bytes."""
    if not has_part10_header(data):
        return False
    try:
        dataset = pydicom.dcmread(io.BytesIO(data))
        buffer = io.BytesIO()
        pydicom.dcmwrite(buffer, dataset)
    except Exception:  # noqa: BLE001 - any pydicom failure means "send raw"
        return False
    written = buffer.getvalue()
    return written[dataset_offset(written) :] == data[dataset_offset(data) :]


def datasets_differences(left: pydicom.Dataset, right: pydicom.Dataset, max_items: int = 10) -> list[str]:
    """Lists the top-level elements that differ between two data sets (File Meta excluded)."""
    differences = []
    for tag in sorted(set(left.keys()) | set(right.keys())):
        if tag not in left:
            differences.append(f"{tag} only in the right data set")
        elif tag not in right:
            differences.append(f"{tag} only in the left data set")
        elif left[tag] != right[tag]:
            differences.append(f"{tag} {left[tag].keyword or 'private'} differs")
        if len(differences) >= max_items:
            differences.append("...")
            break
    return differences


# ----------------------------------------------------------- HTTP helpers


def encode_multipart_related(parts: Sequence[bytes], content_type: str = "application/dicom") -> tuple[bytes, str]:
    """Returns (body, Content-Type header) of a multipart/related message."""
    boundary = f"strata-e2e-{uuid.uuid4().hex}"
    chunks = []
    for part in parts:
        chunks.append(f"--{boundary}\r\nContent-Type: {content_type}\r\n\r\n".encode("ascii"))
        chunks.append(part)
        chunks.append(b"\r\n")
    chunks.append(f"--{boundary}--\r\n".encode("ascii"))
    header = f'multipart/related; type="{content_type}"; boundary={boundary}'
    return b"".join(chunks), header


def _content_type_parameter(content_type: str, name: str) -> str | None:
    pattern = re.compile(r";\s*" + re.escape(name) + r'\s*=\s*("([^"]*)"|[^;\s]+)', re.IGNORECASE)
    match = pattern.search(content_type)
    if not match:
        return None
    return match.group(2) if match.group(2) is not None else match.group(1)


@dataclasses.dataclass
class MultipartPart:
    headers: dict[str, str]
    content: bytes


def decode_multipart_related(content_type: str, body: bytes) -> list[MultipartPart]:
    """Splits a multipart/related body into its parts (RFC 2046 framing)."""
    if not content_type.lower().startswith("multipart/related"):
        raise ValueError(f"not a multipart/related response: {content_type!r}")
    boundary = _content_type_parameter(content_type, "boundary")
    if not boundary:
        raise ValueError(f"no boundary in {content_type!r}")
    delimiter = b"\r\n--" + boundary.encode("ascii")
    # Prepend CRLF so that a body starting directly with the first delimiter splits alike.
    segments = (b"\r\n" + body).split(delimiter)
    parts = []
    for segment in segments[1:]:
        if segment.startswith(b"--"):
            break
        header_end = segment.find(b"\r\n\r\n")
        if header_end < 0:
            raise ValueError("multipart part without CRLF CRLF after its headers")
        headers = {}
        for line in segment[:header_end].split(b"\r\n"):
            if b":" in line:
                name, value = line.split(b":", 1)
                headers[name.strip().decode("latin-1").lower()] = value.strip().decode("latin-1")
        parts.append(MultipartPart(headers=headers, content=segment[header_end + 4 :]))
    return parts


@dataclasses.dataclass
class StowResult:
    """What a STOW-RS request returned."""

    status_code: int | None
    body: dict | None
    text: str
    method: str
    error: str | None = None

    @property
    def referenced_sop_instance_uids(self) -> list[str]:
        return _sequence_uids(self.body, TAG_REFERENCED_SOP_SEQUENCE)

    @property
    def failed_sop_instance_uids(self) -> list[str]:
        return _sequence_uids(self.body, TAG_FAILED_SOP_SEQUENCE)

    @property
    def failed_items(self) -> list[dict]:
        return sequence_items(self.body, TAG_FAILED_SOP_SEQUENCE)

    @property
    def referenced_items(self) -> list[dict]:
        return sequence_items(self.body, TAG_REFERENCED_SOP_SEQUENCE)

    def describe(self) -> str:
        text = self.text if len(self.text) < 2000 else self.text[:2000] + "..."
        return f"{self.method}: status {self.status_code}, error {self.error!r}, body {text}"


def json_element(item: Mapping | None, tag: str) -> Mapping | None:
    """Returns the DICOM JSON attribute object for a tag (`0020000D` or `0020000d`)."""
    if not isinstance(item, Mapping):
        return None
    element = item.get(tag.upper())
    if element is None:
        element = item.get(tag.lower())
    return element if isinstance(element, Mapping) else None


def sequence_items(body: Mapping | None, tag: str) -> list[dict]:
    """Returns the items of a DICOM JSON sequence attribute (empty if absent)."""
    element = json_element(body, tag)
    if element is None:
        return []
    items = element.get("Value") or []
    return [item for item in items if isinstance(item, Mapping)]


def json_values(item: Mapping | None, tag: str) -> list:
    """Returns the Value list of a DICOM JSON attribute (empty if absent)."""
    element = json_element(item, tag)
    if element is None:
        return []
    return list(element.get("Value") or [])


def json_first_value(item: Mapping | None, tag: str):
    values = json_values(item, tag)
    return values[0] if values else None


def _sequence_uids(body: Mapping | None, tag: str) -> list[str]:
    return [uid for item in sequence_items(body, tag) for uid in json_values(item, TAG_REFERENCED_SOP_INSTANCE_UID)]


def parse_stow_response(response: requests.Response, method: str) -> StowResult:
    body = None
    text = response.text if response.content else ""
    content_type = response.headers.get("Content-Type", "").lower()
    if response.content and "xml" in content_type:
        try:
            body = _xml_response_as_json(response.content)
        except Exception:  # noqa: BLE001 - an unparsable body stays None
            body = None
    elif response.content:
        try:
            decoded = response.json()
        except ValueError:
            decoded = None
        if isinstance(decoded, list) and len(decoded) == 1:
            decoded = decoded[0]
        if isinstance(decoded, dict):
            body = decoded
    return StowResult(status_code=response.status_code, body=body, text=text, method=method)


def _xml_response_as_json(content: bytes) -> dict:
    """Converts a DICOM Native XML response (PS3.19) to DICOM JSON."""
    from xml.etree.ElementTree import fromstring

    from dicomweb_client.web import _load_xml_dataset

    return _load_xml_dataset(fromstring(content)).to_json_dict()


def stow_raw(base_url: str, parts: Sequence[bytes], study_instance_uid: str | None = None) -> StowResult:
    """POSTs the given bytes as application/dicom parts to STOW-RS, unchanged."""
    url = f"{base_url}/dicomweb/studies"
    if study_instance_uid:
        url += f"/{study_instance_uid}"
    body, content_type = encode_multipart_related(parts)
    response = requests.post(
        url,
        data=body,
        headers={"Content-Type": content_type, "Accept": "application/dicom+json"},
        timeout=HTTP_TIMEOUT_SECONDS,
    )
    return parse_stow_response(response, method="requests")


def wado_get(base_url: str, path: str, accept: str = DICOM_MULTIPART_ANY_TRANSFER_SYNTAX) -> requests.Response:
    return requests.get(f"{base_url}/dicomweb/{path}", headers={"Accept": accept}, timeout=HTTP_TIMEOUT_SECONDS)


# ----------------------------------------------------- synthetic instances

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"


def free_port() -> int:
    """A TCP port of 127.0.0.1 that was free a moment ago."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def synthetic_ct(
    study_uid: str | None = None,
    series_uid: str | None = None,
    number: int = 1,
    *,
    size: int = 32,
    pixel_fill: bytes | None = None,
    sop_class: str = CT_IMAGE_STORAGE,
    **attributes: Any,
) -> bytes:
    """A small image (CT unless `sop_class` says otherwise; `size` x `size`, 16-bit, Explicit
    VR Little Endian) as Part 10 bytes.
    Keyword arguments set or override attributes (`PatientName="A^B"`,
    `SpecificCharacterSet="ISO_IR 192"`, ...); the pixel data is seeded by `number` unless
    `pixel_fill` (one byte repeated) is given."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = EXPLICIT_VR_LITTLE_ENDIAN
    dataset = Dataset()
    dataset.file_meta = meta
    dataset.SOPClassUID = sop_class
    dataset.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    dataset.StudyInstanceUID = study_uid or generate_uid()
    dataset.SeriesInstanceUID = series_uid or generate_uid()
    dataset.PatientName = "SYNTHETIC^CT"
    dataset.PatientID = "SYNTHETIC-1"
    dataset.StudyDate = "20240510"
    dataset.Modality = "CT"
    dataset.SeriesNumber = 1
    dataset.InstanceNumber = number
    dataset.Rows = size
    dataset.Columns = size
    dataset.BitsAllocated = 16
    dataset.BitsStored = 16
    dataset.HighBit = 15
    dataset.PixelRepresentation = 0
    dataset.SamplesPerPixel = 1
    dataset.PhotometricInterpretation = "MONOCHROME2"
    num_bytes = size * size * 2
    if pixel_fill is not None:
        dataset.PixelData = pixel_fill * num_bytes
    else:
        import random

        dataset.PixelData = random.Random(number).randbytes(num_bytes)
    for keyword, value in attributes.items():
        setattr(dataset, keyword, value)
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, dataset, enforce_file_format=True)
    return buffer.getvalue()


# ------------------------------------------------------------ the server

_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
# Matches `http_addr=127.0.0.1:1234` in text logs and `"http_addr":"127.0.0.1:1234"` in JSON logs.
# Matches `dimse_addr=127.0.0.1:11112` (text logs) and `"dimse_addr":"127.0.0.1:11112"` (JSON).
_DIMSE_ADDR = re.compile(r'dimse_addr"?\s*[=:]\s*"?((?:\d{1,3}(?:\.\d{1,3}){3}|localhost):\d+)')
_HTTP_ADDR = re.compile(r'http_addr"?\s*[=:]\s*"?((?:\d{1,3}(?:\.\d{1,3}){3}|\[[0-9a-fA-F:]+\]|localhost):\d+)')


try:
    import ctypes

    _LIBC = ctypes.CDLL(None, use_errno=True)
except (ImportError, OSError):  # not Linux: servers are only stopped by the fixtures
    _LIBC = None
_PR_SET_PDEATHSIG = 1


def _terminate_with_parent() -> None:
    """Runs in the child between fork and exec: asks Linux to send SIGTERM when
    the pytest process dies, so a killed test run leaves no server behind. Only
    calls into the preloaded libc: no imports or allocations after fork."""
    if _LIBC is not None:
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class ServerStartError(RuntimeError):
    pass


class StrataServer:
    """A `strata serve` child process listening on a free port of 127.0.0.1.

    The port is read from the `node ready` log line (`http_addr=HOST:PORT`); the
    whole log (stdout and stderr) is kept in memory and in `log_path`.
    """

    def __init__(
        self,
        binary: Path,
        data_dir: Path,
        env: Mapping[str, str],
        label: str,
        extra_args: Sequence[str] = (),
    ):
        self.binary = binary
        self.extra_args = list(extra_args)
        self.data_dir = data_dir
        self.env = dict(env)
        self.label = label
        self.log_path = data_dir.parent / f"{data_dir.name}.log"
        self.base_url: str | None = None
        self.process: subprocess.Popen | None = None
        self._lines: list[str] = []
        self._lines_lock = threading.Lock()
        self._ready = threading.Event()
        self._http_addr: str | None = None
        self._reader: threading.Thread | None = None
        self.stopped_by_harness = False

    @property
    def dicomweb_url(self) -> str:
        return f"{self.base_url}/dicomweb"

    def start(self, timeout_seconds: float) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        command = [
            str(self.binary),
            "serve",
            "--data-dir",
            str(self.data_dir),
            "--http-addr",
            "127.0.0.1:0",
            "--dimse-addr",
            "127.0.0.1:0",
            *self.extra_args,
        ]
        self.process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=self.env,
            cwd=self.data_dir.parent,
            start_new_session=True,
            preexec_fn=_terminate_with_parent,
        )
        self._reader = threading.Thread(target=self._read_output, name=f"strata-log-{self.label}", daemon=True)
        self._reader.start()
        deadline = time.monotonic() + timeout_seconds
        while not self._ready.wait(timeout=0.1):
            if self.process.poll() is not None:
                self._reader.join(timeout=5)
                raise ServerStartError(
                    f"`{' '.join(command)}` exited with code {self.process.returncode} before logging "
                    f"`node ready`\n{self.log_tail()}"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise ServerStartError(
                    f"`{' '.join(command)}` did not log `node ready` with `http_addr=` within "
                    f"{timeout_seconds:.0f} s\n{self.log_tail()}"
                )
        host_port = self._http_addr
        if host_port.startswith("0.0.0.0:"):
            host_port = "127.0.0.1:" + host_port.split(":", 1)[1]
        self.base_url = f"http://{host_port}"

    def _read_output(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        with open(self.log_path, "w", encoding="utf-8") as log_file:
            for raw_line in self.process.stdout:
                line = _ANSI_ESCAPE.sub("", raw_line.decode("utf-8", errors="replace")).rstrip("\n")
                with self._lines_lock:
                    self._lines.append(line)
                log_file.write(line + "\n")
                log_file.flush()
                if self._ready.is_set():
                    continue
                address_match = _HTTP_ADDR.search(line)
                if address_match:
                    self._http_addr = address_match.group(1)
                if "node ready" in line and self._http_addr:
                    self._ready.set()

    def is_running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def dimse_addr(self) -> tuple[str, int]:
        """The DIMSE listener's address, from the `dimse listener ready` log line."""
        with self._lines_lock:
            lines = list(self._lines)
        for line in lines:
            address_match = _DIMSE_ADDR.search(line)
            if address_match:
                host, _, port = address_match.group(1).rpartition(":")
                return host, int(port)
        raise AssertionError(f"no `dimse_addr=` in the log of {self.label}")

    def has_crashed(self) -> bool:
        """Whether the process ended without being stopped by the harness."""
        return self.process is not None and self.process.poll() is not None and not self.stopped_by_harness

    def log_text(self) -> str:
        with self._lines_lock:
            return "\n".join(self._lines)

    def log_tail(self, num_lines: int = 80) -> str:
        with self._lines_lock:
            lines = self._lines[-num_lines:]
            num_total = len(self._lines)
        header = (
            f"----- strata log ({self.label}), last {len(lines)} of {num_total} lines, full log {self.log_path} -----"
        )
        return "\n".join([header, *lines, "----- end of strata log -----"])

    def stop(self, timeout_seconds: float = 20) -> int | None:
        """Sends SIGTERM, then SIGKILL after the timeout. Returns the exit code."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.stopped_by_harness = True
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout_seconds)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        if self._reader is not None:
            self._reader.join(timeout=5)
        return self.process.returncode


# ----------------------------------------------------------- archives


@dataclasses.dataclass
class ArchiveResources:
    """What a backend provisioned for one archive, and how to find it again."""

    env: dict[str, str]
    catalog_uri: str | None = None
    s3_prefix: str | None = None
    cleanup: Callable[[], None] | None = None


@dataclasses.dataclass
class Archive:
    """A running archive and what backs it."""

    server: StrataServer
    resources: ArchiveResources
    backend: Any  # conftest.Backend (or PostgresS3Backend)

    @property
    def base_url(self) -> str:
        assert self.server.base_url is not None
        return self.server.base_url

    @property
    def dicomweb_url(self) -> str:
        return self.server.dicomweb_url

    def client(self):
        """Returns a dicomweb-client for this archive."""
        from dicomweb_client import DICOMwebClient

        return DICOMwebClient(url=self.dicomweb_url, timeout=HTTP_TIMEOUT_SECONDS)


ArchiveFactory = Callable[[str], "Archive"]


def run_archive(
    strata_bin: Path, backend: Any, data_dir: Path, label: str, extra_env: Mapping[str, str]
) -> Iterator[Archive]:
    """Starts an archive on `backend` with `extra_env` over the backend's environment, yields
    it, then checks it did not crash, stops it and releases what the backend provisioned.
    For fixtures: `yield from run_archive(...)`."""
    resources = backend.provision(label)
    env = dict(resources.env)
    env.update(extra_env)
    server = StrataServer(strata_bin, data_dir, env, label)
    archive = Archive(server=server, resources=resources, backend=backend)
    try:
        server.start(timeout_seconds=60)
        yield archive
        assert not server.has_crashed(), server.log_tail()
    finally:
        server.stop()
        if resources.cleanup is not None:
            resources.cleanup()
