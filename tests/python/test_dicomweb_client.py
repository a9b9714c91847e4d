"""End-to-end DICOMweb tests: `strata serve` driven by the real dicomweb-client
library (and by plain `requests` where byte-exact control is needed), with the
shared corpus.

The archive under test is a child process; see conftest.py for how it is started
and which backend it runs on. One session-wide archive holds the whole `accept*`
corpus (one file per same-instance group); tests that need an empty archive
start their own.
"""

from __future__ import annotations

import collections
import dataclasses
import fnmatch
import functools
import io
import os
import re
import subprocess
import uuid
from collections.abc import Callable, Iterable

import pydicom
import pytest
import requests
from dicomweb_client import DICOMwebClient

import e2e_support
from e2e_support import (
    TAG_FAILURE_REASON,
    TAG_MODALITIES_IN_STUDY,
    TAG_MODALITY,
    TAG_NUMBER_OF_STUDY_RELATED_INSTANCES,
    TAG_NUMBER_OF_STUDY_RELATED_SERIES,
    TAG_PATIENT_NAME,
    TAG_PIXEL_DATA,
    TAG_ROWS,
    TAG_SERIES_INSTANCE_UID,
    TAG_SOP_INSTANCE_UID,
    TAG_STUDY_INSTANCE_UID,
    Archive,
    ArchiveFactory,
    CorpusEntry,
    StowResult,
)

# ------------------------------------------------------------ the corpus

MANIFEST = e2e_support.load_manifest()
MANIFEST_BY_PATH = {entry.path: entry for entry in MANIFEST}
_DICOM_UID = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")


def _has_conformant_uids(entry: CorpusEntry) -> bool:
    uids = (entry.study_instance_uid, entry.series_instance_uid, entry.sop_instance_uid)
    return all(_DICOM_UID.match(uid) and len(uid) <= 64 for uid in uids)


# One file per same-instance group, as the corpus README asks for one archive.
STORE_CANDIDATES = e2e_support.one_per_same_instance_group(entry for entry in MANIFEST if entry.is_accept)
# Files the archive must store and return: they carry the whole UID hierarchy with
# conformant UIDs, so QIDO and WADO-RS can address them.
STORED_ENTRIES = [entry for entry in STORE_CANDIDATES if entry.has_hierarchy_uids and _has_conformant_uids(entry)]
# `accept*` rows that cannot be addressed by WADO-RS URLs: no Study/Series Instance
# UID, or UIDs that are not DICOM UIDs. The manifest says accept; what an archive
# can do with them is unsettled, so they only must not break it.
UNADDRESSABLE_ENTRIES = [entry for entry in STORE_CANDIDATES if entry not in STORED_ENTRIES]
# Files every archive must refuse: parse-only rows and invalid/ (but the conflict
# file and the reject-or-recover rows).
REFUSED_ENTRIES = [
    entry
    for entry in MANIFEST
    if entry.expected == "parse-only" or (entry.category == "invalid" and entry.expected == "reject")
]
# invalid/ rows the manifest lets an archive refuse or recover deterministically.
# They cannot all be refused: valid/rtplan_implicit_le.dcm and three other accept
# files carry the same defect as invalid/meta_sop_uid_mismatch.dcm (Media Storage
# SOP Instance UID != SOP Instance UID).
REJECT_OR_RECOVER_ENTRIES = [entry for entry in MANIFEST if entry.expected == "reject-or-recover"]
CONFLICT_ENTRY = next(entry for entry in MANIFEST if entry.expected == "conflict")
CONFLICT_ORIGINAL_ENTRY = MANIFEST_BY_PATH["valid/mr_explicit_le.dcm"]
SERIES_FOLDER_ENTRIES = [entry for entry in STORED_ENTRIES if entry.category == "series"]
CHARSET_ENTRIES = [entry for entry in STORED_ENTRIES if entry.category == "charset"]


def _entry_id(entry: CorpusEntry) -> str:
    return entry.path


@functools.cache
def original_dataset(path: str) -> pydicom.Dataset:
    """Returns the corpus file parsed by pydicom (data set only, no File Meta)."""
    return e2e_support.read_dataset(MANIFEST_BY_PATH[path].read_bytes())


def element_text(path: str, keyword: str) -> str | None:
    """Returns an attribute of a corpus file as text, None when absent."""
    dataset = original_dataset(path)
    if keyword not in dataset:
        return None
    value = dataset.data_element(keyword).value
    return "" if value is None else str(value)


# ------------------------------------------------ the loaded corpus archive


class ResponseRecorder:
    """Keeps the last HTTP response a requests.Session received, so that the
    status and body of a dicomweb-client call can be checked as sent."""

    def __init__(self) -> None:
        self.last_response: requests.Response | None = None

    def __call__(self, response: requests.Response, *args, **kwargs) -> requests.Response:
        self.last_response = response
        return response


