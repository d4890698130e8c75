"""``ichis cohort extract``: NDJSON -> the per-patient table, on DuckDB or Spark.

Three steps: the engine finds each patient's earliest checkpoint-inhibitor candidates and Python
confirms the first dose; the engine streams each cohort patient's candidate resources in patient
order; Python builds one row per patient (``cohort.records``) and writes it at once. Memory holds one
patient's resources and one small row per cohort patient, whatever the size of the input.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from cohort import plan, scoring
from cohort.definition import CohortDefinition
from cohort.doses import (
    NO_CHECKPOINT_INHIBITOR,
    OUTSIDE_DIAGNOSES,
    DoseCandidate,
    FirstDose,
    first_dose_or_reason,
)
from cohort.engines import Engine
from cohort.sources import Sources, readable

Progress = Callable[[str, int | None], Callable[[int], None]]


def _no_progress(_label: str, _total: int | None) -> Callable[[int], None]:
    return lambda _n: None


@dataclass
class ExtractionSummary:
    """Counts a reader needs to trust the table: who was found, who was scored, who was left out."""

    #: Patients in the input: a Patient resource, or a checkpoint-inhibitor candidate record.
    patients_seen: int = 0
    cohort_patients: int = 0
    rows: int = 0
    excluded_by_diagnosis: int = 0
    #: Patients of the input without a row, by reason (``cohort.doses``' reasons).
    left_out: dict[str, int] = field(default_factory=dict)
    scored_complete: int = 0
    synthetic_rows: int = 0
    skipped_files: list[str] = field(default_factory=list)
    #: Files read without the byte-order mark they start with.
    bom_files: list[str] = field(default_factory=list)


def first_doses(
    engine: Engine, definition: CohortDefinition, summary: ExtractionSummary | None = None
) -> Iterator[FirstDose]:
    """Each patient's first confirmed checkpoint-inhibitor dose, in patient order; the summary
    counts who was seen and why the others have none."""
    summary = summary if summary is not None else ExtractionSummary()
    candidates_of: set[str] = set()
    rows = engine.stream(plan.dose_candidates(definition, engine.dialect), plan.DOSE_ORDER)
    for patient, group in itertools.groupby(rows, key=lambda r: r[0]):
        candidates_of.add(patient)
        candidates = [DoseCandidate(source, t, line, med) for _, source, t, line, med, _ in group]
        dose, why = first_dose_or_reason(patient, candidates, definition)
        if dose is not None:
            yield dose
        else:
            summary.left_out[why] = summary.left_out.get(why, 0) + 1
    seen = {row[0] for row in engine.stream(plan.patients_in_input(engine.dialect))} | candidates_of
    summary.patients_seen = len(seen)
    if without := len(seen - candidates_of):
        summary.left_out[NO_CHECKPOINT_INHIBITOR] = summary.left_out.get(NO_CHECKPOINT_INHIBITOR, 0) + without


def extract_rows(
    engine: Engine,
    sources: Sources,
    definition: CohortDefinition,
    summary: ExtractionSummary | None = None,
    progress: Progress = _no_progress,
    *,
    workers: int | None = None,
) -> Iterator[dict[str, Any]]:
    """The cohort table's rows, one per patient with a first checkpoint-inhibitor dose, by patient id.

    ``workers``: processes that build rows (default: one per core for a cohort of at least
    ``scoring.PARALLEL_FROM`` patients, else this process alone).
    """
    summary = summary if summary is not None else ExtractionSummary()
    summary.skipped_files = list(sources.skipped)
    summary.bom_files = [path.name for path in sources.with_bom]
    with readable(sources) as files:
        yield from _extract(engine, files, definition, summary, progress, workers=workers)


def _extract(
    engine: Engine,
    sources: Sources,
    definition: CohortDefinition,
    summary: ExtractionSummary,
    progress: Progress,
    *,
    workers: int | None,
) -> Iterator[dict[str, Any]]:
    for resource_type in plan.RESOURCE_TYPES:
        engine.lines(plan.view_of(resource_type), sources.files.get(resource_type, []))
    tick = progress("first doses", None)
    doses: dict[str, FirstDose] = {}
    for dose in first_doses(engine, definition, summary):
        doses[dose.patient] = dose
        tick(1)
    summary.cohort_patients = len(doses)
    engine.table("cohort_patients", [(d.patient, d.day) for d in doses.values()])
    contacts: dict[str, date] = {}
    if definition.follow_up == "last-contact":
        contacts = {p: day for p, day in engine.stream(plan.last_contacts(definition, engine.dialect))}
    if workers is None:
        workers = scoring.cores() if len(doses) >= scoring.PARALLEL_FROM else 1
    # The workers start now, while the engine reads the Observations.
    with scoring.Scorer(definition, workers) as scorer:
        tick = progress("patients", len(doses))
        stream = engine.stream(plan.patient_resources(definition, engine.dialect), plan.RESOURCE_ORDER)
        work = _work(stream, doses, contacts)
        for _, row in scorer.rows(work):
            tick(1)
            if row is None:
                summary.excluded_by_diagnosis += 1
                summary.left_out[OUTSIDE_DIAGNOSES] = summary.left_out.get(OUTSIDE_DIAGNOSES, 0) + 1
                continue
            summary.rows += 1
            summary.scored_complete += row["ichis_status"] == "complete"
            summary.synthetic_rows += bool(row["synthetic"])
            yield row


def _work(
    stream: Iterator[tuple[Any, ...]], doses: dict[str, FirstDose], contacts: dict[str, date]
) -> Iterator[scoring.Work]:
    """Each cohort patient's dose, candidate lines and last contact, by patient id."""
    seen: set[str] = set()
    for patient, group in itertools.groupby(stream, key=lambda r: r[0]):
        seen.add(patient)
        yield doses[patient], [(kind, line) for _, kind, line in group], contacts.get(patient)
    # Patients with a dose but no other resource in the candidate stream still get a row.
    for patient in sorted(set(doses) - seen):
        yield doses[patient], [], contacts.get(patient)


def write_summary(summary: ExtractionSummary, folder: Path, cutoff: date) -> Path:
    """``extraction-summary.json`` beside the table: the counts of a flow diagram (who was seen,
    who has a first dose, who has a row, who was left out and why)."""
    path = folder / "extraction-summary.json"
    document = {
        "cutoff": cutoff.isoformat(),
        "patients_seen": summary.patients_seen,
        "with_first_dose": summary.cohort_patients,
        "rows": summary.rows,
        "ichis_complete": summary.scored_complete,
        "left_out": dict(sorted(summary.left_out.items())),
        "synthetic_rows": summary.synthetic_rows,
        "files_not_read": summary.skipped_files,
        "files_with_byte_order_mark": summary.bom_files,
    }
    folder.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    return path
