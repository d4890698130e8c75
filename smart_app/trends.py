"""The trends on the details page: each part's readings up to the reference time, as a chart
and a table, the baseline reading and the look-back window marked.

Pure; the chart itself is drawn by ``smart_app.charts``.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from fhir_mappings.assessment import Assessment
from fhir_mappings.baseline import IG, NEUTROPHILS
from ichis import wording
from ichis.measurement import Measurement
from ichis.score import CUTOFFS, PART_LABELS, Part
from smart_app.charts import TrendInput, trend_chart
from smart_app.page_model import TrendRow, TrendView

#: The two parts of the score with the concept each is read from.
_PARTS = ((Part.NEUTROPHILS, NEUTROPHILS), (Part.IMMATURE_GRANULOCYTES, IG))


def trend_view(
    assessment: Assessment, part: Part, concept: str, *, at: datetime, start: datetime, window_start: datetime
) -> TrendView:
    """All readings of one part from ``start`` to the reference time, the baseline one marked."""
    chosen = assessment.result.parts[part].measurement
    baseline_ref = chosen.source.reference if chosen is not None else None
    readings = [r for r in assessment.extraction.readings if r.concept == concept]
    shown = [r for r in readings if start <= r.when.earliest <= at]
    later = len([r for r in readings if r.when.earliest > at])
    title = f"{PART_LABELS[part]} over the last {(at - start).days} days"
    points = []
    rows = []
    for reading in sorted(shown, key=lambda r: r.when.earliest):
        measurement = Measurement(reading.value, reading.source, reading.comparator)
        is_baseline = reading.source.reference == baseline_ref
        label = (
            f"{wording.when(reading.source.effective)}: {measurement.shown()} ({reading.source.reference})"
        )
        points.append(
            TrendInput(
                reading.when.earliest, reading.value, label, is_baseline, reading.comparator is not None
            )
        )
        rows.append(
            TrendRow(
                collected=wording.when(reading.source.effective),
                shown=measurement.shown(),
                as_sent=f"{reading.source.value_as_sent} {reading.source.unit_as_sent}".strip(),
                source=reading.source.reference,
                baseline=is_baseline,
                in_window=reading.when.earliest >= window_start,
            )
        )
    notes = []
    if chosen is not None and chosen.derived and part is Part.IMMATURE_GRANULOCYTES:
        notes.append(
            f"The baseline IG# ({chosen.shown()}) was derived from IG% and WBC, so it is not a point of "
            "this chart, which shows reported IG# only."
        )
    if later:
        notes.append(f"{later} result(s) after the reference time are not shown; the score never uses them.")
    if not shown:
        notes.insert(0, f"No usable {wording.SHORT_NAMES[part]} results in this period.")
    chart = (
        trend_chart(points, start=start, end=at, window_start=window_start, cutoff=CUTOFFS[part])
        if shown
        else None
    )
    return TrendView(concept, title, chart, tuple(rows), " ".join(notes) or None)


def trend_views(
    assessment: Assessment, at: datetime, trend_days: int, lookback: timedelta
) -> tuple[TrendView, ...]:
    """Both parts' trends from ``trend_days`` before the reference time, the look-back marked."""
    start, window_start = at - timedelta(days=trend_days), at - lookback
    return tuple(
        trend_view(assessment, part, concept, at=at, start=start, window_start=window_start)
        for part, concept in _PARTS
    )
