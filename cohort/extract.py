"""``ichis cohort extract``: NDJSON -> the per-patient table, on DuckDB or Spark.

Three steps: the engine finds each patient's earliest checkpoint-inhibitor candidates and Python
confirms the first dose; the engine streams each cohort patient's candidate resources in patient
order; Python builds one row per patient (``cohort.records``) and writes it at once. Memory holds one
patient's resources and one small row per cohort patient, whatever the size of the input.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from cohort import plan
from cohort.definition import CohortDefinition
from cohort.engines import Engine
from cohort.records import DoseCandidate, FirstDose, first_dose, patient_row
from cohort.sources import Sources, readable

Progress = Callable[[str, int | None], Callable[[int], None]]


def _no_progress(_label: str, _total: int | None) -> Callable[[int], None]:
    return lambda _n: None


@dataclass
class ExtractionSummary:
    """Counts a reader needs to trust the table: who was found, who was scored, who was left out."""

    cohort_patients: int = 0
    rows: int = 0
    excluded_by_diagnosis: int = 0
    scored_complete: int = 0
    synthetic_rows: int = 0
    skipped_files: list[str] = field(default_factory=list)
    #: Files read without the byte-order mark they start with.
    bom_files: list[str] = field(default_factory=list)


def first_doses(engine: Engine, definition: CohortDefinition) -> Iterator[FirstDose]:
    """Each patient's first confirmed checkpoint-inhibitor dose, in patient order."""
    rows = engine.stream(plan.dose_candidates(definition, engine.dialect))
    for patient, group in itertools.groupby(rows, key=lambda r: r[0]):
        candidates = [DoseCandidate(source, t, line, med) for _, source, t, line, med in group]
        dose = first_dose(patient, candidates, definition)
        if dose is not None:
            yield dose


def extract_rows(
    engine: Engine,
    sources: Sources,
    definition: CohortDefinition,
    summary: ExtractionSummary | None = None,
    progress: Progress = _no_progress,
) -> Iterator[dict[str, Any]]:
    """The cohort table's rows, one per patient with a first checkpoint-inhibitor dose, by patient id."""
    summary = summary if summary is not None else ExtractionSummary()
    summary.skipped_files = list(sources.skipped)
    summary.bom_files = [path.name for path in sources.with_bom]
    with readable(sources) as files:
        yield from _extract(engine, files, definition, summary, progress)


def _extract(
    engine: Engine,
    sources: Sources,
    definition: CohortDefinition,
    summary: ExtractionSummary,
    progress: Progress,
) -> Iterator[dict[str, Any]]:
    for resource_type in plan.RESOURCE_TYPES:
        engine.lines(plan.view_of(resource_type), sources.files.get(resource_type, []))
    tick = progress("first doses", None)
    doses: dict[str, FirstDose] = {}
    for dose in first_doses(engine, definition):
        doses[dose.patient] = dose
        tick(1)
    summary.cohort_patients = len(doses)
    engine.table("cohort_patients", [(d.patient, d.day) for d in doses.values()])
    contacts: dict[str, date] = {}
    if definition.follow_up == "last-contact":
        contacts = {p: day for p, day in engine.stream(plan.last_contacts(definition, engine.dialect))}
    tick = progress("patients", len(doses))
    rows = engine.stream(plan.patient_resources(definition, engine.dialect))
    seen: set[str] = set()
    for patient, group in itertools.groupby(rows, key=lambda r: r[0]):
        seen.add(patient)
        yield from _row(
            doses[patient], [(kind, line) for _, kind, line in group], definition, contacts, summary
        )
        tick(1)
    # Patients with a dose but no other resource in the candidate stream still get a row.
    for patient in sorted(set(doses) - seen):
        yield from _row(doses[patient], [], definition, contacts, summary)
        tick(1)


def _row(
    dose: FirstDose,
    lines: list[tuple[str, str]],
    definition: CohortDefinition,
    contacts: dict[str, date],
    summary: ExtractionSummary,
) -> Iterator[dict[str, Any]]:
    row = patient_row(dose, lines, definition, contacts.get(dose.patient))
    if row is None:
        summary.excluded_by_diagnosis += 1
        return
    summary.rows += 1
    summary.scored_complete += row["ichis_status"] == "complete"
    summary.synthetic_rows += bool(row["synthetic"])
    yield row
