"""The card and the SMART page word a score, a time and an age the same way (ichis.wording)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest

from cds_service.cards import _input_row
from ichis import Measurement, Source, score_ichis
from ichis.score import Part
from ichis.wording import age, headline, when
from smart_app.details import input_row

AT = datetime(2024, 3, 1, 9, 0, tzinfo=UTC)


def count(value: str, collected: datetime) -> Measurement:
    return Measurement(Decimal(value), Source("Observation/x", collected, value, "/uL", "final", "s1"))


def test_a_time_keeps_the_offset_it_was_sent_with_and_utc_is_named() -> None:
    seoul = timezone(timedelta(hours=9))
    assert when(datetime(2026, 11, 28, 9, 0, tzinfo=seoul)) == "2026-11-28 09:00 +0900"
    assert when(AT) == "2024-03-01 09:00 UTC"


@pytest.mark.parametrize(
    ("before", "said"),
    [
        (timedelta(minutes=30), "0 h before"),
        (timedelta(hours=24), "24 h before"),
        (timedelta(hours=35, minutes=59), "35 h before"),
        (timedelta(hours=36), "1 days before"),
        (timedelta(days=13, hours=23), "13 days before"),
    ],
)
def test_an_age_is_in_hours_up_to_a_day_and_a_half_then_in_days(before: timedelta, said: str) -> None:
    assert age(AT - before, AT) == said


def test_a_result_after_the_reference_time_is_said_to_be_after_it_on_the_card_and_the_page() -> None:
    """Not "0 h before": a result from after the order must not pass for one taken at it."""
    later = count("9500", AT + timedelta(hours=2))
    assert age(later.effective, AT) == "after the reference time"
    card_row = _input_row(Part.NEUTROPHILS, later, 1, AT)
    page_row = input_row(Part.NEUTROPHILS, later, 1, "", AT)
    assert "(after the reference time)" in card_row
    assert "0 h before" not in card_row
    assert page_row.age == "after the reference time"


def test_the_headline_states_the_score_its_bounds_or_that_there_is_none() -> None:
    assert headline(score_ichis(count("9500", AT), count("90", AT))) == "IChIS 2 of 2"
    assert headline(score_ichis(count("9500", AT), None)) == "IChIS 1 to 2 of 2"
    assert headline(score_ichis(None, None)) == "IChIS not available"
