"""FHIR R4 ImagingStudy, Patient and Endpoint end to end (issue 6).

Stores the corpus through STOW-RS, then queries /fhir and validates every returned resource
and Bundle with the `fhir.resources` models (R4B: the ImagingStudy, Patient, Endpoint, Bundle,
OperationOutcome and CapabilityStatement structures are the R4 4.0.1 ones), and checks the
values against the stored DICOM: counts, UIDs, modalities, dates, patient identifiers.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import re
import subprocess
import urllib.parse
from collections import defaultdict

import pytest
import requests
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.capabilitystatement import CapabilityStatement
from fhir.resources.R4B.endpoint import Endpoint
from fhir.resources.R4B.imagingstudy import ImagingStudy
from fhir.resources.R4B.operationoutcome import OperationOutcome
from fhir.resources.R4B.patient import Patient

import e2e_support

FHIR_JSON = "application/fhir+json"
DCM = "http://dicom.nema.org/resources/ontology/DCM"
MODELS = {
    "ImagingStudy": ImagingStudy,
    "Patient": Patient,
    "Endpoint": Endpoint,
    "Bundle": Bundle,
    "OperationOutcome": OperationOutcome,
    "CapabilityStatement": CapabilityStatement,
}
TIMEOUT = e2e_support.HTTP_TIMEOUT_SECONDS
LATERALITY_SNOMED = {"R": "24028007", "L": "7771000", "B": "51440002"}


@dataclasses.dataclass
class ExpectedStudy:
    """What the stored DICOM says about one study."""

    study_uid: str
    study_date: str = ""
    accession_number: str = ""
    patient_id: str = ""
    issuer: str = ""
    series: dict[str, set[str]] = dataclasses.field(default_factory=lambda: defaultdict(set))
    series_modality: dict[str, str] = dataclasses.field(default_factory=dict)
    # Laterality of the first stored instance of each series.
    series_laterality: dict[str, str] = dataclasses.field(default_factory=dict)
    sop_classes: set[str] = dataclasses.field(default_factory=set)

    @property
    def modalities(self) -> set[str]:
        """ModalitiesInStudy: the catalog keeps the last non-empty Modality of each series."""
        return {modality for modality in self.series_modality.values() if modality}

    @property
    def num_instances(self) -> int:
        return sum(len(instances) for instances in self.series.values())


@dataclasses.dataclass
class FhirArchive:
    base_url: str
    studies: dict[str, ExpectedStudy]

    @property
    def fhir(self) -> str:
        return f"{self.base_url}/fhir"


def validate(resource: dict):
    """Validates one resource (and, for a Bundle, every entry) with its R4 model."""
    model = MODELS[resource["resourceType"]]
    parsed = model.model_validate(resource)
    if resource["resourceType"] == "Bundle":
        for entry in resource.get("entry", []):
            validate(entry["resource"])
    return parsed


def fhir_get(url: str, **params) -> requests.Response:
    response = requests.get(url, params=params or None, headers={"Accept": FHIR_JSON}, timeout=TIMEOUT)
    assert response.headers.get("Content-Type", "").startswith(FHIR_JSON), response.text[:500]
    validate(response.json())
    return response


def search(archive: FhirArchive, query: str) -> dict:
    response = requests.get(f"{archive.fhir}/ImagingStudy?{query}", headers={"Accept": FHIR_JSON}, timeout=TIMEOUT)
    assert response.status_code == 200, f"{query}: {response.status_code} {response.text[:500]}"
    bundle = response.json()
    validate(bundle)
    assert bundle["type"] == "searchset"
    return bundle


def matched_ids(bundle: dict) -> list[str]:
    return [entry["resource"]["id"] for entry in bundle.get("entry", []) if entry["search"]["mode"] == "match"]


def all_ids(archive: FhirArchive, query: str) -> set[str]:
    """Follows the next links of a search and returns every matched id."""
    bundle = search(archive, f"{query}&_count=200" if query else "_count=200")
    ids = matched_ids(bundle)
    assert len(ids) == bundle["total"], "one page holds every match at _count=200"
    return set(ids)


@pytest.fixture(scope="module")
def fhir_archive(start_archive) -> FhirArchive:
    archive = start_archive("fhir")
    candidates = e2e_support.one_per_same_instance_group(
        entry for entry in e2e_support.load_manifest() if entry.is_accept and entry.has_hierarchy_uids
    )
    studies: dict[str, ExpectedStudy] = {}
    for entry in candidates:
        data = entry.read_bytes()
        result = e2e_support.stow_raw(archive.base_url, [data])
        if entry.sop_instance_uid not in result.referenced_sop_instance_uids:
            continue
        dataset = e2e_support.read_dataset(data)
        study = studies.setdefault(entry.study_instance_uid, ExpectedStudy(entry.study_instance_uid))
        # The catalog keeps the last non-empty value of an attribute (merge on store).
        for attribute, keyword in (
            ("study_date", "StudyDate"),
            ("accession_number", "AccessionNumber"),
            ("patient_id", "PatientID"),
            ("issuer", "IssuerOfPatientID"),
        ):
            value = str(dataset.get(keyword, "") or "").strip()
            if value:
                setattr(study, attribute, value)
        study.series[entry.series_instance_uid].add(entry.sop_instance_uid)
        if entry.series_instance_uid not in study.series_laterality:
            study.series_laterality[entry.series_instance_uid] = str(dataset.get("Laterality", "") or "").strip()
        modality = str(dataset.get("Modality", "") or "").strip()
        if modality:
            study.series_modality[entry.series_instance_uid] = modality
        study.sop_classes.add(str(dataset.SOPClassUID))
    assert len(studies) >= 10, "the corpus stores at least ten studies"
    return FhirArchive(base_url=archive.base_url, studies=studies)


def dcmtk_tool(name: str) -> str | None:
    """Returns the path of dcmtk's `name`, skipping same-named tools of other packages."""
    for directory in [*os.environ.get("PATH", "").split(os.pathsep), "/usr/bin"]:
        candidate = os.path.join(directory, name)
        if not os.access(candidate, os.X_OK):
            continue
        version = subprocess.run([candidate, "--version"], capture_output=True, text=True, check=False)
        if "dcmtk" in (version.stdout + version.stderr).lower():
            return candidate
    return None