def make_recording_client(archive: Archive) -> tuple[DICOMwebClient, ResponseRecorder]:
    recorder = ResponseRecorder()
    session = requests.Session()
    session.hooks["response"].append(recorder)
    client = DICOMwebClient(url=archive.dicomweb_url, session=session, timeout=e2e_support.HTTP_TIMEOUT_SECONDS)
    return client, recorder


def store_with_dicomweb_client(client: DICOMwebClient, recorder: ResponseRecorder, data: bytes) -> StowResult:
    """Stores one Part 10 file with DICOMwebClient.store_instances."""
    dataset = pydicom.dcmread(io.BytesIO(data))
    recorder.last_response = None
    error = None
    try:
        client.store_instances([dataset])
    except requests.HTTPError:
        pass  # the recorded response carries the status and body
    except Exception as exception:  # noqa: BLE001 - recorded and reported by the test
        error = repr(exception)
    if recorder.last_response is None:
        return StowResult(status_code=None, body=None, text="", method="dicomweb-client", error=error or "no response")
    result = e2e_support.parse_stow_response(recorder.last_response, method="dicomweb-client")
    result.error = error
    return result


@dataclasses.dataclass
class LoadedArchive:
    """The session archive holding the corpus, with what each STOW-RS returned."""

    archive: Archive
    stow_results: dict[str, StowResult]
    methods: dict[str, str]

    @property
    def server(self) -> e2e_support.StrataServer:
        return self.archive.server

    @property
    def base_url(self) -> str:
        return self.archive.base_url

    def client(self) -> DICOMwebClient:
        return self.archive.client()

    def stored_entries(self) -> list[CorpusEntry]:
        """The entries whose STOW-RS succeeded (the expectations of search tests)."""
        stored = [entry for entry in STORED_ENTRIES if stow_problem(entry, self.stow_results[entry.path]) is None]
        if not stored:
            pytest.fail("no corpus file was stored, nothing to search or retrieve", pytrace=False)
        return stored

    def require_stored(self, entry: CorpusEntry) -> None:
        problem = stow_problem(entry, self.stow_results[entry.path])
        if problem is not None:
            pytest.fail(f"{entry.path} was not stored, so it cannot be retrieved: {problem}", pytrace=False)


def stow_problem(entry: CorpusEntry, result: StowResult) -> str | None:
    """Returns why a STOW-RS of one accept file did not store it, or None."""
    if result.status_code not in (200, 202):
        return f"expected 200 (or 202 with warnings), got {result.describe()}"
    if entry.sop_instance_uid in result.failed_sop_instance_uids:
        return f"the instance is in FailedSOPSequence: {result.describe()}"
    if entry.sop_instance_uid not in result.referenced_sop_instance_uids:
        return f"the instance is not in ReferencedSOPSequence: {result.describe()}"
    return None


@pytest.fixture(scope="session")
def corpus_archive(start_archive: ArchiveFactory) -> LoadedArchive:
    """An archive holding every STORED_ENTRIES file. Files that pydicom writes back
    byte-identically go through dicomweb-client; the others (no Part 10 header,
    deflate, ...) are posted unchanged with requests."""
    archive = start_archive("corpus")
    client, recorder = make_recording_client(archive)
    stow_results = {}
    methods = {}
    for entry in STORED_ENTRIES:
        data = entry.read_bytes()
        if e2e_support.pydicom_round_trip_is_exact(data):
            methods[entry.path] = "dicomweb-client"
            stow_results[entry.path] = store_with_dicomweb_client(client, recorder, data)
        else:
            methods[entry.path] = "requests"
            try:
                stow_results[entry.path] = e2e_support.stow_raw(archive.base_url, [data])
            except requests.RequestException as exception:
                stow_results[entry.path] = StowResult(None, None, "", "requests", error=repr(exception))
    return LoadedArchive(archive=archive, stow_results=stow_results, methods=methods)


# ----------------------------------------------------------------- STOW-RS


@pytest.mark.parametrize("entry", STORED_ENTRIES, ids=_entry_id)
def test_stow_stores_accept_file(corpus_archive: LoadedArchive, entry: CorpusEntry) -> None:
    problem = stow_problem(entry, corpus_archive.stow_results[entry.path])
    assert problem is None, (
        f"{entry.path} ({entry.expected}, sent with {corpus_archive.methods[entry.path]}): {problem}"
    )


