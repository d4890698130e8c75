"""Dates as the cohort reads them: the day a FHIR date was written with, and the days a date may denote.

Days are compared as written, never moved between zones, because the engines narrow by the same
written day (``plan._date``) and a row must not depend on how much an engine kept. Instants, where
the service needs them, are ``fhir_mappings.fhirtime``'s.
"""

from __future__ import annotations

import re
from calendar import monthrange
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any

from fhir_mappings.resources import Resource

_ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_MONTH = re.compile(r"[0-9]{4}-[0-9]{2}")
_YEAR = re.compile(r"[0-9]{4}")


def written_day(text: Any) -> date | None:
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


def event_date(text: Any) -> EventDate | None:
    """A FHIR date or dateTime as the days it may denote; None when it is no such date."""
    if not isinstance(text, str):
        return None
    if (day := written_day(text)) is not None:
        return EventDate(day, day, text)
    # Not fhirtime.parse_when: it refuses the years 0001 and 9999 (outside the instants it can
    # shift) and reads digits other than ASCII and text around the date, which the engines do not.
    try:
        if _MONTH.fullmatch(text):
            year, month = int(text[:4]), int(text[5:7])
            return EventDate(date(year, month, 1), date(year, month, monthrange(year, month)[1]), text)
        if _YEAR.fullmatch(text):
            return EventDate(date(int(text), 1, 1), date(int(text), 12, 31), text)
    except ValueError:
        return None
    return None


def _period_start(resource: Resource, key: str) -> Any:
    period = resource.get(key)
    return period.get("start") if isinstance(period, Mapping) else None


def observation_time(resource: Resource) -> Any:
    """The Observation's time as sent: the first of effectiveDateTime, effectiveInstant and
    effectivePeriod.start that is present."""
    start = _period_start(resource, "effectivePeriod")
    return resource.get("effectiveDateTime") or resource.get("effectiveInstant") or start


def observation_day(resource: Resource) -> date | None:
    """The day of ``observation_time``, as written."""
    return written_day(observation_time(resource))


def window_day(resource: Resource) -> date | None:
    """The day the engines window an Observation by: the first of effectiveDateTime, effectiveInstant,
    effectivePeriod.start and .end that reads as a date (plan.patient_resources computes the same)."""
    period = resource.get("effectivePeriod")
    times = [resource.get("effectiveDateTime"), resource.get("effectiveInstant")]
    if isinstance(period, Mapping):
        times += [period.get("start"), period.get("end")]
    return next((day for day in map(written_day, times) if day is not None), None)


def condition_time(resource: Resource) -> Any:
    """The Condition's time as sent: onsetDateTime, else onsetPeriod.start, else recordedDate."""
    return (
        resource.get("onsetDateTime")
        or _period_start(resource, "onsetPeriod")
        or resource.get("recordedDate")
    )


def condition_day(resource: Resource) -> date | None:
    """The day of ``condition_time``, as written."""
    return written_day(condition_time(resource))