def test_capability_statement_and_endpoint(fhir_archive: FhirArchive) -> None:
    capability = fhir_get(f"{fhir_archive.fhir}/metadata").json()
    assert capability["fhirVersion"] == "4.0.1"
    resources = {resource["type"]: resource for resource in capability["rest"][0]["resource"]}
    assert set(resources) == {"ImagingStudy", "Patient", "Endpoint"}
    names = {parameter["name"] for parameter in resources["ImagingStudy"]["searchParam"]}
    assert {"identifier", "patient", "started", "modality", "series", "dicom-class", "status"} <= names
    assert set(resources["ImagingStudy"]["searchInclude"]) == {"ImagingStudy:patient", "ImagingStudy:endpoint"}
    endpoint = fhir_get(f"{fhir_archive.fhir}/Endpoint/dicomweb").json()
    assert endpoint["connectionType"]["code"] == "dicom-wado-rs"
    assert endpoint["address"] == f"{fhir_archive.base_url}/dicomweb"
    # The Endpoint really is the DICOMweb base: QIDO-RS answers under it.
    assert requests.get(f"{endpoint['address']}/studies", timeout=TIMEOUT).status_code == 200


def test_every_study_matches_the_stored_dicom(fhir_archive: FhirArchive) -> None:
    bundle = search(fhir_archive, "_count=200")
    assert bundle["total"] == len(fhir_archive.studies)
    by_id = {entry["resource"]["id"]: entry["resource"] for entry in bundle["entry"]}
    assert set(by_id) == set(fhir_archive.studies)
    for study_uid, expected in fhir_archive.studies.items():
        study = by_id[study_uid]
        assert study["status"] == "available"
        assert {"system": "urn:dicom:uid", "value": f"urn:oid:{study_uid}", "use": "official"} in study["identifier"]
        assert study["numberOfSeries"] == len(expected.series)
        assert study["numberOfInstances"] == expected.num_instances
        assert {coding["code"] for coding in study.get("modality", [])} == expected.modalities
        assert all(coding["system"] == DCM for coding in study.get("modality", []))
        if len(expected.study_date) == 8:
            date = f"{expected.study_date[:4]}-{expected.study_date[4:6]}-{expected.study_date[6:]}"
            assert study["started"].startswith(date), study_uid
        else:
            assert "started" not in study
        series = {item["uid"]: item for item in study["series"]}
        assert set(series) == set(expected.series)
        for series_uid, instances in expected.series.items():
            assert {item["uid"] for item in series[series_uid]["instance"]} == instances
            assert series[series_uid]["numberOfInstances"] == len(instances)
            laterality = expected.series_laterality.get(series_uid, "")
            if laterality in LATERALITY_SNOMED:
                assert series[series_uid]["laterality"]["code"] == LATERALITY_SNOMED[laterality]
            else:
                assert "laterality" not in series[series_uid]
        sop_classes = {instance["sopClass"]["code"] for item in study["series"] for instance in item["instance"]}
        assert sop_classes == {f"urn:oid:{uid}" for uid in expected.sop_classes}
        if expected.accession_number:
            assert any(identifier.get("value") == expected.accession_number for identifier in study["identifier"])
    # Instance titles follow the DICOM mapping: a CT image without label or concept name is
    # titled by its Image Type.
    ct_instance = "1.3.6.1.4.1.5962.1.1.1.1.1.20040119072730.12322"
    titles = {
        instance["uid"]: instance.get("title")
        for study in by_id.values()
        for item in study["series"]
        for instance in item["instance"]
    }
    assert titles.get(ct_instance) == "ORIGINAL\\PRIMARY\\AXIAL", titles.get(ct_instance)