def test_stow_of_unaddressable_accept_files_is_well_formed(fresh_archive: Archive) -> None:
    """Accept rows without Study/Series UIDs or with non-DICOM UIDs: stored or
    refused, but answered with a STOW-RS response, never a server error."""
    assert UNADDRESSABLE_ENTRIES, "the corpus changed: no unaddressable accept file left"
    problems = []
    for entry in UNADDRESSABLE_ENTRIES:
        result = e2e_support.stow_raw(fresh_archive.base_url, [entry.read_bytes()])
        stored = result.status_code in (200, 202) and entry.sop_instance_uid in result.referenced_sop_instance_uids
        refused = result.status_code in (400, 409) and _has_failure_reason(result)
        if not (stored or refused):
            problems.append(f"{entry.path}: {result.describe()}")
    assert not problems, "\n".join(problems)
    assert_archive_answers(fresh_archive.base_url)


def _has_failure_reason(result: StowResult) -> bool:
    return bool(result.failed_items) and all(
        e2e_support.json_values(item, TAG_FAILURE_REASON) for item in result.failed_items
    )


def assert_refused(result: StowResult, what: str) -> None:
    assert result.status_code in (409, 400), f"{what}: expected 409 (or 400), got {result.describe()}"
    assert result.failed_items, f"{what}: no FailedSOPSequence (00081198) item in {result.describe()}"
    for item in result.failed_items:
        assert e2e_support.json_values(item, TAG_FAILURE_REASON), (
            f"{what}: FailedSOPSequence item without FailureReason (00081197): {item}"
        )


@pytest.fixture(scope="session")
def refusal_archive(start_archive: ArchiveFactory) -> Archive:
    """An archive that only ever receives files it must refuse."""
    return start_archive("refusals")


@pytest.mark.parametrize("entry", REFUSED_ENTRIES, ids=_entry_id)
def test_stow_refuses_file(refusal_archive: Archive, entry: CorpusEntry) -> None:
    result = e2e_support.stow_raw(refusal_archive.base_url, [entry.read_bytes()])
    assert_refused(result, f"{entry.path} ({entry.expected})")


@pytest.mark.parametrize("entry", REJECT_OR_RECOVER_ENTRIES, ids=_entry_id)
def test_stow_refuses_or_recovers_file(fresh_archive: Archive, entry: CorpusEntry) -> None:
    """Refused like a `reject` file, or stored and then retrievable as a Part 10 object."""
    result = e2e_support.stow_raw(fresh_archive.base_url, [entry.read_bytes()])
    if result.status_code in (409, 400):
        assert_refused(result, f"{entry.path} ({entry.expected})")
    else:
        assert result.status_code in (200, 202), f"{entry.path}: expected 409/400 or 200/202, got {result.describe()}"
        stored_uids = result.referenced_sop_instance_uids
        assert len(stored_uids) == 1, f"{entry.path}: recovered, but {result.describe()}"
        studies = assert_archive_answers(fresh_archive.base_url)
        assert len(studies) == 1, f"{entry.path}: recovered into {len(studies)} studies"
    assert_archive_answers(fresh_archive.base_url)


def assert_archive_answers(base_url: str) -> list:
    """Checks that QIDO-RS /studies answers 200 and returns its results."""
    response = requests.get(
        f"{base_url}/dicomweb/studies",
        headers={"Accept": "application/dicom+json"},
        timeout=e2e_support.HTTP_TIMEOUT_SECONDS,
    )
    assert response.status_code == 200, f"GET /dicomweb/studies: {response.status_code} {response.text[:500]}"
    return response.json() if response.content else []


def test_archive_answers_and_is_empty_after_refusals(refusal_archive: Archive) -> None:
    # Send every refused file again, all in one request this time.
    result = e2e_support.stow_raw(refusal_archive.base_url, [entry.read_bytes() for entry in REFUSED_ENTRIES])
    assert_refused(result, "one request with every refused file")
    studies = assert_archive_answers(refusal_archive.base_url)
    assert studies == [], f"refused files left studies behind: {studies}"


def test_stow_refuses_conflicting_instance_and_keeps_original(fresh_archive: Archive) -> None:
    original_bytes = CONFLICT_ORIGINAL_ENTRY.read_bytes()
    first = e2e_support.stow_raw(fresh_archive.base_url, [original_bytes])
    assert stow_problem(CONFLICT_ORIGINAL_ENTRY, first) is None, stow_problem(CONFLICT_ORIGINAL_ENTRY, first)

    conflicting = e2e_support.stow_raw(fresh_archive.base_url, [CONFLICT_ENTRY.read_bytes()])
    assert_refused(conflicting, f"{CONFLICT_ENTRY.path} after {CONFLICT_ORIGINAL_ENTRY.path}")
    assert CONFLICT_ENTRY.sop_instance_uid not in conflicting.referenced_sop_instance_uids

    retrieved = retrieve_instance_bytes(fresh_archive.base_url, CONFLICT_ORIGINAL_ENTRY)
    assert_same_dataset_bytes(retrieved, original_bytes, CONFLICT_ORIGINAL_ENTRY.path)

    instances = fresh_archive.client().search_for_instances(
        CONFLICT_ORIGINAL_ENTRY.study_instance_uid, CONFLICT_ORIGINAL_ENTRY.series_instance_uid
    )
    assert uid_list(instances, TAG_SOP_INSTANCE_UID) == [CONFLICT_ORIGINAL_ENTRY.sop_instance_uid]


