"""The engines only narrow: every row equals the row built from all of the patient's resources.

The SQL plan keeps Observations in windows around the first dose and drops the rest before Python
sees them. That is safe only if nothing it drops could change a row. These tests build each row
twice, once from the engine's candidates and once from every resource the patient has (read here
line by line, which is fine for a test cohort), and require the two to be equal, column for column,
notes and reasons included.
"""

from __future__ import annotations

import gzip
import json
import re
from collections.abc import Iterator
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from cohort.definition import CohortDefinition, load_definition
from cohort.engines import DuckDBEngine, SparkEngine
from cohort.extract import extract_rows, first_doses
from cohort.plan import RESOURCE_TYPES, view_of
from cohort.records import patient_row
from cohort.sources import discover
from tests.cohort.conftest import (
    CUTOFF,
    LOINC,
    RXNORM,
    SNOMED,
    administration,
    count,
    rxnorm,
    write_ndjson_gz,
)

REGISTRY = "http://hospital.example/death-registry"

#: A site that also reads deaths from a registry Observation whose value is the date of death.
SITE = {
    "cohort": {
        "death": {"rules": [{"resource": "Observation", "codes": [{"system": REGISTRY, "code": "death"}]}]},
    }
}


def registry_death(oid: str, patient: str, **when: Any) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": oid,
        "status": "final",
        "code": {"coding": [{"system": REGISTRY, "code": "death"}]},
        "subject": {"reference": patient},
        **when,
    }


def disease_status(oid: str, patient: str, answer: str, **when: Any) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": oid,
        "status": "final",
        "code": {"coding": [{"system": LOINC, "code": "97509-4"}]},
        "subject": {"reference": patient},
        "valueCodeableConcept": {"coding": [{"system": SNOMED, "code": answer}]},
        **when,
    }


def ecog(oid: str, patient: str, value: int, when: str) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": oid,
        "status": "final",
        "code": {"coding": [{"system": LOINC, "code": "89247-1"}]},
        "subject": {"reference": patient},
        "effectiveDateTime": when,
        "valueInteger": value,
    }


def premedication(aid: str, patient: str, when: str) -> dict[str, Any]:
    """Dexamethasone whose dosage note names the checkpoint inhibitor it is given before."""
    return administration(
        aid,
        patient,
        when,
        medicationCodeableConcept={"coding": [{"system": RXNORM, "code": "3264"}], "text": "dexamethasone"},
        dosage={"text": "IV 30 minutes before pembrolizumab"},
    )


def pembrolizumab_order(
    rid: str, patient: str, authored: str, *, status: str = "active", intent: str = "order"
) -> dict[str, Any]:
    return {
        "resourceType": "MedicationRequest",
        "id": rid,
        "status": status,
        "intent": intent,
        "subject": {"reference": patient},
        "authoredOn": authored,
        **rxnorm("1547545"),
    }