def test_read_etag_and_conditional_read(fhir_archive: FhirArchive) -> None:
    study_uid = sorted(fhir_archive.studies)[0]
    response = fhir_get(f"{fhir_archive.fhir}/ImagingStudy/{study_uid}")
    assert response.status_code == 200
    study = response.json()
    etag = response.headers["ETag"]
    assert etag == f'W/"{study["meta"]["versionId"]}"'
    assert study["meta"]["lastUpdated"].endswith("Z")
    conditional = requests.get(
        f"{fhir_archive.fhir}/ImagingStudy/{study_uid}", headers={"If-None-Match": etag}, timeout=TIMEOUT
    )
    assert conditional.status_code == 304
    stale = requests.get(
        f"{fhir_archive.fhir}/ImagingStudy/{study_uid}", headers={"If-None-Match": 'W/"1"'}, timeout=TIMEOUT
    )
    assert stale.status_code == 200
    patient_reference = study["subject"]["reference"]
    patient_response = fhir_get(f"{fhir_archive.fhir}/{patient_reference}")
    assert "ETag" in patient_response.headers
    missing = requests.get(f"{fhir_archive.fhir}/ImagingStudy/1.2.3.999", timeout=TIMEOUT)
    assert missing.status_code == 404
    validate(missing.json())


