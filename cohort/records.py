"""One patient's resources -> one row of the cohort table. Pure: no I/O, no engine, no clock.

The row is put together from steps that each own one part: the first dose (``cohort.doses``), the
baseline and score at that dose through ``fhir_mappings.assessment.assess`` (the CDS service's own
path), the covariates (``cohort.covariates``) and the outcomes (``cohort.outcomes``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

from cohort.covariates import covariates
from cohort.dates import window_day
from cohort.definition import CohortDefinition
from cohort.doses import FirstDose
from cohort.matching import has_code, is_synthetic, is_void, may_be_lab
from cohort.outcomes import outcomes
from cohort.sources import read_line
from fhir_mappings.assessment import assess
from fhir_mappings.resources import Resource, current_versions
from fhir_mappings.subjects import CallPatient
from ichis.measurement import Measurement, plain
from ichis.score import Part

#: Columns of the cohort table, in order, with their logical types (string, int, bool, date).
COLUMNS: tuple[tuple[str, str], ...] = (
    ("patient_id", "string"),
    ("synthetic", "bool"),
    ("first_ici_date", "date"),
    ("first_ici_time", "string"),
    ("ici_agent", "string"),
    ("ici_target", "string"),
    ("ici_source", "string"),
    ("ici_matched_by", "string"),
    ("age_years", "int"),
    ("sex", "string"),
    ("ecog", "int"),
    ("pdl1_tps", "string"),
    ("pdl1_category", "string"),
    ("histology", "string"),
    ("histology_detail", "string"),
    ("smoking", "string"),
    ("neutrophils_per_uL", "string"),
    ("neutrophils_points", "int"),
    ("ig_per_uL", "string"),
    ("ig_points", "int"),
    ("ig_derived", "bool"),
    ("ichis", "int"),
    ("ichis_status", "string"),
    ("ichis_lower", "int"),
    ("ichis_upper", "int"),
    ("icis", "int"),
    ("baseline_reasons", "string"),
    ("progression_date", "date"),
    ("death_date", "date"),
    ("follow_up_end", "date"),
    ("pfs_days", "int"),
    ("pfs_event", "int"),
    ("os_days", "int"),
    ("os_event", "int"),
    ("notes", "string"),
)
COLUMN_NAMES = tuple(name for name, _ in COLUMNS)


@dataclass(frozen=True, slots=True)
class _Records:
    """A patient's current resources by kind, and the note on versions of which none was used."""

    patient: Resource | None
    observations: list[Resource]
    conditions: list[Resource]  # those not withdrawn
    notes: list[str]


def _current_records(lines: Sequence[tuple[str, str]]) -> _Records:
    """The resources of ``(resource type, JSON line)`` pairs, each in its current version, by kind."""
    # The lines are read in a fixed order (engines hand them over in any order), so that reasons and
    # notes, which follow the order of the results, read the same from every engine and every run.
    # Spark keeps the spaces around a line, DuckDB strips them: sort on what both hand over.
    resources = [read_line(line) for _, line in sorted(lines, key=lambda item: (item[0], item[1].strip()))]
    resources = [r for r in resources if isinstance(r, Mapping)]
    # Only the current version of a resource sent more than once (as the card's path reads labs):
    # a progression or an ECOG later entered in error no longer counts.
    current, _, unordered = current_versions([(r, None) for r in resources])
    resources = [r for r, _ in current]
    notes = (
        [f"{', '.join(unordered)} came in versions that cannot be ordered, one withdrawn: none was used"]
        if unordered
        else []
    )
    return _Records(
        patient=next((r for r in resources if r.get("resourceType") == "Patient"), None),
        observations=[r for r in resources if r.get("resourceType") == "Observation"],
        conditions=[r for r in resources if r.get("resourceType") == "Condition" and not is_void(r)],
        notes=notes,
    )


def _dose_columns(dose: FirstDose, patient: Resource | None) -> dict[str, Any]:
    """Who the row is about, whether the data are synthetic, and the first dose."""
    return {
        "patient_id": dose.patient,
        "synthetic": is_synthetic(patient),
        "first_ici_date": dose.day,
        "first_ici_time": dose.time_as_sent,
        "ici_agent": dose.agent,
        "ici_target": dose.target,
        "ici_source": dose.reference,
        "ici_matched_by": dose.matched_by,
    }


def _in_lab_window(observation: Resource, dose_day: date, definition: CohortDefinition) -> bool:
    """True when the engines keep this lab Observation: no readable day, or a day in the lab window.

    Applied again here so that a row never depends on how much an engine kept: the baseline reasons
    (results after the dose, results too old) then count the same results from any input.
    """
    day = window_day(observation)
    if day is None:
        return True
    before, after = definition.lab_window_days
    return -before <= (day - dose_day).days <= after


def _per_uL(measurement: Measurement | None) -> str | None:
    """A count per uL as exact decimal text, or None when the part was not measured."""
    return plain(measurement.value_per_uL) if measurement else None


def _score_columns(
    dose: FirstDose, observations: Sequence[Resource], definition: CohortDefinition
) -> dict[str, Any]:
    """The baseline counts and IChIS at the first dose, by the service's own path."""
    # Only Observations the mappers can read, in the lab window, are handed over (as the engine's
    # narrowing does).
    labs = [
        o
        for o in observations
        if may_be_lab(o, definition.lab_code_set) and _in_lab_window(o, dose.day, definition)
    ]
    assessment = assess(
        [(r, None) for r in labs], dose.at, definition.mapping, patient=CallPatient(dose.patient)
    )
    result = assessment.result
    neutrophils = result.parts[Part.NEUTROPHILS]
    ig = result.parts[Part.IMMATURE_GRANULOCYTES]
    return {
        "neutrophils_per_uL": _per_uL(neutrophils.measurement),
        "neutrophils_points": neutrophils.points,
        "ig_per_uL": _per_uL(ig.measurement),
        "ig_points": ig.points,
        "ig_derived": ig.measurement.derived if ig.measurement else None,
        "ichis": result.score,
        "ichis_status": result.status.value,
        "ichis_lower": result.lower,
        "ichis_upper": result.upper,
        "icis": assessment.icis.score if assessment.icis else None,
        "baseline_reasons": " | ".join(assessment.reasons) or None,
    }


def patient_row(
    dose: FirstDose,
    lines: Sequence[tuple[str, str]],
    definition: CohortDefinition,
    last_contact: date | None = None,
) -> dict[str, Any] | None:
    """The cohort-table row of one patient from ``(resource type, JSON line)`` pairs; None if excluded."""
    records = _current_records(lines)
    if definition.diagnosis_codes and not any(
        has_code(c, definition.diagnosis_codes) for c in records.conditions
    ):
        return None
    covariate_columns, covariate_notes = covariates(
        records.patient, records.observations, records.conditions, dose.day, definition
    )
    outcome_columns, outcome_notes = outcomes(
        records.patient, records.observations + records.conditions, dose.day, definition, last_contact
    )
    row: dict[str, Any] = dict.fromkeys(COLUMN_NAMES)
    row.update(_dose_columns(dose, records.patient))
    row.update(_score_columns(dose, records.observations, definition))
    row.update(covariate_columns)
    row.update(outcome_columns)
    row["notes"] = " | ".join(records.notes + covariate_notes + outcome_notes) or None
    return row
