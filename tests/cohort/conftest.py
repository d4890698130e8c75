"""Fixtures of the cohort tests: a small synthetic cohort with hand-made edge cases, and the engines."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from cohort.definition import CohortDefinition, load_definition
from cohort.engines import DuckDBEngine, SparkEngine
from cohort.synth import SynthOptions, write_cohort

CUTOFF = date(2023, 8, 31)
LOINC = "http://loinc.org"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
SNOMED = "http://snomed.info/sct"


@pytest.fixture
def definition() -> CohortDefinition:
    """The shipped tables with the default cohort rules and the tests' cut-off."""
    return load_definition({}, CUTOFF)


def count(
    oid: str, patient: str, code: str, value: str, unit: str, *, when: str | None, **extra: Any
) -> dict[str, Any]:
    """A lab Observation with a valueQuantity (decimal exact)."""
    obs: dict[str, Any] = {
        "resourceType": "Observation",
        "id": oid,
        "status": "final",
        "code": {"coding": [{"system": LOINC, "code": code}]},
        "subject": {"reference": patient},
        "valueQuantity": {
            "value": Decimal(value),
            "unit": unit,
            "system": "http://unitsofmeasure.org",
            "code": unit,
        },
    }
    if when:
        obs["effectiveDateTime"] = when
    return obs | extra


def administration(
    aid: str, patient: str, when: str, *, status: str = "completed", **medication: Any
) -> dict[str, Any]:
    return {
        "resourceType": "MedicationAdministration",
        "id": aid,
        "status": status,
        "subject": {"reference": patient},
        "effectiveDateTime": when,
        **medication,
    }


def rxnorm(code: str) -> dict[str, Any]:
    return {"medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": code}]}}


def edge_cases() -> list[dict[str, Any]]:
    """Patients whose records take the less travelled paths of the extraction."""
    base = "https://fhir.example.org/R4/Patient/edge-panel"
    return [
        # A panel whose members have no time of their own (they take the panel's), an absolute
        # subject reference, and an earlier administration entered in error.
        {"resourceType": "Patient", "id": "edge-panel", "gender": "female", "birthDate": "1950-02-28"},
        {
            "resourceType": "Observation",
            "id": "edge-panel-cbc",
            "status": "final",
            "code": {"coding": [{"system": LOINC, "code": "57021-8"}]},
            "subject": {"reference": base},
            "effectiveDateTime": "2022-03-02T08:00:00+09:00",
            "hasMember": [
                {"reference": "Observation/edge-panel-n"},
                {"reference": "Observation/edge-panel-ig"},
            ],
        },
        count("edge-panel-n", base, "751-8", "9.5", "10*3/uL", when=None),
        count("edge-panel-ig", base, "53115-2", "0.09", "10*3/uL", when=None),
        administration(
            "edge-panel-x", base, "2022-02-01T10:00:00+09:00", status="entered-in-error", **rxnorm("1547545")
        ),
        administration("edge-panel-1", base, "2022-03-02T10:30:00+09:00", **rxnorm("1547545")),
        # Only an order (no administration), the drug named in a contained Medication, IG# derived
        # from IG% x WBC, and death recorded as a date without a time.
        {
            "resourceType": "Patient",
            "id": "edge-order",
            "gender": "male",
            "birthDate": "1955-06-01",
            "deceasedDateTime": "2022-08-01",
        },
        {
            "resourceType": "MedicationRequest",
            "id": "edge-order-1",
            "status": "completed",
            "intent": "order",
            "subject": {"reference": "Patient/edge-order"},
            "authoredOn": "2022-04-10T09:00:00+09:00",
            "contained": [{"resourceType": "Medication", "id": "m", "code": {"text": "Tecentriq 1200 mg"}}],
            "medicationReference": {"reference": "#m"},
        },
        count(
            "edge-order-wbc",
            "Patient/edge-order",
            "6690-2",
            "10.00",
            "10*3/uL",
            when="2022-04-09T08:00:00+09:00",
        ),
        count(
            "edge-order-igp", "Patient/edge-order", "71695-1", "0.8", "%", when="2022-04-09T08:00:00+09:00"
        ),
        count(
            "edge-order-n", "Patient/edge-order", "751-8", "4.1", "10*3/uL", when="2022-04-09T08:00:00+09:00"
        ),
    ]


def write_ndjson_gz(path: Path, resources: list[dict[str, Any]]) -> None:
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        for resource in resources:
            handle.write(json.dumps(resource, default=str) + "\n")


@pytest.fixture(scope="session")
def small_cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """60 synthetic patients (every file type, cycles of blood counts) plus the edge cases, gzipped."""
    folder = tmp_path_factory.mktemp("small-cohort")
    write_cohort(folder, 60, seed=11, cutoff=CUTOFF, options=SynthOptions(labs_per_cycle=True))
    by_type: dict[str, list[dict[str, Any]]] = {}
    for resource in edge_cases():
        by_type.setdefault(resource["resourceType"], []).append(resource)
    for kind, resources in by_type.items():
        # Valid JSON numbers: Decimal values are written as their text by default=str, so fix them up.
        write_ndjson_gz(folder / f"edge.{kind}.ndjson.gz", json.loads(json.dumps(resources, default=_number)))
    return folder


def _number(value: Any) -> Any:
    return float(value) if isinstance(value, Decimal) else str(value)


@pytest.fixture(scope="session")
def spark() -> Iterator[SparkEngine]:
    """One local Spark session for the whole test run (JVM start-up is the slow part)."""
    engine = SparkEngine("local[2]")
    yield engine
    engine.close()


@pytest.fixture
def duckdb_engine() -> Iterator[DuckDBEngine]:
    engine = DuckDBEngine()
    yield engine
    engine.close()