def test_patients_and_includes(fhir_archive: FhirArchive) -> None:
    bundle = search(fhir_archive, "_count=200&_include=ImagingStudy:patient&_include=ImagingStudy:endpoint")
    included = {
        f"{entry['resource']['resourceType']}/{entry['resource']['id']}": entry["resource"]
        for entry in bundle["entry"]
        if entry["search"]["mode"] == "include"
    }
    assert "Endpoint/dicomweb" in included
    for entry in bundle["entry"]:
        if entry["search"]["mode"] != "match":
            continue
        study = entry["resource"]
        expected = fhir_archive.studies[study["id"]]
        patient = included[study["subject"]["reference"]]
        identifiers = patient.get("identifier", [])
        if expected.patient_id:
            assert identifiers[0]["value"] == expected.patient_id
            if expected.issuer:
                assert identifiers[0]["system"] == strata_issuer_system(expected.issuer)
        # Search by the reference and by the chained identifier finds the study.
        assert study["id"] in all_ids(fhir_archive, f"patient={study['subject']['reference']}")
        assert study["id"] in all_ids(fhir_archive, f"subject={study['subject']['reference']}")
        if expected.patient_id:
            token = urllib.parse.quote(expected.patient_id, safe="")
            if expected.issuer:
                token = urllib.parse.quote(strata_issuer_system(expected.issuer), safe="") + "%7C" + token
            chained = all_ids(fhir_archive, f"patient.identifier={token}")
            assert study["id"] in chained
            assert all(fhir_archive.studies[uid].patient_id == expected.patient_id for uid in chained)
            patients = requests.get(f"{fhir_archive.fhir}/Patient?identifier={token}", timeout=TIMEOUT).json()
            validate(patients)
            assert study["subject"]["reference"] in {
                f"Patient/{entry['resource']['id']}" for entry in patients.get("entry", [])
            }
    any_patient = next(iter(included.values()))
    if any_patient["resourceType"] == "Patient" and any_patient.get("name"):
        family = any_patient["name"][0].get("family", "")
        if family and all(character not in family for character in "*?"):
            by_name = requests.get(f"{fhir_archive.fhir}/Patient", params={"name": family[:3]}, timeout=TIMEOUT).json()
            validate(by_name)
            assert any_patient["id"] in {entry["resource"]["id"] for entry in by_name.get("entry", [])}


def strata_issuer_system(issuer: str) -> str:
    """The documented Issuer of Patient ID -> identifier system mapping (docs/fhir.md)."""
    if all(part.isdigit() for part in issuer.split(".")):
        return f"urn:oid:{issuer}"
    if ":" in issuer:
        return issuer
    return "urn:strata:issuer:" + urllib.parse.quote(issuer, safe="-._~")


