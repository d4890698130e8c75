"""What the card and the SMART page both say about a score, written once so that the two agree.

Pure, plain text: the card adds its Markdown and the page its HTML around these words.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from ichis.measurement import Measurement, format_count
from ichis.reference import PublishedStratum, stratum_heading, stratum_outcomes
from ichis.score import CUTOFFS, IChISResult, Part, Status

#: The analysers' short names of the two parts, as clinicians read them on a blood count.
SHORT_NAMES: dict[Part, str] = {Part.NEUTROPHILS: "NEUT#", Part.IMMATURE_GRANULOCYTES: "IG#"}
#: Why a partial score has no stratum.
NO_STRATUM = "one part is unknown, so no stratum is stated"


def when(moment: datetime) -> str:
    """A time in the offset it was sent with, to the minute: ``2026-11-28 09:00 +0900``."""
    return moment.strftime("%Y-%m-%d %H:%M %z").replace(" +0000", " UTC")


def age(moment: datetime, at: datetime) -> str:
    """How long before ``at`` the result at ``moment`` was collected: hours up to 36, then days."""
    seconds = (at - moment).total_seconds()
    if seconds < 0:
        # Never "0 h before": a result from after the order would pass for one taken at it.
        return "after the reference time"
    if seconds < 3600 * 36:
        return f"{int(seconds // 3600)} h before"
    return f"{int(seconds // 86400)} days before"


def headline(result: IChISResult) -> str:
    """The score in a few words: ``IChIS 2 of 2``, ``IChIS 0 to 1 of 2`` or ``IChIS not available``."""
    if result.status is Status.COMPLETE:
        return f"IChIS {result.score} of 2"
    if result.status is Status.PARTIAL:
        return f"IChIS {result.lower} to {result.upper} of 2"
    return "IChIS not available"


def indicator(result: IChISResult) -> str:
    """``warning`` for a complete IChIS 2 (the shortest published survival), ``info`` otherwise."""
    return "warning" if result.status is Status.COMPLETE and result.score == 2 else "info"


def stratum_sentence(stratum: PublishedStratum, strong: Callable[[str], str] = str) -> str:
    """The published outcomes of a stratum after its heading; ``strong`` marks the heading up."""
    return f"{strong(stratum_heading(stratum))} {stratum_outcomes(stratum)}"


def cutoff(part: Part) -> str:
    """A part's cut-off as the score applies it: ``> 9,000/uL``."""
    return f"> {format_count(CUTOFFS[part])}/uL"


def points(points: int | None) -> str:
    """A part's points, or ``unknown``."""
    return "unknown" if points is None else str(points)


def derivation(measurement: Measurement) -> str:
    """What a derived IG# was computed from, as sent: ``IG% 0.9 % x WBC 10.2 10*3/uL``."""
    pct, wbc = measurement.derived_from
    return f"IG% {pct.value_as_sent} {pct.unit_as_sent} x WBC {wbc.value_as_sent} {wbc.unit_as_sent}"
