"""The SMART app's patient banner reads what it can of a Patient and never fails on odd shapes."""

from __future__ import annotations

from typing import Any

import pytest

from smart_app.details import banner
from smart_app.record import PatientRecord

WRONG = [5, "x", None, True, {}, [5], [None], {"a": 1}]


def patient(**fields: Any) -> dict[str, Any]:
    return {"resourceType": "Patient", "id": "p1"} | fields


def test_a_well_formed_patient_gives_name_sex_birth_date_and_identifier() -> None:
    shown = banner(
        PatientRecord(
            patient(
                name=[{"given": ["Mi", "Young"], "family": "Kim"}],
                gender="female",
                birthDate="1950-02-28",
                identifier=[{"value": "MRN-1"}],
            )
        ),
        "p1",
    )
    assert (shown.name, shown.gender, shown.birth_date, shown.identifier) == (
        "Mi Young Kim",
        "female",
        "1950-02-28",
        "MRN-1",
    )


@pytest.mark.parametrize("value", WRONG)
@pytest.mark.parametrize("element", ["name", "given", "family", "text", "gender", "birthDate", "identifier"])
def test_an_element_of_the_wrong_type_is_left_out_of_the_banner(element: str, value: Any) -> None:
    name: dict[str, Any] = {"given": ["Mi"], "family": "Kim"}
    fields: dict[str, Any] = {"name": [name], "gender": "female", "birthDate": "1950-02-28"}
    if element in ("given", "family", "text"):
        name[element] = value
    else:
        fields[element] = value
    shown = banner(PatientRecord(patient(**fields)), "p1")
    assert shown.patient_id == "p1"
