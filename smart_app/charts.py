"""Chart geometry for the server-rendered SVG: numbers only, the markup lives in the templates.

Pure functions from values to coordinates. Coordinates are floats because they are drawing
positions; every number a reader sees is a label made from the exact decimal, never from them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

from ichis.measurement import format_count
from ichis.reference import Estimate, PublishedStratum

WIDTH = 940  # the viewBox width: the page's content column in a 1024 px pane


@dataclass(frozen=True, slots=True)
class Tick:
    pos: float
    label: str


@dataclass(frozen=True, slots=True)
class Box:
    """The plot area inside the SVG's viewBox."""

    left: float
    top: float
    right: float
    bottom: float

    @property
    def width(self) -> float:
        return self.right - self.left

    @property
    def height(self) -> float:
        return self.bottom - self.top


def nice_step(span: float, target_ticks: int = 5) -> float:
    """A round tick step (1, 2, 2.5 or 5 times a power of ten) giving about ``target_ticks`` ticks."""
    raw = span / max(target_ticks, 1)
    magnitude = 10.0 ** math.floor(math.log10(raw))
    return next(f * magnitude for f in (1.0, 2.0, 2.5, 5.0, 10.0) if raw <= f * magnitude)


def _count_label(value: float) -> str:
    return format_count(Decimal(str(round(value, 6))))


@dataclass(frozen=True, slots=True)
class TrendPoint:
    x: float
    y: float
    #: What the point says, for its SVG <title> (a tooltip; the table below the chart says it too).
    label: str
    baseline: bool
    #: The value is only a bound (``<10/uL``): drawn hollow.
    bounded: bool


@dataclass(frozen=True, slots=True)
class TrendChart:
    height: float
    box: Box
    x_ticks: tuple[Tick, ...]
    y_ticks: tuple[Tick, ...]
    cutoff_y: float
    cutoff_label: str
    window_x: float  # where the look-back window starts; it ends at the reference time
    at_x: float
    points: tuple[TrendPoint, ...]
    path: str  # "x,y x,y ..." for the connecting polyline
    width: float = WIDTH

    @property
    def baseline(self) -> TrendPoint | None:
        return next((p for p in self.points if p.baseline), None)


@dataclass(frozen=True, slots=True)
class TrendInput:
    """One value to plot, in cells/uL."""

    when: datetime
    value: Decimal
    label: str
    baseline: bool = False
    bounded: bool = False


def _month_ticks(start: datetime, end: datetime, x_of: Callable[[datetime], float]) -> tuple[Tick, ...]:
    ticks: list[Tick] = []
    cursor = datetime(start.year, start.month, 1, tzinfo=UTC)
    while cursor <= end:
        if cursor >= start:
            ticks.append(Tick(x_of(cursor), cursor.strftime("%b %Y")))
        cursor = datetime(cursor.year + cursor.month // 12, cursor.month % 12 + 1, 1, tzinfo=UTC)
    if len(ticks) < 2:  # a short range: label its ends instead of a month start or two
        ticks = [Tick(x_of(start), start.strftime("%d %b")), Tick(x_of(end), end.strftime("%d %b"))]
    return tuple(ticks)


def trend_chart(
    values: Sequence[TrendInput],
    *,
    start: datetime,
    end: datetime,
    window_start: datetime,
    cutoff: Decimal,
    height: float = 240,
) -> TrendChart:
    """A time series from ``start`` to ``end`` (the reference time) with its cut-off line."""
    box = Box(left=72, top=14, right=WIDTH - 18, bottom=height - 34)
    span = max((end - start).total_seconds(), 1.0)
    highest = max([float(v.value) for v in values] + [float(cutoff)])
    step = nice_step(highest * 1.2)
    top_value = step * math.ceil(highest * 1.2 / step)

    def x_of(moment: datetime) -> float:
        return box.left + box.width * (moment - start).total_seconds() / span

    def y_of(value: float) -> float:
        return box.bottom - box.height * value / top_value

    y_ticks = tuple(Tick(y_of(step * i), _count_label(step * i)) for i in range(round(top_value / step) + 1))
    ordered = sorted(values, key=lambda v: v.when)
    points = tuple(
        TrendPoint(round(x_of(v.when), 1), round(y_of(float(v.value)), 1), v.label, v.baseline, v.bounded)
        for v in ordered
    )
    return TrendChart(
        height=height,
        box=box,
        x_ticks=_month_ticks(start, end, x_of),
        y_ticks=y_ticks,
        cutoff_y=round(y_of(float(cutoff)), 1),
        cutoff_label=f"cut-off > {format_count(cutoff)}/uL",
        window_x=round(x_of(max(window_start, start)), 1),
        at_x=round(x_of(end), 1),
        points=points,
        path=" ".join(f"{p.x},{p.y}" for p in points),
    )


@dataclass(frozen=True, slots=True)
class StratumBar:
    score: int
    y: float
    low_x: float
    median_x: float
    high_x: float
    label: str
    highlighted: bool


@dataclass(frozen=True, slots=True)
class StrataPanel:
    title: str
    title_y: float
    bars: tuple[StratumBar, ...]


@dataclass(frozen=True, slots=True)
class StrataChart:
    height: float
    box: Box
    x_ticks: tuple[Tick, ...]
    panels: tuple[StrataPanel, ...]
    width: float = WIDTH


def _estimate_text(estimate: Estimate) -> str:
    return f"{estimate.value} days ({estimate.ci_low}-{estimate.ci_high})"


def strata_chart(strata: Sequence[PublishedStratum], highlighted: int | None) -> StrataChart:
    """Median PFS and OS of each published stratum with its 95% CI, on one day axis."""
    row, title_gap, panel_gap = 30.0, 26.0, 22.0
    panels_height = 2 * (title_gap + row * len(strata)) + panel_gap
    box = Box(left=84, top=8, right=WIDTH - 270, bottom=8 + panels_height)
    highest = max(
        float(estimate.ci_high) for s in strata for estimate in (s.median_pfs_days, s.median_os_days)
    )
    step = nice_step(highest, 5)
    top_value = step * math.ceil(highest / step)

    def x_of(days: Decimal) -> float:
        return round(box.left + box.width * float(days) / top_value, 1)

    panels: list[StrataPanel] = []
    y = box.top
    pfs: Callable[[PublishedStratum], Estimate] = lambda s: s.median_pfs_days  # noqa: E731 - typed, beside its twin
    os_: Callable[[PublishedStratum], Estimate] = lambda s: s.median_os_days  # noqa: E731 - typed, beside its twin
    for title, pick in (("Median progression-free survival", pfs), ("Median overall survival", os_)):
        title_y = y + 16
        y += title_gap
        bars = []
        for stratum in strata:
            estimate = pick(stratum)
            bars.append(
                StratumBar(
                    score=stratum.score,
                    y=round(y + row / 2, 1),
                    low_x=x_of(estimate.ci_low),
                    median_x=x_of(estimate.value),
                    high_x=x_of(estimate.ci_high),
                    label=_estimate_text(estimate),
                    highlighted=stratum.score == highlighted,
                )
            )
            y += row
        panels.append(StrataPanel(title, title_y, tuple(bars)))
        y += panel_gap
    ticks = tuple(
        Tick(x_of(Decimal(str(step * i))), f"{int(step * i)}") for i in range(round(top_value / step) + 1)
    )
    return StrataChart(height=box.bottom + 44, box=box, x_ticks=ticks, panels=tuple(panels))
