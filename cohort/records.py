"""One patient's resources -> one row of the cohort table. Pure: no I/O, no engine, no clock.

The score goes through ``fhir_mappings.assessment.assess`` (the CDS service's own path) at the time of
the first checkpoint-inhibitor dose; drugs are recognised by ``fhir_mappings.medications.DrugTable``.
This module adds only what the service does not need: the first dose, covariates and outcomes.
"""

from __future__ import annotations

import re
from calendar import monthrange
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from cohort import codes
from cohort.codes import Code
from cohort.definition import CohortDefinition, EventRule
from fhir_mappings.assessment import assess
from fhir_mappings.bundles import loads
from fhir_mappings.config import SYSTEM_ALIASES
from fhir_mappings.fhirtime import TimeFormatError, parse_when
from fhir_mappings.medications import medication_codeables
from fhir_mappings.resources import Resource, current_versions, items_of, reference_of
from fhir_mappings.subjects import CallPatient
from ichis.measurement import plain
from ichis.score import Part

_ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_MONTH = re.compile(r"[0-9]{4}-[0-9]{2}")
_YEAR = re.compile(r"[0-9]{4}")

_VOID_OBSERVATION = frozenset(codes.VOID_RESULT_STATUSES)
#: Condition verification statuses that withdraw a diagnosis.
_VOID_CONDITION = frozenset({"refuted", "entered-in-error"})

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

PDL1_CATEGORIES = ("<1%", "1-49%", ">=50%")


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


def _codings(codeable: Any) -> list[Code]:
    """The (system, code) pairs of a CodeableConcept, LOINC under any of its spellings as LOINC."""
    # Parsed JSON is made of dicts; ``dict`` checks are much cheaper than ``Mapping`` ones here.
    if not isinstance(codeable, dict):
        return []
    found = []
    for coding in items_of(codeable, "coding"):
        if isinstance(coding, dict):
            system, code = coding.get("system"), coding.get("code")
            if isinstance(system, str) and isinstance(code, str):
                found.append((SYSTEM_ALIASES.get(system, system), code))
    return found


def _medication_codeables(resource: Resource, medication: Resource | None) -> list[Any]:
    """What an order or administration says it gives, read as the CDS service reads an order
    (``fhir_mappings.medications.medication_codeables``); ``medication`` is the Medication the
    engine joined to its reference."""
    ref = resource.get("medicationReference")
    target = ref.get("reference") if isinstance(ref, Mapping) else None
    index = {target: medication} if isinstance(target, str) and isinstance(medication, Mapping) else {}
    return medication_codeables(resource, index)


def _may_be_dose(resource: Resource) -> bool:
    """Not an administration or order that never happened, and not a request that is no order."""
    status, intent = resource.get("status"), resource.get("intent")
    if isinstance(status, str) and status in codes.VOID_DOSE_STATUSES:
        return False
    return not (isinstance(intent, str) and intent in codes.NOT_ORDER_INTENTS)


def _is_record(resource: Resource) -> bool:
    """A record that the drug was given, ordered or meant and not given (not-done): anything but a
    record withdrawn as an error, a request that is no order (a plan, a proposal), or one that
    forbids the drug."""
    status, intent = resource.get("status"), resource.get("intent")
    if status == "entered-in-error" or resource.get("doNotPerform") is True:
        # doNotPerform is a modifier: the request forbids the drug (https://hl7.org/fhir/R4/
        # medicationrequest-definitions.html#MedicationRequest.doNotPerform).
        return False
    return not (isinstance(intent, str) and intent in codes.NOT_ORDER_INTENTS)


#: Why a patient of the input has no row in the table (``ichis cohort extract``'s summary).
NO_CHECKPOINT_INHIBITOR = "no checkpoint-inhibitor order or administration"
DOSE_AFTER_CUTOFF = "first checkpoint-inhibitor dose after the cut-off"
NO_DOSE = "checkpoint-inhibitor records that are no dose (not given, or without a readable date)"
OUTSIDE_DIAGNOSES = "no condition among the cohort's diagnosis codes"