def test_stow_mixed_request_returns_202_with_both_sequences(fresh_archive: Archive) -> None:
    good_entry = MANIFEST_BY_PATH["valid/ct_explicit_le_private_tags.dcm"]
    bad_entry = MANIFEST_BY_PATH["invalid/missing_sop_instance_uid.dcm"]
    result = e2e_support.stow_raw(fresh_archive.base_url, [good_entry.read_bytes(), bad_entry.read_bytes()])
    assert result.status_code == 202, f"expected 202, got {result.describe()}"
    assert result.referenced_sop_instance_uids == [good_entry.sop_instance_uid], result.describe()
    assert len(result.failed_items) == 1, result.describe()
    assert e2e_support.json_values(result.failed_items[0], TAG_FAILURE_REASON), result.describe()
    retrieved = retrieve_instance_bytes(fresh_archive.base_url, good_entry)
    assert_same_dataset_bytes(retrieved, good_entry.read_bytes(), good_entry.path)


# ----------------------------------------------------------------- WADO-RS


def instance_path(entry: CorpusEntry) -> str:
    return f"studies/{entry.study_instance_uid}/series/{entry.series_instance_uid}/instances/{entry.sop_instance_uid}"


def retrieve_instance_bytes(base_url: str, entry: CorpusEntry) -> bytes:
    """GETs one instance as multipart/related application/dicom, stored transfer syntax."""
    response = e2e_support.wado_get(base_url, instance_path(entry))
    assert response.status_code == 200, f"WADO-RS {entry.path}: {response.status_code} {response.text[:500]}"
    parts = e2e_support.decode_multipart_related(response.headers.get("Content-Type", ""), response.content)
    assert len(parts) == 1, f"WADO-RS {entry.path}: expected one part, got {len(parts)}"
    part_type = parts[0].headers.get("content-type", "application/dicom")
    assert part_type.startswith("application/dicom"), f"WADO-RS {entry.path}: part Content-Type {part_type}"
    return parts[0].content


def assert_same_dataset_bytes(retrieved: bytes, original: bytes, what: str) -> None:
    """The bytes after the File Meta group must be identical."""
    assert e2e_support.has_part10_header(retrieved), f"{what}: retrieved object has no Part 10 header"
    retrieved_dataset = retrieved[e2e_support.dataset_offset(retrieved) :]
    original_dataset_bytes = original[e2e_support.dataset_offset(original) :]
    if retrieved_dataset != original_dataset_bytes:
        first_difference = next(
            (
                index
                for index, (a, b) in enumerate(zip(retrieved_dataset, original_dataset_bytes, strict=False))
                if a != b
            ),
            min(len(retrieved_dataset), len(original_dataset_bytes)),
        )
        pytest.fail(
            f"{what}: data set bytes differ from the original: {len(retrieved_dataset)} bytes retrieved, "
            f"{len(original_dataset_bytes)} stored, first difference at data set offset {first_difference}",
            pytrace=False,
        )


IMPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2"
EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"
EXPLICIT_VR_BIG_ENDIAN = "1.2.840.10008.1.2.2"
WEB_NEVER_SERVED = {IMPLICIT_VR_LITTLE_ENDIAN, EXPLICIT_VR_BIG_ENDIAN}


@pytest.mark.parametrize("entry", STORED_ENTRIES, ids=_entry_id)
def test_wado_returns_original_bytes(corpus_archive: LoadedArchive, entry: CorpusEntry) -> None:
    corpus_archive.require_stored(entry)
    original = entry.read_bytes()
    retrieved = retrieve_instance_bytes(corpus_archive.base_url, entry)
    assert e2e_support.has_part10_header(retrieved), f"{entry.path}: retrieved object has no Part 10 header"
    file_meta = e2e_support.read_file_meta(retrieved)
    # Four corpus files have a Media Storage SOP Instance UID that differs from their
    # SOP Instance UID; an archive may keep that File Meta or correct it.
    acceptable_meta_uids = {entry.sop_instance_uid}
    if e2e_support.has_part10_header(original):
        acceptable_meta_uids.add(e2e_support.read_file_meta(original).MediaStorageSOPInstanceUID)
    assert file_meta.MediaStorageSOPInstanceUID in acceptable_meta_uids
    if entry.transfer_syntax_uid in WEB_NEVER_SERVED:
        # PS3.18 8.7.3: Implicit VR Little Endian and Explicit VR Big Endian are never served;
        # `transfer-syntax=*` yields Explicit VR Little Endian with the same data set.
        assert file_meta.TransferSyntaxUID == EXPLICIT_VR_LITTLE_ENDIAN, file_meta.TransferSyntaxUID
        differences = e2e_support.datasets_differences(
            e2e_support.read_dataset(retrieved), e2e_support.read_dataset(original)
        )
        assert not differences, f"{entry.path}: retrieved data set differs: {differences}"
    elif e2e_support.has_part10_header(original):
        assert file_meta.TransferSyntaxUID == entry.transfer_syntax_uid, "stored transfer syntax changed"
        assert_same_dataset_bytes(retrieved, original, entry.path)
    else:
        # No Part 10 header in the corpus file: the archive had to add one, so compare data sets.
        differences = e2e_support.datasets_differences(
            e2e_support.read_dataset(retrieved), e2e_support.read_dataset(original)
        )
        assert not differences, f"{entry.path}: retrieved data set differs: {differences}"


