"""Outcomes from the first dose: when the records say a patient progressed or died, and PFS and OS."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

from cohort.dates import EventDate, condition_time, event_date, observation_time
from cohort.definition import CohortDefinition, EventRule
from cohort.matching import codes_of, has_code, is_void
from fhir_mappings.resources import Resource


def event_dates(resources: Sequence[Resource], rules: Sequence[EventRule]) -> list[EventDate]:
    """When resources that match an event rule say it happened: an Observation's valueDateTime,
    else its time; a Condition's onset, else its recorded date. A month or a year is kept as such."""
    found = []
    for resource in resources:
        if is_void(resource):
            continue
        for rule in rules:
            if resource.get("resourceType") != rule.resource or not has_code(resource, rule.codes):
                continue
            if (
                rule.values is not None
                and not set(codes_of(resource.get("valueCodeableConcept"))) & rule.values
            ):
                continue
            if rule.resource == "Observation":
                when = event_date(resource.get("valueDateTime")) or event_date(observation_time(resource))
            else:
                when = event_date(condition_time(resource))
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


def _deaths(
    patient: Resource | None, events: Sequence[Resource], definition: CohortDefinition
) -> tuple[list[EventDate], bool, list[str]]:
    """The recorded deaths, whether the patient is dead on a day no record gives, and why."""
    deaths = event_dates(events, definition.death_rules)
    if patient is None or not definition.death_from_patient:
        return deaths, False, []
    deceased = event_date(patient.get("deceasedDateTime"))
    if deceased is not None:
        return [*deaths, deceased], False, []
    if patient.get("deceasedBoolean") is True and not deaths:
        return deaths, True, ["Patient.deceasedBoolean is true without a date: OS is unknown"]
    return deaths, False, []


def _follow_up_end(
    deaths: Sequence[EventDate],
    progressions: Sequence[EventDate],
    dose_day: date,
    definition: CohortDefinition,
    last_contact: date | None,
) -> date:
    """The cut-off, or with ``last-contact`` follow-up the last day the patient was known alive or seen."""
    if definition.follow_up != "last-contact":
        return definition.cutoff
    # A recorded event is contact too: the patient was seen progressing, or known to have died.
    # A month-only event counts from its first day: the follow-up reaches into that month.
    seen = [e.first for e in [*deaths, *progressions] if e.first <= definition.cutoff]
    return max(d for d in (last_contact, dose_day, *seen) if d)


def outcomes(
    patient: Resource | None,
    records: Sequence[Resource],
    dose_day: date,
    definition: CohortDefinition,
    last_contact: date | None,
) -> tuple[dict[str, Any], list[str]]:
    """The outcome columns of a row (events, follow-up end, PFS, OS) and the notes on them."""
    # ``records``: the Observations, then the Conditions not withdrawn (events are read in that order).
    event_codes = frozenset(
        c for rule in definition.death_rules + definition.progression_rules for c in rule.codes
    )
    events = [r for r in records if has_code(r, event_codes)]
    deaths, unknown_death, notes = _deaths(patient, events, definition)
    progressions = event_dates(events, definition.progression_rules)
    end = _follow_up_end(deaths, progressions, dose_day, definition, last_contact)
    times = survival(
        dose_day, deaths=deaths, progressions=progressions, end=end, death_date_unknown=unknown_death
    )
    columns = {
        "progression_date": times.progression,
        "death_date": times.death,
        "follow_up_end": times.end,
        "pfs_days": times.pfs_days,
        "pfs_event": times.pfs_event,
        "os_days": times.os_days,
        "os_event": times.os_event,
    }
    return columns, notes + list(times.notes)
