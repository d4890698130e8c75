"""FHIR date and time values as instants, with their precision kept.

FHIR dateTime (https://hl7.org/fhir/R4/datatypes.html#dateTime) may be a year, a month, a day or
a time with a zone offset. A value of lower precision is an interval, and an interval is what we
keep: a blood count dated "2024-03-01" cannot be placed before or after an order at 10:00 that day.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone, tzinfo

_DATETIME = re.compile(
    r"^(?P<year>\d{4})(?:-(?P<month>\d{2})(?:-(?P<day>\d{2})"
    r"(?:T(?P<time>\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?)(?P<zone>Z|[+-]\d{2}:\d{2})?)?)?)?$"
)


class TimeFormatError(ValueError):
    """Not a FHIR date or dateTime."""


@dataclass(frozen=True, slots=True)
class When:
    """A FHIR time as the interval it denotes: ``earliest`` <= true instant < ``latest``.

    For a full timestamp both ends are the same instant. ``zone_assumed`` says the sender omitted
    the offset (against the FHIR rules) and the site's zone was used.
    """

    earliest: datetime
    latest: datetime
    text: str
    precise: bool
    zone_assumed: bool = False


@functools.lru_cache(maxsize=64)
def _offset(zone: str) -> tzinfo:
    if zone == "Z":
        return UTC
    sign = -1 if zone[0] == "-" else 1
    hours, minutes = int(zone[1:3]), int(zone[4:6])
    if hours > 14 or minutes > 59:
        raise ValueError(f"offset {zone} is out of range")
    return timezone(sign * timedelta(hours=hours, minutes=minutes))


def parse_when(text: str, naive_zone: tzinfo) -> When:
    """Parse a FHIR date, dateTime or instant; raise TimeFormatError for anything else."""
    if not isinstance(text, str):
        raise TimeFormatError("a date must be a string")
    return _parse_when(text, naive_zone)


@functools.lru_cache(maxsize=4096)
def _parse_when(text: str, naive_zone: tzinfo) -> When:
    """Cached: the results of one blood draw share their timestamp, and When is immutable."""
    m = _DATETIME.match(text.strip())
    if not m:
        raise TimeFormatError(f"'{text}' is not a FHIR dateTime")
    try:
        if m["time"]:
            clock = m["time"]
            if "." in clock:  # FHIR allows any number of fraction digits; Python takes six.
                whole, fraction = clock.split(".")
                clock = f"{whole}.{fraction[:6]}"
            stamp = datetime.fromisoformat(f"{m['year']}-{m['month']}-{m['day']}T{clock}")
            zone = m["zone"]
            stamp = stamp.replace(tzinfo=naive_zone if zone is None else _offset(zone))
            _within_range(text, stamp)
            return When(stamp, stamp, text, precise=True, zone_assumed=zone is None)
        # A date without a time has no zone: FHIR leaves it to the local calendar of the sender.
        year = int(m["year"])
        if m["day"]:
            first = date(year, int(m["month"]), int(m["day"]))
            after = first + timedelta(days=1)
        elif m["month"]:
            first = date(year, int(m["month"]), 1)
            after = date(year + (first.month == 12), first.month % 12 + 1, 1)
        else:
            first, after = date(year, 1, 1), date(year + 1, 1, 1)
        start = datetime(first.year, first.month, first.day, tzinfo=naive_zone)
        end = datetime(after.year, after.month, after.day, tzinfo=naive_zone)
    except OverflowError:
        # The day after 9999-12-31 does not exist for Python.
        raise TimeFormatError(f"'{text}' {_OUTSIDE}") from None
    except ValueError as error:
        raise TimeFormatError(f"'{text}' is not a valid date: {error}") from None
    _within_range(text, start)
    _within_range(text, end)
    return When(start, end, text, precise=False, zone_assumed=True)


#: Instants Python can move to UTC and compare or shift by weeks without overflow. Records carry
#: placeholder dates at the ends of the calendar ("9999-12-31", "0001-01-01T00:00:00+14:00").
_EARLIEST = datetime(1, 2, 1, tzinfo=UTC)
_LATEST = datetime(9999, 12, 1, tzinfo=UTC)
_OUTSIDE = "is outside the dates that can be compared (0001-02 to 9999-11)"


def in_range(moment: datetime) -> bool:
    """Whether an aware instant lies where it can be compared and shifted (see ``_EARLIEST``)."""
    try:
        return _EARLIEST <= moment.astimezone(UTC) <= _LATEST
    except (OverflowError, ValueError):
        return False


def _within_range(text: str, moment: datetime) -> None:
    if not in_range(moment):
        raise TimeFormatError(f"'{text}' {_OUTSIDE}")


def utc(moment: datetime) -> datetime:
    """The same instant in UTC, for display and for stable sample labels."""
    return moment.astimezone(UTC)