@pytest.mark.parametrize("entry", STORED_ENTRIES, ids=_entry_id)
def test_dicomweb_client_retrieve_instance_matches_original(corpus_archive: LoadedArchive, entry: CorpusEntry) -> None:
    corpus_archive.require_stored(entry)
    retrieved = corpus_archive.client().retrieve_instance(
        entry.study_instance_uid, entry.series_instance_uid, entry.sop_instance_uid
    )
    assert retrieved.SOPInstanceUID == entry.sop_instance_uid
    differences = e2e_support.datasets_differences(retrieved, original_dataset(entry.path))
    assert not differences, f"{entry.path}: retrieved data set differs: {differences}"


def _series_folder_ct_study() -> tuple[str, str, list[CorpusEntry]]:
    by_series = collections.defaultdict(list)
    for entry in SERIES_FOLDER_ENTRIES:
        by_series[(entry.study_instance_uid, entry.series_instance_uid)].append(entry)
    (study_uid, series_uid), entries = max(by_series.items(), key=lambda item: len(item[1]))
    return study_uid, series_uid, entries


def test_dicomweb_client_retrieve_study(corpus_archive: LoadedArchive) -> None:
    study_uid, _series_uid, entries = _series_folder_ct_study()
    assert len(entries) == 4, "the corpus changed: expected 4 CT instances in one series/ study"
    for entry in entries:
        corpus_archive.require_stored(entry)
    datasets = corpus_archive.client().retrieve_study(study_uid)
    by_sop_uid = {dataset.SOPInstanceUID: dataset for dataset in datasets}
    assert len(datasets) == 4
    assert set(by_sop_uid) == {entry.sop_instance_uid for entry in entries}
    for entry in entries:
        differences = e2e_support.datasets_differences(by_sop_uid[entry.sop_instance_uid], original_dataset(entry.path))
        assert not differences, f"{entry.path}: retrieved data set differs: {differences}"


def test_dicomweb_client_retrieve_series_metadata(corpus_archive: LoadedArchive) -> None:
    study_uid, series_uid, entries = _series_folder_ct_study()
    for entry in entries:
        corpus_archive.require_stored(entry)
    metadata = corpus_archive.client().retrieve_series_metadata(study_uid, series_uid)
    assert len(metadata) == len(entries)
    by_sop_uid = {e2e_support.json_first_value(item, TAG_SOP_INSTANCE_UID): item for item in metadata}
    assert set(by_sop_uid) == {entry.sop_instance_uid for entry in entries}
    for entry in entries:
        item = by_sop_uid[entry.sop_instance_uid]
        assert e2e_support.json_first_value(item, TAG_STUDY_INSTANCE_UID) == study_uid
        assert e2e_support.json_first_value(item, TAG_SERIES_INSTANCE_UID) == series_uid
        assert e2e_support.json_first_value(item, TAG_MODALITY) == "CT"
        assert e2e_support.json_first_value(item, TAG_ROWS) == original_dataset(entry.path).Rows
        pixel_data = e2e_support.json_element(item, TAG_PIXEL_DATA)
        assert pixel_data is None or "InlineBinary" not in pixel_data, (
            "metadata must reference bulk data (BulkDataURI), not inline it"
        )


def _unknown_uid() -> str:
    return f"2.25.{uuid.uuid4().int}"


def _wado_error_paths() -> list[tuple[str, Callable[[], str], int]]:
    known = STORED_ENTRIES[0]
    return [
        ("unknown study", lambda: f"studies/{_unknown_uid()}", 404),
        ("unknown study metadata", lambda: f"studies/{_unknown_uid()}/metadata", 404),
        ("unknown series", lambda: f"studies/{known.study_instance_uid}/series/{_unknown_uid()}", 404),
        (
            "unknown instance",
            lambda: f"studies/{known.study_instance_uid}/series/{known.series_instance_uid}/instances/{_unknown_uid()}",
            404,
        ),
        ("malformed study", lambda: "studies/abc", 400),
        ("malformed study metadata", lambda: "studies/abc/metadata", 400),
        ("malformed series", lambda: f"studies/{known.study_instance_uid}/series/abc", 400),
    ]