def _confirm(
    patient: str, candidate: DoseCandidate, definition: CohortDefinition
) -> tuple[FirstDose | None, str]:
    """The candidate as a checkpoint-inhibitor dose on or before the cut-off, if it is one; else
    why not (``NO_CHECKPOINT_INHIBITOR`` when it is no record of the drug at all)."""
    resource = loads(candidate.line)
    if not isinstance(resource, dict) or not _is_record(resource):
        return None, NO_CHECKPOINT_INHIBITOR
    medication = loads(candidate.medication_line) if candidate.medication_line else None
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


def _day(text: Any) -> date | None:
    """The date a FHIR date/dateTime was written with: ``YYYY-MM-DD`` only, as plan._date reads it
    (``date.fromisoformat`` alone would also take "20240101" or week dates)."""
    if not isinstance(text, str) or not _ISO_DATE.match(text):
        return None
    try:
        return date.fromisoformat(text[:10])
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class EventDate:
    """The days an event may have happened on, as its record was written: one day, or a whole month
    or year when the record says no more ("2023-05", which FHIR allows and registries send)."""

    first: date
    last: date
    text: str

    @property
    def precise(self) -> bool:
        return self.first == self.last

    @classmethod
    def on(cls, day: date) -> EventDate:
        return cls(day, day, day.isoformat())


def _span(text: Any) -> EventDate | None:
    """A FHIR date or dateTime as the days it may denote; None when it is no such date."""
    if not isinstance(text, str):
        return None
    if (day := _day(text)) is not None:
        return EventDate(day, day, text)
    try:
        if _MONTH.fullmatch(text):
            year, month = int(text[:4]), int(text[5:7])
            return EventDate(date(year, month, 1), date(year, month, monthrange(year, month)[1]), text)
        if _YEAR.fullmatch(text):
            return EventDate(date(int(text), 1, 1), date(int(text), 12, 31), text)
    except ValueError:
        return None
    return None


def _observation_time(resource: Resource) -> Any:
    """The Observation's time as sent: the first of effectiveDateTime, effectiveInstant and
    effectivePeriod.start that is present."""
    period = resource.get("effectivePeriod")
    start = period.get("start") if isinstance(period, Mapping) else None
    return resource.get("effectiveDateTime") or resource.get("effectiveInstant") or start


def _observation_day(resource: Resource) -> date | None:
    period = resource.get("effectivePeriod")
    start = period.get("start") if isinstance(period, Mapping) else None
    return _day(resource.get("effectiveDateTime") or resource.get("effectiveInstant") or start)


def window_day(resource: Resource) -> date | None:
    """The day the engines window an Observation by: the first of effectiveDateTime, effectiveInstant,
    effectivePeriod.start and .end that reads as a date (plan.patient_resources computes the same)."""
    period = resource.get("effectivePeriod")
    times = [resource.get("effectiveDateTime"), resource.get("effectiveInstant")]
    if isinstance(period, Mapping):
        times += [period.get("start"), period.get("end")]
    return next((day for day in map(_day, times) if day is not None), None)


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


def _condition_time(resource: Resource) -> Any:
    period = resource.get("onsetPeriod")
    start = period.get("start") if isinstance(period, Mapping) else None
    return resource.get("onsetDateTime") or start or resource.get("recordedDate")


def _condition_day(resource: Resource) -> date | None:
    return _day(_condition_time(resource))


def _may_be_lab(observation: Resource, lab_codes: frozenset[Code]) -> bool:
    """A panel, or an Observation with a lab code at its root or in a component."""
    if observation.get("hasMember") or _has_code(observation, lab_codes):
        return True
    return any(isinstance(c, dict) and _has_code(c, lab_codes) for c in items_of(observation, "component"))


