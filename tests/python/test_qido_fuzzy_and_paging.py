"""QIDO-RS `fuzzymatching=true` on person names and the total-count header, driven with
dicomweb-client and raw HTTP against a fresh archive (both backends)."""

from __future__ import annotations

import pydicom
import pytest
import requests
from dicomweb_client import DICOMwebClient
from pydicom.uid import generate_uid

import e2e_support

PATIENTS = [
    # (PatientName, ReferringPhysicianName, SpecificCharacterSet)
    ("Müller^Jürgen", "Papadopoulos^Eleni", "ISO_IR 192"),
    ("MULLER^Hans-Peter", "Kowalski^Jan", "ISO_IR 192"),
    ("Smith^John^^Dr", "Müller^Anna", "ISO_IR 192"),
    ("Doe^Jane", "Smith^Robert", "ISO_IR 192"),
    ("O'Brien^Seán", "Lefèvre^Zoë", "ISO_IR 192"),
]


def instance(patient_name: str, referring: str, charset: str) -> bytes:
    return e2e_support.synthetic_ct(
        PatientName=patient_name,
        PatientID=generate_uid()[-12:],
        ReferringPhysicianName=referring,
        SpecificCharacterSet=charset,
        StudyDate="20240102",
    )


@pytest.fixture(scope="module")
def fuzzy_archive(start_archive):
    archive = start_archive("qido_fuzzy")
    result = e2e_support.stow_raw(archive.base_url, [instance(*patient) for patient in PATIENTS])
    assert len(result.referenced_sop_instance_uids) == len(PATIENTS), result.describe()
    return archive


def names_found(archive, key: str, value: str, fuzzy: bool) -> list[str]:
    client = DICOMwebClient(url=archive.dicomweb_url)
    studies = client.search_for_studies(search_filters={key: value}, fuzzymatching=fuzzy)
    return sorted(str(pydicom.Dataset.from_json(study).PatientName) for study in studies)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("muller", ["MULLER^Hans-Peter", "Müller^Jürgen"]),  # accents and case folded
        ("jurgen müller", ["Müller^Jürgen"]),  # any order
        ("MÜL", ["MULLER^Hans-Peter", "Müller^Jürgen"]),  # word prefixes
        ("peter", ["MULLER^Hans-Peter"]),  # hyphenated parts are words
        ("john smith", ["Smith^John^^Dr"]),
        ("sean o", ["O'Brien^Seán"]),
        ("ller", []),  # a word's middle is not a match
        ("smith jane", []),  # every word must match
        ("jo*", ["Smith^John^^Dr"]),  # wildcards are word breaks
    ],
)
def test_fuzzymatching_on_patient_name(fuzzy_archive, value: str, expected: list[str]) -> None:
    assert names_found(fuzzy_archive, "PatientName", value, fuzzy=True) == expected


def test_fuzzymatching_off_is_literal(fuzzy_archive) -> None:
    assert names_found(fuzzy_archive, "PatientName", "muller", fuzzy=False) == []
    assert names_found(fuzzy_archive, "PatientName", "MULLER^*", fuzzy=False) == ["MULLER^Hans-Peter"]


def test_fuzzymatching_on_referring_physician(fuzzy_archive) -> None:
    assert names_found(fuzzy_archive, "ReferringPhysicianName", "muller anna", fuzzy=True) == ["Smith^John^^Dr"]
    assert names_found(fuzzy_archive, "ReferringPhysicianName", "zoe lefevre", fuzzy=True) == ["O'Brien^Seán"]


def test_percent_encoded_fuzzy_value(fuzzy_archive) -> None:
    response = requests.get(
        f"{fuzzy_archive.dicomweb_url}/studies?PatientName=J%C3%BCrgen%20M%C3%BCller&fuzzymatching=true",
        timeout=30,
    )
    assert response.status_code == 200
    assert len(response.json()) == 1


def test_fuzzymatching_value_must_be_boolean(fuzzy_archive) -> None:
    response = requests.get(f"{fuzzy_archive.dicomweb_url}/studies?fuzzymatching=yes", timeout=30)
    assert response.status_code == 400
    assert "fuzzymatching" in response.json()["detail"]


def test_total_count_header_over_pages(fuzzy_archive) -> None:
    url = f"{fuzzy_archive.dicomweb_url}/studies"
    seen = []
    offset = 0
    while True:
        response = requests.get(url, params={"limit": 2, "offset": offset}, timeout=30)
        assert response.status_code == 200
        assert response.headers["X-Total-Count"] == str(len(PATIENTS))
        page = response.json()
        if not page:
            break
        seen.extend(study["0020000D"]["Value"][0] for study in page)
        truncated = any("offset" in warning for warning in response.headers.get("Warning", "").split(","))
        assert truncated == (offset + len(page) < len(PATIENTS))
        offset += len(page)
    assert len(seen) == len(set(seen)) == len(PATIENTS), "pages never skip or repeat"
    # Past the end: no results, the total still counted.
    response = requests.get(url, params={"offset": 50}, timeout=30)
    assert response.status_code == 200
    assert response.json() == [] and response.headers["X-Total-Count"] == str(len(PATIENTS))
    filtered = requests.get(url, params={"PatientName": "doe*", "fuzzymatching": "true"}, timeout=30)
    assert filtered.headers["X-Total-Count"] == "1"