@pytest.mark.parametrize(
    "path_factory, expected_status",
    [case[1:] for case in _wado_error_paths()],
    ids=[case[0] for case in _wado_error_paths()],
)
def test_wado_error_status(
    corpus_archive: LoadedArchive, path_factory: Callable[[], str], expected_status: int
) -> None:
    path = path_factory()
    accept = "application/dicom+json" if path.endswith("/metadata") else e2e_support.DICOM_MULTIPART_ANY_TRANSFER_SYNTAX
    response = e2e_support.wado_get(corpus_archive.base_url, path, accept=accept)
    assert response.status_code == expected_status, f"GET {path}: {response.status_code} {response.text[:300]}"


# ----------------------------------------------------------------- QIDO-RS


QIDO_PAGE_SIZE = 20
QIDO_MAX_PAGES = 50


def search_all_studies(client: DICOMwebClient, **search_arguments) -> list[dict]:
    """Pages through search_for_studies with limit/offset until an empty page.

    dicomweb-client's own `get_remaining=True` loops until the server returns an
    empty page, forever if the server ignores `offset`; this stops and fails instead.
    """
    results: list[dict] = []
    seen_uids: set[str] = set()
    for page_number in range(QIDO_MAX_PAGES):
        page = client.search_for_studies(limit=QIDO_PAGE_SIZE, offset=len(results), **search_arguments)
        if not page:
            return results
        page_uids = uid_set(page, TAG_STUDY_INSTANCE_UID)
        assert page_uids - seen_uids, (
            f"QIDO page {page_number} (offset {len(results)}) repeats earlier studies: is `offset` ignored?"
        )
        seen_uids |= page_uids
        results.extend(page)
    pytest.fail(f"QIDO returned more than {QIDO_MAX_PAGES} pages of {QIDO_PAGE_SIZE} studies", pytrace=False)


def uid_list(results: Iterable[dict], tag: str) -> list[str]:
    return [value for item in results for value in e2e_support.json_values(item, tag)]


def uid_set(results: Iterable[dict], tag: str) -> set[str]:
    return set(uid_list(results, tag))


def expected_study_uids(
    entries: Iterable[CorpusEntry], instance_matches: Callable[[CorpusEntry], bool | None]
) -> tuple[set[str], set[str]]:
    """Returns (must, may): studies all of whose stored instances match, and studies
    where the instances disagree or a value is ambiguous (e.g. a pre-DICOM date)."""
    verdicts = collections.defaultdict(set)
    for entry in entries:
        verdicts[entry.study_instance_uid].add(instance_matches(entry))
    must = {study for study, found in verdicts.items() if found == {True}}
    may = {study for study, found in verdicts.items() if len(found) > 1 or None in found}
    return must, may


def assert_study_uids(found: set[str], must: set[str], may: set[str], query: str) -> None:
    missing = must - found
    unexpected = found - must - may
    assert not missing and not unexpected, (
        f"QIDO {query}: missing studies {sorted(missing)}, unexpected studies {sorted(unexpected)}"
    )


def test_qido_studies_match_manifest(corpus_archive: LoadedArchive) -> None:
    stored = corpus_archive.stored_entries()
    results = search_all_studies(corpus_archive.client())
    found = uid_list(results, TAG_STUDY_INSTANCE_UID)
    assert len(found) == len(set(found)), "a study was returned twice"
    assert set(found) == {entry.study_instance_uid for entry in stored}


def test_qido_series_and_instances_match_manifest(corpus_archive: LoadedArchive) -> None:
    stored = corpus_archive.stored_entries()
    client = corpus_archive.client()
    series_by_study = collections.defaultdict(set)
    instances_by_series = collections.defaultdict(set)
    modalities_by_series = collections.defaultdict(set)
    for entry in stored:
        series_by_study[entry.study_instance_uid].add(entry.series_instance_uid)
        instances_by_series[(entry.study_instance_uid, entry.series_instance_uid)].add(entry.sop_instance_uid)
        modalities_by_series[entry.series_instance_uid].add(entry.modality)
    problems = []
    for study_uid, expected_series in sorted(series_by_study.items()):
        series_results = client.search_for_series(study_uid)
        found_series = uid_set(series_results, TAG_SERIES_INSTANCE_UID)
        if found_series != expected_series:
            problems.append(f"study {study_uid}: series {sorted(found_series)} != {sorted(expected_series)}")
        for item in series_results:
            series_uid = e2e_support.json_first_value(item, TAG_SERIES_INSTANCE_UID)
            expected_modalities = modalities_by_series.get(series_uid, set())
            if len(expected_modalities) == 1 and "" not in expected_modalities:
                found_modality = e2e_support.json_first_value(item, TAG_MODALITY)
                if found_modality not in expected_modalities:
                    problems.append(f"series {series_uid}: Modality {found_modality!r} != {expected_modalities}")
        for series_uid in sorted(expected_series):
            found_instances = uid_set(client.search_for_instances(study_uid, series_uid), TAG_SOP_INSTANCE_UID)
            expected_instances = instances_by_series[(study_uid, series_uid)]
            if found_instances != expected_instances:
                problems.append(
                    f"series {series_uid}: instances {sorted(found_instances)} != {sorted(expected_instances)}"
                )
    assert not problems, "\n".join(problems)