def _is_void(resource: Resource) -> bool:
    if resource.get("resourceType") == "Condition":
        return any(code in _VOID_CONDITION for _, code in _codings(resource.get("verificationStatus")))
    status = resource.get("status")
    return isinstance(status, str) and status in _VOID_OBSERVATION


def _has_code(resource: Resource, wanted: frozenset[Code]) -> bool:
    """True when a Coding of ``resource.code`` is one of ``wanted`` (``_codings`` without the list:
    this runs several times for every candidate Observation)."""
    codeable = resource.get("code")
    if not isinstance(codeable, dict):
        return False
    for coding in items_of(codeable, "coding"):
        if isinstance(coding, dict):
            system, code = coding.get("system"), coding.get("code")
            if (
                isinstance(system, str)
                and isinstance(code, str)
                and (SYSTEM_ALIASES.get(system, system), code) in wanted
            ):
                return True
    return False


def age_in_years(birth: date, on: date) -> int:
    """Whole years of age on a day (a birthday on 29 February counts on 1 March in common years)."""
    return on.year - birth.year - ((on.month, on.day) < (birth.month, birth.day))


def _decimal(value: Any) -> Decimal | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, Decimal | int):
        return Decimal(value)
    return None


def ecog_value(resource: Resource) -> int | None:
    """ECOG 0-5 from valueInteger (mCODE), a valueQuantity, or a LOINC LL529-9 answer code."""
    for key in ("valueInteger", "valueQuantity"):
        raw = resource.get(key)
        number = _decimal(raw.get("value") if isinstance(raw, Mapping) else raw)
        if number is not None and number == number.to_integral_value() and 0 <= number <= 5:
            return int(number)
    for coding in _codings(resource.get("valueCodeableConcept")):
        if coding in codes.ECOG_ANSWERS:
            return codes.ECOG_ANSWERS[coding]
    return None


def pdl1_category(value: Decimal, comparator: str | None = None) -> str | None:
    """The paper's PD-L1 group by tumour proportion score: <1%, 1-49%, >=50%; None if a bound leaves it open.

    A TPS lies between 0 and 100, so "<1" is surely below 1% and ">=50" surely 50% or more, but "<50"
    could be either of the lower groups.
    """
    if comparator is None:
        return "<1%" if value < 1 else "1-49%" if value < 50 else ">=50%"
    if (comparator == "<" and value <= 1) or (comparator == "<=" and value < 1):
        return "<1%"
    if (comparator == ">" and value >= 50) or (comparator == ">=" and value >= 50):
        return ">=50%"
    return None


def _pdl1(resource: Resource) -> tuple[str, str | None] | None:
    quantity = resource.get("valueQuantity")
    if not isinstance(quantity, Mapping):
        return None
    value = _decimal(quantity.get("value"))
    if value is None or value < 0 or value > 100:
        return None
    comparator = quantity.get("comparator") if isinstance(quantity.get("comparator"), str) else None
    shown = f"{comparator or ''}{plain(value)}"
    return shown, pdl1_category(value, comparator)


def _smoking(resource: Resource) -> str | None:
    values = set(_codings(resource.get("valueCodeableConcept")))
    if values & codes.SMOKING_NEVER:
        return "Never"
    if values & codes.SMOKING_EVER:
        return "Former or current"
    return None


def _latest(items: Iterable[tuple[date, Any]]) -> Any:
    ordered = sorted(items, key=lambda item: item[0])
    return ordered[-1][1] if ordered else None


def _event_dates(resources: Sequence[Resource], rules: Sequence[EventRule]) -> list[EventDate]:
    """When resources that match an event rule say it happened: an Observation's valueDateTime,
    else its time; a Condition's onset, else its recorded date. A month or a year is kept as such."""
    found = []
    for resource in resources:
        if _is_void(resource):
            continue
        for rule in rules:
            if resource.get("resourceType") != rule.resource or not _has_code(resource, rule.codes):
                continue
            if (
                rule.values is not None
                and not set(_codings(resource.get("valueCodeableConcept"))) & rule.values
            ):
                continue
            if rule.resource == "Observation":
                when = _span(resource.get("valueDateTime")) or _span(_observation_time(resource))
            else:
                when = _span(_condition_time(resource))
            if when is not None:
                found.append(when)
    return found


