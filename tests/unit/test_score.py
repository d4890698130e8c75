"""IChIS itself: cut-offs, comparators, bounds and the published strata."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from ichis import Comparator, Measurement, Source, Status, score_ichis
from ichis.reference import PUBLISHED_STRATA
from ichis.score import Part, points_above

WHEN = datetime(2024, 3, 1, tzinfo=UTC)


def count(value: str, comparator: Comparator | None = None) -> Measurement:
    source = Source("Observation/x", WHEN, value, "/uL", "final", "s1")
    return Measurement(Decimal(value), source, comparator)


@pytest.mark.parametrize(
    ("neutrophils", "ig", "expected"),
    [
        ("9000", "80", 0),  # both cut-offs are strict: exactly at the cut-off scores 0
        ("9000.01", "80", 1),
        ("9001", "81", 2),
        ("8999", "80.5", 1),
        ("0", "0", 0),
        ("25000", "1500", 2),
    ],
)
def test_points_are_one_per_part_strictly_above_its_cutoff(neutrophils: str, ig: str, expected: int) -> None:
    """Table 2: NEUT# > 9,000/uL and IG# > 80/uL each add one point."""
    result = score_ichis(count(neutrophils), count(ig))
    assert result.score == expected
    assert result.status is Status.COMPLETE
    assert (result.lower, result.upper) == (expected, expected)


@pytest.mark.parametrize(
    ("value", "comparator", "cutoff", "expected"),
    [
        ("10", Comparator.LT, "80", 0),  # <10/uL: surely not above 80
        ("80", Comparator.LT, "80", 0),
        ("80", Comparator.LE, "80", 0),
        ("90", Comparator.LT, "80", None),  # <90 could be 85
        ("90", Comparator.LE, "80", None),
        ("80", Comparator.GT, "80", 1),  # >80: surely above
        ("70", Comparator.GT, "80", None),
        ("80", Comparator.GE, "80", None),  # >=80 could be exactly 80
        ("81", Comparator.GE, "80", 1),
    ],
)
def test_a_comparator_settles_a_point_only_when_its_bound_decides_it(
    value: str, comparator: Comparator, cutoff: str, expected: int | None
) -> None:
    """A reported bound decides the point only if every value it allows falls on one side."""
    assert points_above(count(value, comparator), Decimal(cutoff)) == expected


def test_an_unknown_part_gives_bounds_instead_of_a_score() -> None:
    """Neutrophils above the cut-off and IG# unknown means IChIS 1..2, no stratum."""
    result = score_ichis(count("9450"), None, immature_granulocytes_missing="no IG# in 14 days")
    assert result.score is None
    assert result.status is Status.PARTIAL
    assert (result.lower, result.upper) == (1, 2)
    assert result.stratum is None
    assert result.parts[Part.IMMATURE_GRANULOCYTES].points is None
    assert "no IG# in 14 days" in result.parts[Part.IMMATURE_GRANULOCYTES].explanation


def test_an_undecided_comparator_counts_as_unknown() -> None:
    """IG# reported as <100/uL leaves the IG point open."""
    result = score_ichis(count("5000"), count("100", Comparator.LT))
    assert (result.status, result.lower, result.upper) == (Status.PARTIAL, 0, 1)


def test_no_inputs_means_unavailable_over_the_full_range() -> None:
    result = score_ichis(None, None)
    assert (result.score, result.status, result.lower, result.upper) == (None, Status.UNAVAILABLE, 0, 2)


def test_each_part_keeps_the_input_that_decided_it() -> None:
    neutrophils = count("9450")
    result = score_ichis(neutrophils, count("20"))
    assert result.parts[Part.NEUTROPHILS].measurement is neutrophils
    assert result.parts[Part.NEUTROPHILS].explanation == (
        "Neutrophils (NEUT#): 9,450/uL is above 9,000/uL: 1 point."
    )


@pytest.mark.parametrize(
    ("score", "pfs", "os_", "os_hr"),
    [
        (0, ("120", "85.8", "154.2"), ("305", "203.1", "406.9"), None),
        (1, ("58", "49.8", "66.2"), ("203", "68.2", "337.8"), ("1.476", "0.896", "2.431")),
        (2, ("30", "0.0", "64.6"), ("54", "0.0", "126.1"), ("6.108", "2.766", "13.487")),
    ],
)
def test_published_strata_match_tables_3_and_4(
    score: int, pfs: tuple[str, ...], os_: tuple[str, ...], os_hr: tuple[str, ...] | None
) -> None:
    stratum = PUBLISHED_STRATA[score]
    estimate = stratum.median_pfs_days
    assert (str(estimate.value), str(estimate.ci_low), str(estimate.ci_high)) == pfs
    estimate = stratum.median_os_days
    assert (str(estimate.value), str(estimate.ci_low), str(estimate.ci_high)) == os_
    hr = stratum.os_hazard_ratio
    assert (None if hr is None else (str(hr.value), str(hr.ci_low), str(hr.ci_high))) == os_hr


def test_a_complete_score_carries_its_published_stratum() -> None:
    result = score_ichis(count("12000"), count("150"))
    assert result.stratum is PUBLISHED_STRATA[2]


@pytest.mark.parametrize("bad", ["-1", "NaN", "Infinity"])
def test_a_measurement_refuses_impossible_counts(bad: str) -> None:
    with pytest.raises(ValueError, match="non-negative"):
        count(bad)


def test_a_measurement_refuses_a_time_without_zone() -> None:
    source = Source("Observation/x", datetime(2024, 3, 1), "1", "/uL", "final", "s")  # noqa: DTZ001
    with pytest.raises(ValueError, match="time zone"):
        Measurement(Decimal(1), source)