def test_qido_series_folder_hierarchy(corpus_archive: LoadedArchive) -> None:
    """series/: one patient, two studies, four series, seven instances."""
    for entry in SERIES_FOLDER_ENTRIES:
        corpus_archive.require_stored(entry)
    client = corpus_archive.client()
    study_uids = uid_set(client.search_for_studies(search_filters={"PatientID": "77654033"}), TAG_STUDY_INSTANCE_UID)
    assert len(study_uids) == 2
    num_series = 0
    sop_instance_uids = set()
    for study_uid in sorted(study_uids):
        series_uids = uid_set(client.search_for_series(study_uid), TAG_SERIES_INSTANCE_UID)
        num_series += len(series_uids)
        for series_uid in sorted(series_uids):
            sop_instance_uids |= uid_set(client.search_for_instances(study_uid, series_uid), TAG_SOP_INSTANCE_UID)
    assert num_series == 4
    assert sop_instance_uids == {entry.sop_instance_uid for entry in SERIES_FOLDER_ENTRIES}
    assert len(sop_instance_uids) == 7


def test_qido_patient_id(corpus_archive: LoadedArchive) -> None:
    stored = corpus_archive.stored_entries()
    must, may = expected_study_uids(stored, lambda entry: element_text(entry.path, "PatientID") == "77654033")
    results = corpus_archive.client().search_for_studies(search_filters={"PatientID": "77654033"})
    assert_study_uids(uid_set(results, TAG_STUDY_INSTANCE_UID), must, may, "PatientID=77654033")
    assert len(must) == 2


@pytest.mark.parametrize("pattern", ["Doe*", "*Archibald", "CompressedSamples^CT*", "*"])
def test_qido_patient_name_wildcard(corpus_archive: LoadedArchive, pattern: str) -> None:
    stored = corpus_archive.stored_entries()

    def matches(entry: CorpusEntry) -> bool | None:
        patient_name = element_text(entry.path, "PatientName")
        if pattern == "*":
            return True  # a lone `*` is universal matching: every study, named or not
        if patient_name is None:
            return False
        return fnmatch.fnmatchcase(patient_name, pattern)

    must, may = expected_study_uids(stored, matches)
    assert must, f"no stored study matches {pattern!r}: the corpus changed"
    results = search_all_studies(corpus_archive.client(), search_filters={"PatientName": pattern})
    assert_study_uids(uid_set(results, TAG_STUDY_INSTANCE_UID), must, may, f"PatientName={pattern}")


_DICOM_DATE = re.compile(r"^\d{8}$")


@pytest.mark.parametrize("date_range", ["20040101-20041231", "20190101-", "-19991231", "20010101"])
def test_qido_study_date_range(corpus_archive: LoadedArchive, date_range: str) -> None:
    stored = corpus_archive.stored_entries()
    if "-" in date_range:
        start, end = date_range.split("-")
    else:
        start = end = date_range

    def matches(entry: CorpusEntry) -> bool | None:
        study_date = (element_text(entry.path, "StudyDate") or "").strip()
        if not _DICOM_DATE.match(study_date):
            return None  # empty or pre-DICOM (`1997.04.24`) dates: either answer is acceptable
        return (not start or study_date >= start) and (not end or study_date <= end)

    must, may = expected_study_uids(stored, matches)
    assert must, f"no stored study in {date_range}: the corpus changed"
    results = search_all_studies(corpus_archive.client(), search_filters={"StudyDate": date_range})
    assert_study_uids(uid_set(results, TAG_STUDY_INSTANCE_UID), must, may, f"StudyDate={date_range}")


@pytest.mark.parametrize("modality", ["CT", "MR", "SEG"])
def test_qido_modalities_in_study(corpus_archive: LoadedArchive, modality: str) -> None:
    stored = corpus_archive.stored_entries()
    # Modality is a series attribute. In one corpus study an SR instance shares the
    # series of a CT instance, so that series' Modality is either; such a study may
    # or may not match.
    modalities_by_series = collections.defaultdict(set)
    for entry in stored:
        modalities_by_series[(entry.study_instance_uid, entry.series_instance_uid)].add(entry.modality)
    must = set()
    may = set()
    for (study_uid, _series_uid), modalities in modalities_by_series.items():
        if modality not in modalities:
            continue
        if len(modalities) == 1:
            must.add(study_uid)
        else:
            may.add(study_uid)
    assert must, f"no stored {modality} study: the corpus changed"
    results = search_all_studies(corpus_archive.client(), search_filters={"ModalitiesInStudy": modality})
    assert_study_uids(uid_set(results, TAG_STUDY_INSTANCE_UID), must, may - must, f"ModalitiesInStudy={modality}")