def late_records() -> list[dict[str, Any]]:
    """Patients whose events and covariates sit at the edges of the windows the engines apply."""
    late, early, edges = "Patient/edge-late", "Patient/edge-early", "Patient/edge-window"
    premed = "Patient/edge-premed"
    return [
        # Six premedications that mention the drug come before the first real dose.
        {"resourceType": "Patient", "id": "edge-premed", "gender": "male", "birthDate": "1952-11-30"},
        *(premedication(f"edge-premed-{i}", premed, f"2022-08-0{i}T08:00:00+09:00") for i in range(1, 7)),
        premedication("edge-premed-7", premed, "2022-08-08T08:00:00+09:00"),
        administration("edge-premed-ici", premed, "2022-08-08T09:00:00+09:00", **rxnorm("1547545")),
        administration("edge-premed-ici-2", premed, "2022-08-29T09:00:00+09:00", **rxnorm("1547545")),
        # A dose written at +14:00 and its blood count 13 days 23.5 hours earlier written at -12:00:
        # sixteen calendar days apart as written, inside the 14-day look-back as instants.
        {"resourceType": "Patient", "id": "edge-zones", "gender": "female", "birthDate": "1962-02-02"},
        administration(
            "edge-zones-1", "Patient/edge-zones", "2022-10-15T00:30:00+14:00", **rxnorm("1547545")
        ),
        count(
            "edge-zones-n", "Patient/edge-zones", "751-8", "9.1", "10*3/uL", when="2022-09-29T23:00:00-12:00"
        ),
        count(
            "edge-zones-ig",
            "Patient/edge-zones",
            "53115-2",
            "0.1",
            "10*3/uL",
            when="2022-09-29T23:00:00-12:00",
        ),
        # Only orders: a treatment plan made weeks before the signed order.
        {"resourceType": "Patient", "id": "edge-plan", "gender": "male", "birthDate": "1957-05-05"},
        pembrolizumab_order("edge-plan-1", "Patient/edge-plan", "2022-09-01T09:00:00+09:00", intent="plan"),
        pembrolizumab_order(
            "edge-plan-2", "Patient/edge-plan", "2022-09-20T09:00:00+09:00", status="completed"
        ),
        # The drug only in a Medication referenced by a versioned absolute URL.
        {
            "resourceType": "Medication",
            "id": "edge-med-atezolizumab",
            "code": {"coding": [{"system": RXNORM, "code": "1792776"}]},
        },
        {"resourceType": "Patient", "id": "edge-medref", "gender": "female", "birthDate": "1961-04-01"},
        administration(
            "edge-medref-1",
            "Patient/edge-medref",
            "2022-09-05T09:00:00+09:00",
            medicationReference={
                "reference": "https://fhir.example.org/R4/Medication/edge-med-atezolizumab/_history/2"
            },
        ),
        # Death entered in the registry after the cut-off, dated before it by its value; a second
        # registry entry without any time of its own.
        {"resourceType": "Patient", "id": "edge-late", "gender": "male", "birthDate": "1949-01-01"},
        administration("edge-late-1", late, "2022-05-02T09:00:00+09:00", **rxnorm("1547545")),
        count("edge-late-n", late, "751-8", "9.1", "10*3/uL", when="2022-04-30T08:00:00+09:00"),
        count("edge-late-ig", late, "53115-2", "0.05", "10*3/uL", when="2022-04-30T08:00:00+09:00"),
        registry_death(
            "edge-late-death",
            late,
            effectiveDateTime="2023-09-05T10:00:00+09:00",
            valueDateTime="2023-08-20",
        ),
        registry_death("edge-late-death-2", late, valueDateTime="2023-08-21T03:00:00+09:00"),
        # A registry death dated before the first dose (a data error the row's notes must name), and
        # a progression recorded only with a period.
        {"resourceType": "Patient", "id": "edge-early", "gender": "female", "birthDate": "1960-07-15"},
        administration("edge-early-1", early, "2022-06-01T09:00:00+09:00", **rxnorm("1547545")),
        count("edge-early-n", early, "751-8", "10.0", "10*3/uL", when="2022-05-31T08:00:00+09:00"),
        count("edge-early-ig", early, "53115-2", "0.10", "10*3/uL", when="2022-05-31T08:00:00+09:00"),
        registry_death("edge-early-death", early, effectiveDateTime="2021-02-03T10:00:00+09:00"),
        disease_status(
            "edge-early-pd", early, "271299001", effectivePeriod={"start": "2022-09-01T09:00:00+09:00"}
        ),
        # A registry death known only by its month, entered after the cut-off, and a progression
        # known only by its month: kept by the engines, and neither time is guessed.
        {"resourceType": "Patient", "id": "edge-month", "gender": "male", "birthDate": "1951-06"},
        administration(
            "edge-month-1", "Patient/edge-month", "2022-10-04T09:00:00+09:00", **rxnorm("1547545")
        ),
        registry_death(
            "edge-month-death",
            "Patient/edge-month",
            effectiveDateTime="2023-09-15T10:00:00+09:00",
            valueDateTime="2023-05",
        ),
        disease_status("edge-month-pd", "Patient/edge-month", "271299001", effectiveDateTime="2023-02"),
        # An order signed before the cut-off, given only after it; an order whose administration
        # was not done. Neither patient had a first dose by the cut-off.
        {"resourceType": "Patient", "id": "edge-given-late", "gender": "male", "birthDate": "1950-01-01"},
        pembrolizumab_order("edge-given-late-order", "Patient/edge-given-late", "2023-08-25T09:00:00+09:00"),
        administration(
            "edge-given-late-1", "Patient/edge-given-late", "2023-09-04T09:00:00+09:00", **rxnorm("1547545")
        ),
        {"resourceType": "Patient", "id": "edge-not-done", "gender": "female", "birthDate": "1950-01-01"},
        pembrolizumab_order("edge-not-done-order", "Patient/edge-not-done", "2023-03-01T09:00:00+09:00"),
        administration(
            "edge-not-done-1",
            "Patient/edge-not-done",
            "2023-03-02T09:00:00+09:00",
            status="not-done",
            **rxnorm("1547545"),
        ),
        # Covariates and labs exactly on and just beyond the edges of their windows, a lab with a
        # date only, one day after the dose, and a newer sample after the first dose.
        {"resourceType": "Patient", "id": "edge-window", "gender": "female", "birthDate": "1958-03-02"},
        administration("edge-window-1", edges, "2022-07-15T09:00:00+09:00", **rxnorm("1547545")),
        # LOINC under other spellings of its system: https with a slash, and the HL7 OID.
        count("edge-window-n", edges, "751-8", "8.0", "10*3/uL", when="2022-07-01T09:30:00+09:00")
        | {"code": {"coding": [{"system": "https://loinc.org/", "code": "751-8"}]}},
        count(
            "edge-window-ig",
            f"{edges}/_history/3",  # a versioned reference
            "53115-2",
            "0.20",
            "10*3/uL",
            when="2022-07-01T09:30:00+09:00",
        ),
        count("edge-window-n-old", edges, "751-8", "12.0", "10*3/uL", when="2022-06-30T09:00:00+09:00"),
        count("edge-window-n-day", edges, "751-8", "7.0", "10*3/uL", when="2022-07-15"),
        # Times in no FHIR form: both engines keep them, and the reasons name them.
        count("edge-window-n-slash", edges, "751-8", "5.0", "10*3/uL", when="2022/07/10 09:30"),
        count("edge-window-n-short", edges, "751-8", "5.5", "10*3/uL", when="2022-7-1T09:30:00+09:00"),
        count("edge-window-n-after", edges, "751-8", "6.0", "10*3/uL", when="2022-07-16T08:00:00+09:00"),
        ecog("edge-window-ecog-in", edges, 1, "2022-06-15T09:00:00+09:00")
        | {"code": {"coding": [{"system": "urn:oid:2.16.840.1.113883.6.1", "code": "89247-1"}]}},
        ecog("edge-window-ecog-out", edges, 2, "2022-06-14T09:00:00+09:00"),
        disease_status("edge-window-sd", edges, "359746009", effectiveDateTime="2022-09-01"),
        disease_status("edge-window-pd-pre", edges, "271299001", effectiveDateTime="2022-07-15"),
        disease_status("edge-window-pd", edges, "271299001", effectiveDateTime="2023-08-31T23:00:00-05:00"),
        {
            "resourceType": "Condition",
            "id": "edge-window-dx",
            "code": {"coding": [{"system": SNOMED, "code": "254626006"}]},
            "subject": {"reference": edges},
            "onsetDateTime": "2022-06-01",
        },
    ]