@dataclass(frozen=True, slots=True)
class Survival:
    """Times (days from the first dose) and events of one patient; None where the records cannot
    give them (``notes`` says why)."""

    progression: date | None
    death: date | None
    end: date
    pfs_days: int | None
    pfs_event: int | None
    os_days: int | None
    os_event: int | None
    notes: tuple[str, ...] = ()


def survival(
    dose_day: date,
    *,
    deaths: Sequence[EventDate],
    progressions: Sequence[EventDate],
    end: date,
    death_date_unknown: bool = False,
) -> Survival:
    """PFS (progression or death) and OS from the first dose, censored at ``end`` (the follow-up end).

    Progression counts from the day after the first dose (a scan on the day of the dose is the
    progression that led to it); death counts from the day of the dose. Events after ``end`` are
    not known at the cut-off. A time is never guessed: when the first event may have happened on
    any day of a month or a year, or the death has no date (``death_date_unknown``, or a date
    before the first dose), the endpoint it ends is unknown rather than censored.
    """
    notes: list[str] = []
    # Records whose days reach into the follow-up: [dose, end] for death, (dose, end] for progression.
    death_records = [d for d in deaths if d.last >= dose_day and d.first <= end]
    progression_records = [p for p in progressions if p.last > dose_day and p.first <= end]
    progression = min((p.first for p in progression_records if p.precise), default=None)
    death = min((d.first for d in death_records if d.precise), default=None)
    early = [d for d in deaths if d.last < dose_day]
    if early:
        shown = min(early, key=lambda d: d.first).text
        if death_records or any(d.first > end for d in deaths):
            notes.append(f"a death dated {shown} before the first dose was ignored")
        else:
            # Recorded dead, on a day that cannot be: no longer at risk, from a day no record gives.
            notes.append(f"a death dated {shown} before the first dose: the day of death is not known")
            death_date_unknown = True
    # A month or year that holds the known day is the same event, less precisely recorded; one
    # wholly before it may be an earlier event.
    vague_deaths = [d for d in death_records if not d.precise and (death is None or d.last < death)]
    if vague_deaths:
        shown = ", ".join(sorted({d.text for d in vague_deaths}))
        notes.append(f"death recorded only as {shown}: the day is not known, OS unknown")
        death, death_date_unknown = None, True
    if death is not None:
        death_date_unknown = False
    vague_progressions = [
        p for p in progression_records if not p.precise and (progression is None or p.last < progression)
    ]
    # PFS ends at the first event. It is unknown when an event of unknown day may come first: a
    # progression known only by its month or year, or a death without a day (which cannot precede a
    # known progression: the patient was alive at it).
    known = [day for day in (progression, death) if day is not None]
    first = min(known, default=None)
    bounds = [max(p.first, date.fromordinal(dose_day.toordinal() + 1)) for p in vague_progressions]
    if death_date_unknown:
        bounds.append(max(dose_day, progression) if progression else dose_day)
    pfs_unknown = any(first is None or bound < first for bound in bounds)
    if vague_progressions and pfs_unknown:
        shown = ", ".join(sorted({p.text for p in vague_progressions}))
        notes.append(f"progression recorded only as {shown}: the day is not known, PFS unknown")
    elif pfs_unknown:
        notes.append("the day of death is not known and no progression came before it: PFS unknown")
    if pfs_unknown:
        pfs_days, pfs_event = None, None
    elif first is not None:
        pfs_days, pfs_event = (first - dose_day).days, 1
    else:
        pfs_days, pfs_event = (end - dose_day).days, 0
    if death is not None:
        os_days, os_event = (death - dose_day).days, 1
    elif death_date_unknown:
        os_days, os_event = None, None
    else:
        os_days, os_event = (end - dose_day).days, 0
    return Survival(
        None if vague_progressions and pfs_unknown else progression,
        death,
        end,
        pfs_days,
        pfs_event,
        os_days,
        os_event,
        tuple(notes),
    )


