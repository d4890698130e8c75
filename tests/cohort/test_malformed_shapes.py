"""Resources of the wrong shape never stop the extraction: each element, swapped for JSON of another
type, still gives a first dose or none, and a row, by the same rules (nothing is guessed from it).

Bulk Data exports hold what the source systems wrote. The engines parse lines with a schema that
turns a wrongly typed element into NULL, so Python receives such lines; it must read what it can and
skip the rest, as the CDS service does with the same mappers.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest

from cohort.definition import CohortDefinition, load_definition
from cohort.doses import DoseCandidate, first_dose
from cohort.records import patient_row
from tests.cohort.conftest import CUTOFF, LOINC, SNOMED, administration, count, rxnorm

PATIENT = "Patient/shape"
#: JSON of every type, put in place of each element in turn.
WRONG = [5, 1.5, "x", "", True, None, [], {}, [5], ["x"], [None], {"x": 5}]


def resources() -> list[dict[str, Any]]:
    """One patient with every kind of resource and element the row builder reads."""
    ms = {"system": "http://unitsofmeasure.org"}
    return [
        {
            "resourceType": "Patient",
            "id": "shape",
            "gender": "female",
            "birthDate": "1950-02-28",
            "deceasedDateTime": "2023-01-05",
            "meta": {"tag": [{"system": "http://example.org/tags", "code": "t"}]},
        },
        {
            "resourceType": "Observation",
            "id": "cbc",
            "status": "final",
            "code": {"coding": [{"system": LOINC, "code": "57021-8"}]},
            "subject": {"reference": PATIENT},
            "effectivePeriod": {"start": "2022-03-01T08:00:00+09:00", "end": "2022-03-01T08:05:00+09:00"},
            "hasMember": [{"reference": "Observation/n"}, {"reference": "Observation/ig"}],
        },
        count("n", PATIENT, "751-8", "9.5", "10*3/uL", when=None),
        count("ig", PATIENT, "53115-2", "0.09", "10*3/uL", when=None),
        {
            "resourceType": "Observation",
            "id": "diff",
            "status": "final",
            "code": {"coding": [{"system": LOINC, "code": "57782-5"}]},
            "subject": {"reference": PATIENT},
            "effectiveDateTime": "2022-03-01T09:00:00+09:00",
            "component": [
                {
                    "code": {"coding": [{"system": LOINC, "code": "6690-2"}]},
                    "valueQuantity": {"value": Decimal("10.0"), "unit": "10*3/uL", "code": "10*3/uL"} | ms,
                }
            ],
        },
        {
            "resourceType": "Observation",
            "id": "ecog",
            "status": "final",
            "code": {"coding": [{"system": LOINC, "code": "89247-1"}]},
            "subject": {"reference": PATIENT},
            "effectiveDateTime": "2022-02-20",
            "valueCodeableConcept": {"coding": [{"system": LOINC, "code": "LA9623-5"}]},
        },
        {
            "resourceType": "Observation",
            "id": "pdl1",
            "status": "final",
            "code": {"coding": [{"system": LOINC, "code": "83053-9"}]},
            "subject": {"reference": PATIENT},
            "effectiveDateTime": "2022-01-10",
            "valueQuantity": {"value": 60, "comparator": ">=", "unit": "%", "code": "%"} | ms,
        },
        {
            "resourceType": "Observation",
            "id": "smoking",
            "status": "final",
            "code": {"coding": [{"system": LOINC, "code": "72166-2"}]},
            "subject": {"reference": PATIENT},
            "effectiveDateTime": "2022-01-10",
            "valueCodeableConcept": {"coding": [{"system": SNOMED, "code": "266919005"}]},
        },
        {
            "resourceType": "Observation",
            "id": "pd",
            "status": "final",
            "code": {"coding": [{"system": LOINC, "code": "97509-4"}]},
            "subject": {"reference": PATIENT},
            "effectiveDateTime": "2022-06-01",
            "valueCodeableConcept": {"coding": [{"system": SNOMED, "code": "271299001"}]},
        },
        {
            "resourceType": "Condition",
            "id": "dx",
            "code": {"coding": [{"system": SNOMED, "code": "254626006"}]},
            "verificationStatus": {"coding": [{"system": "x", "code": "confirmed"}]},
            "subject": {"reference": PATIENT},
            "onsetPeriod": {"start": "2021-12-01"},
            "recordedDate": "2021-12-02",
        },
    ]


def dose_resources() -> list[dict[str, Any]]:
    return [
        administration("given", PATIENT, "2022-03-02T10:30:00+09:00", **rxnorm("1547545")),
        {
            "resourceType": "MedicationRequest",
            "id": "ordered",
            "status": "completed",
            "subject": {"reference": PATIENT},
            "authoredOn": "2022-03-01T09:00:00+09:00",
            "contained": [
                {
                    "resourceType": "Medication",
                    "id": "m",
                    "code": {"text": "Keytruda"},
                    "ingredient": [{"itemCodeableConcept": {"coding": [{"system": "x", "code": "y"}]}}],
                }
            ],
            "medicationReference": {"reference": "#m", "display": "pembrolizumab"},
        },
    ]


def paths(node: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every element's path below the resource root (resourceType and id stay: they route lines)."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, child in items:
        if prefix == () and key in ("resourceType", "id"):
            continue
        yield (*prefix, key)
        yield from paths(child, (*prefix, key))


def replaced(resource: dict[str, Any], path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    changed = copy.deepcopy(resource)
    node = changed
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return changed


def line(resource: dict[str, Any]) -> str:
    return json.dumps(resource, default=lambda d: float(d) if isinstance(d, Decimal) else str(d))


def mutations(pool: list[dict[str, Any]]) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    for index, resource in enumerate(pool):
        for path in paths(resource):
            for value in WRONG:
                label = f"{resource['id']}.{'.'.join(map(str, path))}={json.dumps(value)}"
                yield label, [*pool[:index], replaced(resource, path, value), *pool[index + 1 :]]


@pytest.fixture(scope="module")
def definition() -> CohortDefinition:
    return load_definition({}, CUTOFF)


def candidates(pool: list[dict[str, Any]]) -> list[DoseCandidate]:
    found = []
    for resource in pool:
        time = resource.get("effectiveDateTime") or resource.get("authoredOn")
        time = time if isinstance(time, str) else None
        found.append(DoseCandidate(resource["resourceType"], time, line(resource), None))
    return found


def test_the_unchanged_patient_gets_a_full_row(definition: CohortDefinition) -> None:
    dose = first_dose("shape", candidates(dose_resources()), definition)
    assert dose is not None
    row = patient_row(dose, [(r["resourceType"], line(r)) for r in resources()], definition)
    assert row is not None
    assert (row["ichis"], row["ecog"], row["pdl1_category"], row["smoking"], row["histology"]) == (
        2,
        1,
        ">=50%",
        "Never",
        "Non-SqCC",
    )


def test_every_wrongly_typed_element_of_a_dose_gives_a_dose_or_none(definition: CohortDefinition) -> None:
    checked = 0
    for label, pool in mutations(dose_resources()):
        try:
            first_dose("shape", candidates(pool), definition)
        except Exception as error:  # noqa: BLE001 - the test names the element that broke it
            pytest.fail(f"{label}: {type(error).__name__}: {error}")
        checked += 1
    assert checked > 300


def test_every_wrongly_typed_element_of_a_record_still_gives_a_row(definition: CohortDefinition) -> None:
    dose = first_dose("shape", candidates(dose_resources()), definition)
    assert dose is not None
    checked = 0
    for label, pool in mutations(resources()):
        try:
            row = patient_row(dose, [(r["resourceType"], line(r)) for r in pool], definition)
        except Exception as error:  # noqa: BLE001 - as above
            pytest.fail(f"{label}: {type(error).__name__}: {error}")
        assert row is not None, label
        assert row["patient_id"] == "shape", label
        checked += 1
    assert checked > 1500
