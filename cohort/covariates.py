"""The covariates of the paper's models at the first dose: age, sex, ECOG, PD-L1, smoking, histology."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import date
from decimal import Decimal
from typing import Any

from cohort import codes
from cohort.codes import Code
from cohort.dates import condition_day, event_date, observation_day
from cohort.definition import CohortDefinition
from cohort.matching import codes_of, has_code, is_void
from fhir_mappings.resources import Resource, decimal_of, text_of
from ichis.measurement import plain

PDL1_CATEGORIES = ("<1%", "1-49%", ">=50%")


def age_in_years(birth: date, on: date) -> int:
    """Whole years of age on a day (a birthday on 29 February counts on 1 March in common years)."""
    return on.year - birth.year - ((on.month, on.day) < (birth.month, birth.day))


def ecog_value(resource: Resource) -> int | None:
    """ECOG 0-5 from valueInteger (mCODE), a valueQuantity, or a LOINC LL529-9 answer code."""
    for key in ("valueInteger", "valueQuantity"):
        raw = resource.get(key)
        number = decimal_of(raw.get("value") if isinstance(raw, Mapping) else raw)
        if number is not None and number == number.to_integral_value() and 0 <= number <= 5:
            return int(number)
    for coding in codes_of(resource.get("valueCodeableConcept")):
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
    """The TPS as written (with its comparator) and its group; None when it is no percentage."""
    quantity = resource.get("valueQuantity")
    if not isinstance(quantity, Mapping):
        return None
    value = decimal_of(quantity.get("value"))
    if value is None or value < 0 or value > 100:
        return None
    comparator = text_of(quantity, "comparator")
    shown = f"{comparator or ''}{plain(value)}"
    return shown, pdl1_category(value, comparator)


def _smoking(resource: Resource) -> str | None:
    values = set(codes_of(resource.get("valueCodeableConcept")))
    if values & codes.SMOKING_NEVER:
        return "Never"
    if values & codes.SMOKING_EVER:
        return "Former or current"
    return None


def _latest(items: Iterable[tuple[date, Any]]) -> Any:
    ordered = sorted(items, key=lambda item: item[0])
    return ordered[-1][1] if ordered else None


def _latest_value(
    observations: Sequence[Resource],
    wanted: frozenset[Code],
    days: tuple[date, date],
    read: Callable[[Resource], Any],
) -> Any:
    """What ``read`` finds in the latest Observation with a ``wanted`` code dated within ``days``
    (first and last, as written); of one day, the last in the given order."""
    first, last = days
    return _latest(
        (day, value)
        for o in observations
        if has_code(o, wanted)
        and (day := observation_day(o)) is not None
        and first <= day <= last
        and (value := read(o)) is not None
    )


def _demographics(patient: Resource | None, dose_day: date) -> tuple[dict[str, Any], list[str]]:
    """Sex and age at the first dose, and a note when the birth date leaves the age open."""
    if patient is None:
        return {}, []
    columns: dict[str, Any] = {"sex": text_of(patient, "gender")}
    notes = []
    birth = event_date(patient.get("birthDate"))
    if birth is not None:
        # A birth year or month (FHIR allows both) gives the age when every day of it does.
        youngest, oldest = age_in_years(birth.last, dose_day), age_in_years(birth.first, dose_day)
        if youngest == oldest:
            columns["age_years"] = youngest
        else:
            notes.append(f"birthDate {birth.text} gives an age of {youngest} or {oldest}: age unknown")
    return columns, notes


def _observed(
    observations: Sequence[Resource], dose_day: date, definition: CohortDefinition
) -> dict[str, Any]:
    """ECOG (latest in its window up to the dose), PD-L1 and smoking (latest up to the dose)."""
    # Only Observations that carry a covariate code are looked at again below.
    covariate_codes = definition.ecog_codes | definition.pdl1_codes | definition.smoking_codes
    usable = [o for o in observations if has_code(o, covariate_codes) and not is_void(o)]
    ecog_start = date.fromordinal(dose_day.toordinal() - definition.ecog_window_days)
    columns = {
        "ecog": _latest_value(usable, definition.ecog_codes, (ecog_start, dose_day), ecog_value),
    }
    pdl1 = _latest_value(usable, definition.pdl1_codes, (date.min, dose_day), _pdl1)
    if pdl1 is not None:
        columns["pdl1_tps"], columns["pdl1_category"] = pdl1
    columns["smoking"] = _latest_value(usable, definition.smoking_codes, (date.min, dose_day), _smoking)
    return columns


def _histology(
    conditions: Sequence[Resource], definition: CohortDefinition
) -> tuple[dict[str, Any], list[str]]:
    """The latest specific histology among the Conditions, and a note when several are recorded."""
    details: dict[str, date] = {}
    for condition in conditions:
        day = condition_day(condition) or date.min
        for coding in codes_of(condition.get("code")):
            if (found := definition.histology.get(coding)) is not None:
                details[found] = max(day, details.get(found, date.min))
    if not details:
        return {}, []
    # The latest specific histology: a later staging code that says only "NSCLC" does not
    # undo an earlier squamous or adenocarcinoma diagnosis.
    specific = {k: v for k, v in details.items() if k not in codes.UNSPECIFIED_DETAILS} or details
    detail = max(specific, key=lambda k: (specific[k], k))
    columns = {
        "histology_detail": detail,
        "histology": "SqCC" if detail in codes.SQUAMOUS_DETAILS else "Non-SqCC",
    }
    notes = []
    if len(details) > 1:
        notes.append(f"several histologies recorded ({', '.join(sorted(details))}); the latest is used")
    return columns, notes


def covariates(
    patient: Resource | None,
    observations: Sequence[Resource],
    conditions: Sequence[Resource],
    dose_day: date,
    definition: CohortDefinition,
) -> tuple[dict[str, Any], list[str]]:
    """The covariate columns of a row at the first dose (``conditions``: those not withdrawn), with notes."""
    demographics, notes = _demographics(patient, dose_day)
    histology, histology_notes = _histology(conditions, definition)
    return demographics | _observed(observations, dose_day, definition) | histology, notes + histology_notes