def test_qido_limit_and_offset_page_through_all_studies(corpus_archive: LoadedArchive) -> None:
    client = corpus_archive.client()
    all_studies = uid_list(search_all_studies(client), TAG_STUDY_INSTANCE_UID)
    page_size = 5
    assert len(all_studies) > 2 * page_size, "too few studies to test paging"
    paged = []
    for page_number in range(len(all_studies) // page_size + 2):
        page = uid_list(
            client.search_for_studies(limit=page_size, offset=page_number * page_size), TAG_STUDY_INSTANCE_UID
        )
        assert len(page) <= page_size, f"limit={page_size} returned {len(page)} studies"
        if page_number == 0:
            assert len(page) == page_size
        if not page:
            break
        paged.extend(page)
    assert len(paged) == len(set(paged)), "pages overlap"
    assert set(paged) == set(all_studies), "pages do not cover all studies"
    beyond = client.search_for_studies(limit=page_size, offset=len(all_studies))
    assert beyond == []


def test_qido_includefield_all(corpus_archive: LoadedArchive) -> None:
    client = corpus_archive.client()
    stored = corpus_archive.stored_entries()
    for study_uid in sorted({entry.study_instance_uid for entry in SERIES_FOLDER_ENTRIES}):
        study_entries = [entry for entry in stored if entry.study_instance_uid == study_uid]
        default_results = client.search_for_studies(search_filters={"StudyInstanceUID": study_uid})
        all_results = client.search_for_studies(search_filters={"StudyInstanceUID": study_uid}, fields=["all"])
        assert len(default_results) == 1 and len(all_results) == 1
        default_keys = {key.upper() for key in default_results[0]}
        all_keys = {key.upper() for key in all_results[0]}
        assert default_keys <= all_keys, f"includefield=all dropped {sorted(default_keys - all_keys)}"
        item = all_results[0]
        assert e2e_support.json_first_value(item, TAG_NUMBER_OF_STUDY_RELATED_SERIES) == len(
            {entry.series_instance_uid for entry in study_entries}
        )
        assert e2e_support.json_first_value(item, TAG_NUMBER_OF_STUDY_RELATED_INSTANCES) == len(study_entries)
        assert set(e2e_support.json_values(item, TAG_MODALITIES_IN_STUDY)) == {
            entry.modality for entry in study_entries
        }


def _person_name_text(value) -> str:
    if isinstance(value, dict):
        components = [value.get(group, "") for group in ("Alphabetic", "Ideographic", "Phonetic")]
        return "=".join(components).rstrip("=")
    return str(value).rstrip("=")


@pytest.mark.parametrize("entry", CHARSET_ENTRIES, ids=_entry_id)
def test_qido_returns_decoded_patient_name(corpus_archive: LoadedArchive, entry: CorpusEntry) -> None:
    corpus_archive.require_stored(entry)
    results = corpus_archive.client().search_for_studies(
        search_filters={"StudyInstanceUID": entry.study_instance_uid}, fields=["PatientName"]
    )
    assert len(results) == 1
    names = [_person_name_text(value) for value in e2e_support.json_values(results[0], TAG_PATIENT_NAME)]
    assert names == [entry.patient_name_decoded.rstrip("=")]


# ----------------------------------------------------------------- backends


def test_archive_uses_the_configured_backend(corpus_archive: LoadedArchive) -> None:
    """Guards against a green postgres-s3 run that silently used the defaults."""
    corpus_archive.stored_entries()
    archive = corpus_archive.archive
    if archive.backend.name == "embedded":
        stored_files = [path for path in archive.server.data_dir.rglob("*") if path.is_file()]
        assert stored_files, f"nothing was written under --data-dir {archive.server.data_dir}"
        return
    tables = subprocess.run(
        [
            "psql",
            "-X",
            "-At",
            "-v",
            "ON_ERROR_STOP=1",
            archive.resources.catalog_uri,
            "-c",
            "SELECT count(*) FROM information_schema.tables "
            "WHERE table_schema NOT IN ('pg_catalog', 'information_schema')",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.strip()
    assert int(tables) > 0, "the PostgreSQL catalog database has no tables"
    listing = archive.backend.s3_client().list_objects_v2(
        Bucket=os.environ["STRATA_TEST_S3_BUCKET"], Prefix=f"{archive.resources.s3_prefix}/"
    )
    assert listing.get("KeyCount", 0) > 0, f"no object under s3 prefix {archive.resources.s3_prefix}/"
