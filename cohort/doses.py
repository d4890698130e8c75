"""The first checkpoint-inhibitor dose of a patient, from the orders and administrations the engine found.

Drugs are recognised by ``fhir_mappings.medications.DrugTable`` and read as the CDS service reads
an order (``medication_codeables``); times are ``fhir_mappings.fhirtime``'s.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from cohort import codes
from cohort.definition import CohortDefinition
from cohort.sources import read_line
from fhir_mappings.fhirtime import TimeFormatError, parse_when
from fhir_mappings.medications import medication_codeables
from fhir_mappings.resources import Resource, reference_of, text_of


@dataclass(frozen=True, slots=True)
class FirstDose:
    """The first checkpoint-inhibitor dose (or order) of a patient, and how the drug was recognised."""

    patient: str
    at: datetime  # the reference time of the baseline assessment
    day: date  # the calendar date as written, for day counts
    time_as_sent: str
    agent: str
    target: str
    reference: str
    matched_by: str


@dataclass(frozen=True, slots=True)
class DoseCandidate:
    """An order or administration the engine found mentioning a checkpoint inhibitor."""

    source: str  # MedicationAdministration or MedicationRequest
    time: str | None
    line: str
    medication_line: str | None


#: Why a patient of the input has no row in the table (``ichis cohort extract``'s summary).
NO_CHECKPOINT_INHIBITOR = "no checkpoint-inhibitor order or administration"
DOSE_AFTER_CUTOFF = "first checkpoint-inhibitor dose after the cut-off"
NO_DOSE = "checkpoint-inhibitor records that are no dose (not given, or without a readable date)"
OUTSIDE_DIAGNOSES = "no condition among the cohort's diagnosis codes"


def _medication_codeables(resource: Resource, medication: Resource | None) -> list[Any]:
    """What an order or administration says it gives, read as the CDS service reads an order
    (``fhir_mappings.medications.medication_codeables``); ``medication`` is the Medication the
    engine joined to its reference."""
    ref = resource.get("medicationReference")
    target = ref.get("reference") if isinstance(ref, Mapping) else None
    index = {target: medication} if isinstance(target, str) and isinstance(medication, Mapping) else {}
    return medication_codeables(resource, index)


def _no_order(resource: Resource) -> bool:
    """A request that is no order: a proposal, a plan, an option of a set."""
    return text_of(resource, "intent") in codes.NOT_ORDER_INTENTS


def _may_be_dose(resource: Resource) -> bool:
    """Not an administration or order that never happened, and not a request that is no order."""
    return text_of(resource, "status") not in codes.VOID_DOSE_STATUSES and not _no_order(resource)


def _is_record(resource: Resource) -> bool:
    """A record that the drug was given, ordered or meant and not given (not-done): anything but a
    record withdrawn as an error, a request that is no order (a plan, a proposal), or one that
    forbids the drug."""
    if resource.get("status") == "entered-in-error" or resource.get("doNotPerform") is True:
        # doNotPerform is a modifier: the request forbids the drug (https://hl7.org/fhir/R4/
        # medicationrequest-definitions.html#MedicationRequest.doNotPerform).
        return False
    return not _no_order(resource)


def _confirm(
    patient: str, candidate: DoseCandidate, definition: CohortDefinition
) -> tuple[FirstDose | None, str]:
    """The candidate as a checkpoint-inhibitor dose on or before the cut-off, if it is one; else
    why not (``NO_CHECKPOINT_INHIBITOR`` when it is no record of the drug at all)."""
    resource = read_line(candidate.line)
    if not isinstance(resource, dict) or not _is_record(resource):
        return None, NO_CHECKPOINT_INHIBITOR
    medication = read_line(candidate.medication_line) if candidate.medication_line else None
    hit = None
    for codeable in _medication_codeables(resource, medication):
        if hit := definition.drugs.match_codeable(codeable):
            break
    if hit is None:
        return None, NO_CHECKPOINT_INHIBITOR
    if not candidate.time or not _may_be_dose(resource):
        return None, NO_DOSE
    try:
        when = parse_when(candidate.time, definition.mapping.naive_time_zone)
        day = date.fromisoformat(candidate.time[:10])
    except (TimeFormatError, ValueError):
        return None, NO_DOSE
    if day > definition.cutoff:
        return None, DOSE_AFTER_CUTOFF
    drug = definition.drugs.drugs[hit[0]]
    # A date without a time stands for its whole day; its start is the only instant surely not
    # after the dose, so results of that day cannot count as baseline (as in the service).
    dose = FirstDose(
        patient, when.earliest, day, candidate.time, drug.name, drug.target, reference_of(resource), hit[1]
    )
    return dose, ""


def first_dose(
    patient: str, candidates: Iterable[DoseCandidate], definition: CohortDefinition
) -> FirstDose | None:
    """The patient's first checkpoint-inhibitor dose (see ``first_dose_or_reason``)."""
    return first_dose_or_reason(patient, candidates, definition)[0]


def first_dose_or_reason(
    patient: str, candidates: Iterable[DoseCandidate], definition: CohortDefinition
) -> tuple[FirstDose | None, str]:
    """The earliest checkpoint-inhibitor administration on or before the cut-off, else order.

    Sources are read in the configured order, and a patient with any record of the drug in one
    source is judged by that source alone: an order is no dose for a patient whose administrations
    are recorded, all after the cut-off or not done. Candidates come in date order per source; once
    one is confirmed only others of the same day can be earlier (by their time of day), so the rest
    are not parsed.
    """
    by_source: dict[str, list[DoseCandidate]] = {}
    for candidate in candidates:
        by_source.setdefault(candidate.source, []).append(candidate)
    for source in definition.dose_sources:
        confirmed: list[FirstDose] = []
        why_not: set[str] = set()
        for candidate in sorted(by_source.get(source, []), key=lambda c: c.time or ""):
            if confirmed and (candidate.time or "")[:10] != confirmed[0].time_as_sent[:10]:
                break
            found, why = _confirm(patient, candidate, definition)
            if found:
                confirmed.append(found)
            elif why != NO_CHECKPOINT_INHIBITOR:
                why_not.add(why)
        if confirmed:
            return min(confirmed, key=lambda d: (d.at, d.reference)), ""
        if why_not:
            return None, DOSE_AFTER_CUTOFF if DOSE_AFTER_CUTOFF in why_not else NO_DOSE
    return None, NO_CHECKPOINT_INHIBITOR