@pytest.fixture(scope="module")
def cohort_with_late_records(small_cohort: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("narrowing")
    for path in small_cohort.iterdir():
        (folder / path.name).symlink_to(path)
    by_type: dict[str, list[dict[str, Any]]] = {}
    for resource in late_records():
        by_type.setdefault(resource["resourceType"], []).append(resource)
    for kind, resources in by_type.items():
        # Lab values as JSON numbers (write_ndjson_gz alone would write Decimals as strings).
        numbers = json.loads(
            json.dumps(resources, default=lambda v: float(v) if isinstance(v, Decimal) else v)
        )
        write_ndjson_gz(folder / f"late.{kind}.ndjson.gz", numbers)
    return folder


def _lines(folder: Path) -> Iterator[tuple[str, str]]:
    for path in sorted(folder.iterdir()):
        if not path.name.endswith((".ndjson", ".ndjson.gz")):
            continue
        opener = gzip.open if path.name.endswith(".gz") else open
        with opener(path, "rt", encoding="utf-8") as handle:
            yield from ((path.name, line) for line in handle if line.strip())


def every_resource_by_patient(folder: Path) -> dict[str, list[tuple[str, str]]]:
    """All Patient, Observation and Condition lines of the folder, by patient id (no narrowing)."""
    found: dict[str, list[tuple[str, str]]] = {}
    for _, line in _lines(folder):
        resource = json.loads(line)
        kind = resource["resourceType"]
        if kind == "Patient":
            patient = resource["id"]
        elif kind in ("Observation", "Condition"):
            patient = re.sub(r"/_history/[^/]+$", "", resource["subject"]["reference"]).rsplit("/", 1)[-1]
        else:
            continue
        found.setdefault(patient, []).append((kind, line.rstrip("\n")))
    return found


def unnarrowed_rows(
    engine: DuckDBEngine | SparkEngine, folder: Path, definition: CohortDefinition
) -> dict[str, dict[str, Any]]:
    sources = discover([folder])
    for kind in RESOURCE_TYPES:
        engine.lines(view_of(kind), sources.files.get(kind, []))
    everything = every_resource_by_patient(folder)
    rows = {}
    for dose in first_doses(engine, definition):
        row = patient_row(dose, everything.get(dose.patient, []), definition)
        if row is not None:
            rows[dose.patient] = row
    return rows


def narrowed_rows(
    engine: DuckDBEngine | SparkEngine, folder: Path, definition: CohortDefinition
) -> dict[str, dict[str, Any]]:
    """The table as the command builds it (the engine narrows), by patient id."""
    return {r["patient_id"]: r for r in extract_rows(engine, discover([folder]), definition)}


@pytest.fixture(scope="module")
def site_definition() -> CohortDefinition:
    return load_definition(SITE, CUTOFF)


@pytest.fixture(scope="module")
def duckdb_rows(
    cohort_with_late_records: Path, site_definition: CohortDefinition
) -> dict[str, dict[str, Any]]:
    with DuckDBEngine() as engine:
        return narrowed_rows(engine, cohort_with_late_records, site_definition)


def test_narrowing_on_duckdb_changes_no_row(
    duckdb_rows: dict[str, dict[str, Any]], cohort_with_late_records: Path, site_definition: CohortDefinition
) -> None:
    with DuckDBEngine() as engine:
        reference = unnarrowed_rows(engine, cohort_with_late_records, site_definition)
    assert set(duckdb_rows) == set(reference)
    for patient, row in reference.items():
        assert duckdb_rows[patient] == row, patient


def test_narrowing_on_spark_changes_no_row(
    cohort_with_late_records: Path, site_definition: CohortDefinition, spark: SparkEngine
) -> None:
    narrowed = narrowed_rows(spark, cohort_with_late_records, site_definition)
    assert narrowed == unnarrowed_rows(spark, cohort_with_late_records, site_definition)


def test_a_registry_death_counts_by_its_value_date_even_when_entered_after_the_cut_off(
    duckdb_rows: dict[str, dict[str, Any]],
) -> None:
    rows = duckdb_rows
    late, early, edges = rows["edge-late"], rows["edge-early"], rows["edge-window"]
    assert (late["death_date"], late["os_days"], late["os_event"]) == (date(2023, 8, 20), 475, 1)
    # Recorded dead on a day before the dose: OS unknown; the progression still ends PFS.
    assert "a death dated 2021-02-03T10:00:00+09:00 before the first dose" in (early["notes"] or "")
    assert (early["progression_date"], early["pfs_event"], early["os_event"]) == (date(2022, 9, 1), 1, None)
    assert (edges["ecog"], edges["progression_date"]) == (1, date(2023, 8, 31))
    assert "edge-window-n-slash" in edges["baseline_reasons"]
    assert "edge-window-n-short" in edges["baseline_reasons"]
    # The IG# is read through a versioned subject reference (Patient/edge-window/_history/3).
    assert (edges["neutrophils_per_uL"], edges["ig_per_uL"], edges["ichis"]) == ("8000", "200", 1)


def test_premedications_that_mention_the_drug_do_not_hide_the_first_dose(
    duckdb_rows: dict[str, dict[str, Any]],
) -> None:
    rows = duckdb_rows
    premed, medref = rows["edge-premed"], rows["edge-medref"]
    assert (premed["first_ici_date"], premed["ici_agent"], premed["ici_source"]) == (
        date(2022, 8, 8),
        "pembrolizumab",
        "MedicationAdministration/edge-premed-ici",
    )
    assert (medref["first_ici_date"], medref["ici_agent"]) == (date(2022, 9, 5), "atezolizumab")
    assert rows["edge-plan"]["ici_source"] == "MedicationRequest/edge-plan-2"
    assert (rows["edge-zones"]["ichis"], rows["edge-zones"]["ig_per_uL"]) == (2, "100")


def test_events_known_only_by_their_month_are_kept_and_leave_their_endpoints_unknown(
    duckdb_rows: dict[str, dict[str, Any]],
) -> None:
    month = duckdb_rows["edge-month"]
    assert (month["pfs_days"], month["pfs_event"], month["os_days"], month["os_event"]) == (
        None,
        None,
        None,
        None,
    )
    assert "death recorded only as 2023-05" in month["notes"]
    assert "progression recorded only as 2023-02" in month["notes"]
    assert month["age_years"] == 71  # born June 1951, first dose October 2022


def test_an_order_is_no_first_dose_when_the_administrations_say_otherwise(
    duckdb_rows: dict[str, dict[str, Any]],
) -> None:
    """Given only after the cut-off, or not done: no first dose by the cut-off, so no row."""
    assert "edge-given-late" not in duckdb_rows
    assert "edge-not-done" not in duckdb_rows
