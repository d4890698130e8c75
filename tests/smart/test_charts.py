"""Chart geometry: the cut-off line, the baseline marker and the strata are where the values say."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from ichis.reference import PUBLISHED_STRATA
from smart_app.charts import TrendInput, nice_step, strata_chart, trend_chart

AT = datetime(2026, 11, 29, 10, 0, tzinfo=UTC)


@pytest.mark.parametrize(("span", "step"), [(1, 0.2), (120, 25), (18_450, 5000), (500, 100), (0.9, 0.2)])
def test_tick_steps_are_round_numbers(span: float, step: float) -> None:
    """Steps are 1, 2, 2.5 or 5 times a power of ten, about five per axis."""
    assert nice_step(span) == pytest.approx(step)


def test_the_cutoff_line_sits_at_its_value_and_the_baseline_is_marked() -> None:
    """A value at the cut-off is drawn on the cut-off line; only the baseline point is marked."""
    values = [
        TrendInput(AT - timedelta(days=60), Decimal("9000"), "at the cut-off"),
        TrendInput(AT - timedelta(days=1), Decimal("12300"), "baseline", baseline=True),
    ]
    chart = trend_chart(
        values,
        start=AT - timedelta(days=180),
        end=AT,
        window_start=AT - timedelta(days=14),
        cutoff=Decimal("9000"),
    )
    at_cutoff, baseline = chart.points
    assert at_cutoff.y == chart.cutoff_y
    assert baseline.y < chart.cutoff_y  # higher on the page: above the cut-off
    assert chart.baseline == baseline
    assert chart.box.left < chart.window_x < baseline.x < chart.at_x == chart.box.right
    assert chart.cutoff_label == "cut-off > 9,000/uL"
    assert chart.y_ticks[0].label == "0"
    assert [t.label for t in chart.x_ticks][:2] == ["Jul 2026", "Aug 2026"]  # 180 days back is 2 June


def test_the_axis_always_shows_the_cutoff_even_when_every_value_is_far_below_it() -> None:
    """An IG# of 10/uL still leaves the 80/uL line inside the plot."""
    chart = trend_chart(
        [TrendInput(AT - timedelta(days=3), Decimal("10"), "low")],
        start=AT - timedelta(days=180),
        end=AT,
        window_start=AT - timedelta(days=14),
        cutoff=Decimal("80"),
    )
    assert chart.box.top <= chart.cutoff_y < chart.points[0].y <= chart.box.bottom


def test_the_strata_chart_highlights_only_the_patients_stratum() -> None:
    """Every published CI is drawn, the medians in order, and one stratum highlighted."""
    chart = strata_chart(list(PUBLISHED_STRATA.values()), highlighted=2)
    pfs, os = chart.panels
    assert [bar.score for bar in pfs.bars if bar.highlighted] == [2]
    assert all(bar.low_x <= bar.median_x <= bar.high_x for bar in (*pfs.bars, *os.bars))
    assert os.bars[0].label == "305 days (203.1-406.9)"
    assert max(bar.high_x for bar in os.bars) <= chart.box.right
