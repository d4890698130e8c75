"""IChIS: one point for NEUT# > 9,000/uL and one for IG# > 80/uL (Kang et al. 2024, Table 2).

Pure: takes typed measurements (or their absence) and returns a result that carries its inputs,
the points each decided and why. It never fills a missing value: an unknown part widens the bounds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum

from ichis.measurement import Comparator, Measurement, format_count
from ichis.reference import (
    IMMATURE_GRANULOCYTE_CUTOFF_PER_UL,
    NEUTROPHIL_CUTOFF_PER_UL,
    PUBLISHED_STRATA,
    PublishedStratum,
)


class Status(StrEnum):
    """How much of the score the data supports."""

    COMPLETE = "complete"  # both parts decided
    PARTIAL = "partial"  # one part decided: the score lies between ``lower`` and ``upper``
    UNAVAILABLE = "unavailable"  # neither part decided


class Part(StrEnum):
    NEUTROPHILS = "neutrophils"
    IMMATURE_GRANULOCYTES = "immature_granulocytes"


#: What each part measures and its cut-off; a label a clinician recognises.
PART_LABELS: dict[Part, str] = {
    Part.NEUTROPHILS: "Neutrophils (NEUT#)",
    Part.IMMATURE_GRANULOCYTES: "Immature granulocytes (IG#)",
}
CUTOFFS: dict[Part, Decimal] = {
    Part.NEUTROPHILS: NEUTROPHIL_CUTOFF_PER_UL,
    Part.IMMATURE_GRANULOCYTES: IMMATURE_GRANULOCYTE_CUTOFF_PER_UL,
}


@dataclass(frozen=True, slots=True)
class PartResult:
    """The points one part contributes, the input that decided them, and a sentence saying why."""

    part: Part
    cutoff_per_uL: Decimal
    points: int | None
    measurement: Measurement | None
    explanation: str


@dataclass(frozen=True, slots=True)
class IChISResult:
    """IChIS with its bounds, parts and, when the score is known, the published stratum."""

    score: int | None
    status: Status
    lower: int
    upper: int
    parts: dict[Part, PartResult]
    stratum: PublishedStratum | None = field(default=None)


def points_above(measurement: Measurement, cutoff: Decimal) -> int | None:
    """1 if the true value is surely > cutoff, 0 if surely <= cutoff, None if the report can't say.

    A comparator bounds the true value: ``<10/uL`` settles "not above 80" but ``<100/uL`` does
    not, and ``>9,000/uL`` settles "above 9,000" (the true value exceeds the bound).
    """
    value = measurement.value_per_uL
    match measurement.comparator:
        case None:
            return 1 if value > cutoff else 0
        case Comparator.LT | Comparator.LE:
            # true < value (or <=): surely not above the cut-off only when value <= cutoff.
            return 0 if value <= cutoff else None
        case Comparator.GT:
            # true > value: surely above when value >= cutoff.
            return 1 if value >= cutoff else None
        case Comparator.GE:
            return 1 if value > cutoff else None


def score_part(part: Part, measurement: Measurement | None, missing_reason: str = "") -> PartResult:
    """Decide one part's points from its measurement, or record why it stays unknown."""
    cutoff = CUTOFFS[part]
    limit = f"{format_count(cutoff)}/uL"
    if measurement is None:
        reason = missing_reason or "no usable result"
        return PartResult(part, cutoff, None, None, f"{PART_LABELS[part]}: unknown ({reason}).")
    points = points_above(measurement, cutoff)
    shown = measurement.shown()
    if points is None:
        why = f"{shown} does not settle whether it is above {limit}"
    elif points == 1:
        why = f"{shown} is above {limit}"
    else:
        why = f"{shown} is not above {limit}"
    label = PART_LABELS[part]
    verdict = "unknown" if points is None else f"{points} point{'s' if points != 1 else ''}"
    return PartResult(part, cutoff, points, measurement, f"{label}: {why}: {verdict}.")


def score_ichis(
    neutrophils: Measurement | None,
    immature_granulocytes: Measurement | None,
    *,
    neutrophils_missing: str = "",
    immature_granulocytes_missing: str = "",
) -> IChISResult:
    """IChIS = A + B (Table 2), with bounds when a part is unknown and the published stratum."""
    parts = {
        Part.NEUTROPHILS: score_part(Part.NEUTROPHILS, neutrophils, neutrophils_missing),
        Part.IMMATURE_GRANULOCYTES: score_part(
            Part.IMMATURE_GRANULOCYTES, immature_granulocytes, immature_granulocytes_missing
        ),
    }
    known = [p.points for p in parts.values() if p.points is not None]
    unknown = len(parts) - len(known)
    lower = sum(known)
    upper = lower + unknown
    if unknown == 0:
        status, score = Status.COMPLETE, lower
    elif known:
        status, score = Status.PARTIAL, None
    else:
        status, score = Status.UNAVAILABLE, None
    stratum = PUBLISHED_STRATA[score] if score is not None else None
    return IChISResult(score, status, lower, upper, parts, stratum)
