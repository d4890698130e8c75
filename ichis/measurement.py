"""Typed lab inputs for the scores: an exact value in cells/uL and where it came from."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import StrEnum


class Comparator(StrEnum):
    """How a reported value bounds the true one (FHIR Quantity.comparator, R4 value set)."""

    LT = "<"
    LE = "<="
    GE = ">="
    GT = ">"


@dataclass(frozen=True, slots=True)
class Source:
    """Where a value came from, kept so that every number shown can be traced back.

    ``reference`` is the literal reference of the record (for FHIR, ``Observation/123``); the
    domain treats it as an opaque label. ``value_as_sent`` and ``unit_as_sent`` are the text the
    sender used, before any normalisation.
    """

    reference: str
    effective: datetime
    value_as_sent: str
    unit_as_sent: str
    status: str
    #: Stable label of the blood sample (specimen reference, or the collection instant).
    sample: str


@dataclass(frozen=True, slots=True)
class Measurement:
    """One lab value in cells/uL, exact, with its comparator and provenance.

    A derived value (IG# from IG% x WBC) lists the sources it was computed from; ``source`` is
    then the one that defines its time and sample (the IG% result).
    """

    value_per_uL: Decimal
    source: Source
    comparator: Comparator | None = None
    derived_from: tuple[Source, ...] = ()

    def __post_init__(self) -> None:
        if not self.value_per_uL.is_finite() or self.value_per_uL < 0:
            raise ValueError(f"a cell count must be a finite, non-negative decimal: {self.value_per_uL!r}")
        if self.effective.tzinfo is None:
            raise ValueError("a measurement's time must carry a time zone")

    @property
    def derived(self) -> bool:
        return bool(self.derived_from)

    @property
    def effective(self) -> datetime:
        return self.source.effective

    def shown(self) -> str:
        """The normalised value as a person reads it: ``<10/uL``, ``9,450/uL``."""
        prefix = self.comparator.value if self.comparator else ""
        return f"{prefix}{format_count(self.value_per_uL)}/uL"


def plain(value: Decimal) -> str:
    """A decimal without exponent or trailing zeros: ``Decimal('80.00')`` -> ``'80'``."""
    text = format(value.normalize(), "f")
    return text


def format_count(value: Decimal) -> str:
    """Thousands separators for counts, keeping any fraction exactly: ``9450.5`` -> ``9,450.5``."""
    text = plain(value)
    whole, _, fraction = text.partition(".")
    grouped = f"{int(whole):,}"
    return f"{grouped}.{fraction}" if fraction else grouped