def test_search_parameters(fhir_archive: FhirArchive) -> None:
    studies = fhir_archive.studies
    everything = set(studies)
    some_uid = sorted(studies)[0]
    assert all_ids(fhir_archive, f"_id={some_uid}") == {some_uid}
    assert all_ids(fhir_archive, f"identifier=urn:dicom:uid%7Curn:oid:{some_uid}") == {some_uid}
    assert all_ids(fhir_archive, f"identifier=urn:oid:{some_uid}") == {some_uid}
    with_accession = [study for study in studies.values() if study.accession_number]
    for study in with_accession[:3]:
        expected = {uid for uid, other in studies.items() if other.accession_number == study.accession_number}
        assert all_ids(fhir_archive, f"identifier={urllib.parse.quote(study.accession_number)}") == expected

    for modality in sorted({modality for study in studies.values() for modality in study.modalities}):
        expected = {uid for uid, study in studies.items() if modality in study.modalities}
        assert all_ids(fhir_archive, f"modality={modality}") == expected
        assert all_ids(fhir_archive, f"modality={urllib.parse.quote(DCM, safe='')}%7C{modality}") == expected

    some_series = next(iter(studies[some_uid].series))
    assert all_ids(fhir_archive, f"series={some_series}") == {some_uid}
    for sop_class in sorted({uid for study in studies.values() for uid in study.sop_classes})[:4]:
        expected = {uid for uid, study in studies.items() if sop_class in study.sop_classes}
        assert all_ids(fhir_archive, f"dicom-class=urn:oid:{sop_class}") == expected
        assert all_ids(fhir_archive, f"dicom-class={sop_class}") == expected

    assert all_ids(fhir_archive, "status=available") == everything
    assert all_ids(fhir_archive, "status=cancelled") == set()

    # started, with every prefix, around the median study date. The catalog compares DICOM
    # dates as text (a non-standard stored date like `1999.05.24` compares as text too), with
    # an upper bound covering every value that starts with it.
    dated = {uid: study.study_date for uid, study in studies.items() if len(study.study_date) == 8}
    non_empty = {uid: study.study_date for uid, study in studies.items() if study.study_date}
    assert len(dated) >= 3
    pivot = sorted(dated.values())[len(dated) // 2]
    pivot_day = datetime.date(int(pivot[:4]), int(pivot[4:6]), int(pivot[6:]))
    next_day = (pivot_day + datetime.timedelta(days=1)).strftime("%Y%m%d")
    previous_day = (pivot_day - datetime.timedelta(days=1)).strftime("%Y%m%d")
    pivot_fhir = pivot_day.isoformat()
    expectations = {
        "eq": {uid for uid, date in non_empty.items() if pivot <= date <= pivot + "~"},
        "ge": {uid for uid, date in non_empty.items() if date >= pivot},
        "gt": {uid for uid, date in non_empty.items() if date >= next_day},
        "le": {uid for uid, date in non_empty.items() if date <= pivot + "~"},
        "lt": {uid for uid, date in non_empty.items() if date <= previous_day + "~"},
    }
    assert expectations["eq"] and expectations["gt"] and expectations["lt"]
    for prefix, expected in expectations.items():
        assert all_ids(fhir_archive, f"started={prefix}{pivot_fhir}") == expected, prefix
    assert all_ids(fhir_archive, f"started={pivot_fhir}") == expectations["eq"]
    year = pivot[:4]
    in_year = {uid for uid, date in non_empty.items() if year <= date <= year + "~"}
    assert all_ids(fhir_archive, f"started={year}") == in_year
    assert all_ids(fhir_archive, f"started=ge{year}&started=le{year}") == in_year

    # _sort by started: studies in stored-date order, undated last.
    ordered = matched_ids(search(fhir_archive, "_sort=started&_count=200"))
    dates = [non_empty[uid] for uid in ordered if uid in non_empty]
    assert dates == sorted(dates)
    assert set(ordered[: len(non_empty)]) == set(non_empty)
    descending = matched_ids(search(fhir_archive, "_sort=-started&_count=200"))
    descending_dates = [non_empty[uid] for uid in descending if uid in non_empty]
    assert descending_dates == sorted(dates, reverse=True)
    assert set(descending[: len(non_empty)]) == set(non_empty)

    # _lastUpdated: everything was stored in the last day, nothing in the future.
    assert all_ids(fhir_archive, "_lastUpdated=ge2000-01-01") == everything
    assert all_ids(fhir_archive, "_lastUpdated=gt2999-01-01") == set()
    assert all_ids(fhir_archive, "_lastUpdated=lt2000-01-01T00:00:00Z") == set()


def test_paging_across_pages(fhir_archive: FhirArchive) -> None:
    for order in ("", "&_sort=-started"):
        url = f"{fhir_archive.fhir}/ImagingStudy?_count=7{order}"
        seen: list[str] = []
        num_pages = 0
        while url:
            response = requests.get(url, timeout=TIMEOUT)
            assert response.status_code == 200
            bundle = response.json()
            validate(bundle)
            assert bundle["total"] == len(fhir_archive.studies)
            links = {link["relation"]: link["url"] for link in bundle["link"]}
            assert ("previous" in links) == (num_pages > 0)
            seen.extend(matched_ids(bundle))
            num_pages += 1
            url = links.get("next")
        assert len(seen) == len(set(seen)), "no study is repeated across pages"
        assert set(seen) == set(fhir_archive.studies), "no study is skipped"
        assert num_pages == -(-len(fhir_archive.studies) // 7)


@pytest.mark.parametrize(
    ("query", "status", "code"),
    [
        ("unknown-parameter=1", 400, "not-supported"),
        ("started=ne2020-01-01", 400, "not-supported"),
        ("started=2020-13-01", 400, "invalid"),
        ("started=yesterday", 400, "invalid"),
        ("_lastUpdated=soon", 400, "invalid"),
        ("modality=http://loinc.org%7CCT", 400, "invalid"),
        ("patient=Group/1", 400, "not-supported"),
        ("patient=not-a-number", 400, "invalid"),
        ("identifier=urn:dicom:uid%7C1.2.3", 400, "invalid"),
        ("status=finished", 400, "invalid"),
        ("_count=many", 400, "invalid"),
        ("_sort=modality", 400, "not-supported"),
        ("_include=ImagingStudy:basedon", 400, "not-supported"),
        ("series=" + "1" * 70, 400, "invalid"),
        ("_format=xml", 406, "not-supported"),
    ],
)
def test_errors_are_operation_outcomes(fhir_archive: FhirArchive, query: str, status: int, code: str) -> None:
    response = requests.get(f"{fhir_archive.fhir}/ImagingStudy?{query}", timeout=TIMEOUT)
    assert response.status_code == status, response.text[:300]
    assert response.headers["Content-Type"].startswith(FHIR_JSON)
    outcome = response.json()
    validate(outcome)
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["code"] == code
    assert outcome["issue"][0]["severity"] == "error"


def test_patient_search_errors(fhir_archive: FhirArchive) -> None:
    response = requests.get(f"{fhir_archive.fhir}/Patient?birthdate=2000", timeout=TIMEOUT)
    assert response.status_code == 400
    validate(response.json())
    response = requests.get(f"{fhir_archive.fhir}/Patient/not-a-patient", timeout=TIMEOUT)
    assert response.status_code == 404
    validate(response.json())


# ----------------------------------------------------------------- studies stored via DIMSE

DIMSE_ADDR = re.compile(r"dimse_addr=(\S+)")


def test_studies_stored_through_dimse_are_imaging_studies(start_archive) -> None:
    """C-STORE (dcmtk storescu) then FHIR: the same catalog answers, whatever the protocol."""
    # pynetdicom installs a Python `storescu` that can shadow dcmtk's on PATH: take the first
    # one that is dcmtk's.
    storescu = dcmtk_tool("storescu")
    if storescu is None:
        pytest.fail("dcmtk storescu is missing (.ci/install.sh installs dcmtk)", pytrace=False)
    archive = start_archive("fhir-dimse")
    address = DIMSE_ADDR.search(archive.server.log_text())
    assert address, "the node logs dimse_addr=HOST:PORT when its DIMSE listener is ready"
    host, port = address.group(1).rsplit(":", 1)
    entries = [
        entry
        for entry in e2e_support.one_per_same_instance_group(e2e_support.load_manifest())
        if entry.category == "valid" and entry.is_accept and entry.has_hierarchy_uids
    ][:6]
    assert len(entries) >= 3
    completed = subprocess.run(
        [storescu, "-aet", "FHIRTEST", "-aec", "STRATA", host, port, *[str(entry.file_path) for entry in entries]],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    fhir = f"{archive.base_url}/fhir"
    expected: dict[str, set[str]] = defaultdict(set)
    for entry in entries:
        expected[entry.study_instance_uid].add(entry.sop_instance_uid)
    bundle = requests.get(f"{fhir}/ImagingStudy", params={"_count": "200"}, timeout=TIMEOUT).json()
    validate(bundle)
    by_id = {entry["resource"]["id"]: entry["resource"] for entry in bundle.get("entry", [])}
    assert set(by_id) == set(expected)
    for study_uid, sop_instance_uids in expected.items():
        study = by_id[study_uid]
        assert study["numberOfInstances"] == len(sop_instance_uids)
        assert {instance["uid"] for series in study["series"] for instance in series["instance"]} == sop_instance_uids
        modalities = {entry.modality for entry in entries if entry.study_instance_uid == study_uid}
        assert {coding["code"] for coding in study["modality"]} == modalities