def _synthetic(resource: Resource | None) -> bool:
    meta = resource.get("meta") if resource else None
    if not isinstance(meta, Mapping):
        return False
    return any(
        isinstance(t, Mapping) and (t.get("system"), t.get("code")) == codes.SYNTHETIC_TAG
        for t in items_of(meta, "tag")
    )


def patient_row(
    dose: FirstDose,
    lines: Sequence[tuple[str, str]],
    definition: CohortDefinition,
    last_contact: date | None = None,
) -> dict[str, Any] | None:
    """The cohort-table row of one patient from ``(resource type, JSON line)`` pairs; None if excluded.

    The lines are read in a fixed order (engines hand them over in any order), so that reasons and
    notes, which follow the order of the results, read the same from every engine and every run.
    """
    # Spark keeps the spaces around a line, DuckDB strips them: sort on what both hand over.
    resources = [loads(line) for _, line in sorted(lines, key=lambda item: (item[0], item[1].strip()))]
    resources = [r for r in resources if isinstance(r, Mapping)]
    # Only the current version of a resource sent more than once (as the card's path reads labs):
    # a progression or an ECOG later entered in error no longer counts.
    current, _, unordered = current_versions([(r, None) for r in resources])
    resources = [r for r, _ in current]
    patient = next((r for r in resources if r.get("resourceType") == "Patient"), None)
    observations = [r for r in resources if r.get("resourceType") == "Observation"]
    conditions = [r for r in resources if r.get("resourceType") == "Condition" and not _is_void(r)]
    if definition.diagnosis_codes and not any(_has_code(c, definition.diagnosis_codes) for c in conditions):
        return None
    notes: list[str] = (
        [f"{', '.join(unordered)} came in versions that cannot be ordered, one withdrawn: none was used"]
        if unordered
        else []
    )
    row: dict[str, Any] = dict.fromkeys(COLUMN_NAMES)
    row.update(
        patient_id=dose.patient,
        synthetic=_synthetic(patient),
        first_ici_date=dose.day,
        first_ici_time=dose.time_as_sent,
        ici_agent=dose.agent,
        ici_target=dose.target,
        ici_source=dose.reference,
        ici_matched_by=dose.matched_by,
    )
    # Baseline and score: the service's own path, at the first dose. Only Observations the mappers
    # can read, in the lab window, are handed over (as the engine's narrowing does).
    labs = [
        o
        for o in observations
        if _may_be_lab(o, definition.lab_code_set) and _in_lab_window(o, dose.day, definition)
    ]
    assessment = assess(
        [(r, None) for r in labs], dose.at, definition.mapping, patient=CallPatient(dose.patient)
    )
    result = assessment.result
    neutrophils = result.parts[Part.NEUTROPHILS]
    ig = result.parts[Part.IMMATURE_GRANULOCYTES]
    row.update(
        neutrophils_per_uL=plain(neutrophils.measurement.value_per_uL) if neutrophils.measurement else None,
        neutrophils_points=neutrophils.points,
        ig_per_uL=plain(ig.measurement.value_per_uL) if ig.measurement else None,
        ig_points=ig.points,
        ig_derived=ig.measurement.derived if ig.measurement else None,
        ichis=result.score,
        ichis_status=result.status.value,
        ichis_lower=result.lower,
        ichis_upper=result.upper,
        icis=assessment.icis.score if assessment.icis else None,
        baseline_reasons=" | ".join(assessment.reasons) or None,
    )
    # Covariates at the first dose.
    if patient is not None:
        gender = patient.get("gender")
        row["sex"] = gender if isinstance(gender, str) else None
        birth = _span(patient.get("birthDate"))
        if birth is not None:
            # A birth year or month (FHIR allows both) gives the age when every day of it does.
            youngest, oldest = age_in_years(birth.last, dose.day), age_in_years(birth.first, dose.day)
            if youngest == oldest:
                row["age_years"] = youngest
            else:
                notes.append(f"birthDate {birth.text} gives an age of {youngest} or {oldest}: age unknown")
    # Only Observations that carry a covariate code are looked at again below.
    covariate_codes = definition.ecog_codes | definition.pdl1_codes | definition.smoking_codes
    usable = [o for o in observations if _has_code(o, covariate_codes) and not _is_void(o)]
    window_start = date.fromordinal(dose.day.toordinal() - definition.ecog_window_days)
    row["ecog"] = _latest(
        (day, value)
        for o in usable
        if _has_code(o, definition.ecog_codes)
        and (day := _observation_day(o)) is not None
        and window_start <= day <= dose.day
        and (value := ecog_value(o)) is not None
    )
    pdl1 = _latest(
        (day, tps)
        for o in usable
        if _has_code(o, definition.pdl1_codes)
        and (day := _observation_day(o)) is not None
        and day <= dose.day
        and (tps := _pdl1(o)) is not None
    )
    if pdl1 is not None:
        row["pdl1_tps"], row["pdl1_category"] = pdl1
    row["smoking"] = _latest(
        (day, status)
        for o in usable
        if _has_code(o, definition.smoking_codes)
        and (day := _observation_day(o)) is not None
        and day <= dose.day
        and (status := _smoking(o)) is not None
    )
    details: dict[str, date] = {}
    for condition in conditions:
        day = _condition_day(condition) or date.min
        for coding in _codings(condition.get("code")):
            if (found := definition.histology.get(coding)) is not None:
                details[found] = max(day, details.get(found, date.min))
    if details:
        # The latest specific histology: a later staging code that says only "NSCLC" does not
        # undo an earlier squamous or adenocarcinoma diagnosis.
        specific = {k: v for k, v in details.items() if k not in codes.UNSPECIFIED_DETAILS} or details
        detail = max(specific, key=lambda k: (specific[k], k))
        row["histology_detail"] = detail
        row["histology"] = "SqCC" if detail in codes.SQUAMOUS_DETAILS else "Non-SqCC"
        if len(details) > 1:
            notes.append(f"several histologies recorded ({', '.join(sorted(details))}); the latest is used")
    # Outcomes.
    event_codes = frozenset(
        c for rule in definition.death_rules + definition.progression_rules for c in rule.codes
    )
    events = [r for r in observations + conditions if _has_code(r, event_codes)]
    deaths = _event_dates(events, definition.death_rules)
    unknown_death = False
    if patient is not None and definition.death_from_patient:
        deceased = _span(patient.get("deceasedDateTime"))
        if deceased is not None:
            deaths.append(deceased)
        elif patient.get("deceasedBoolean") is True and not deaths:
            unknown_death = True
            notes.append("Patient.deceasedBoolean is true without a date: OS is unknown")
    progressions = _event_dates(events, definition.progression_rules)
    end = definition.cutoff
    if definition.follow_up == "last-contact":
        # A recorded event is contact too: the patient was seen progressing, or known to have died.
        # A month-only event counts from its first day: the follow-up reaches into that month.
        seen = [e.first for e in deaths + progressions if e.first <= definition.cutoff]
        end = max(d for d in (last_contact, dose.day, *seen) if d)
    times = survival(
        dose.day, deaths=deaths, progressions=progressions, end=end, death_date_unknown=unknown_death
    )
    notes += times.notes
    row.update(
        progression_date=times.progression,
        death_date=times.death,
        follow_up_end=times.end,
        pfs_days=times.pfs_days,
        pfs_event=times.pfs_event,
        os_days=times.os_days,
        os_event=times.os_event,
        notes=" | ".join(notes) or None,
    )
    return row
