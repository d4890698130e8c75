"""The candidate stream sorted in bounded memory: the order of an in-memory sort, whatever the runs."""

from __future__ import annotations

import random
from datetime import date
from pathlib import Path
from typing import Any

from cohort.definition import CohortDefinition
from cohort.engines import DuckDBEngine
from cohort.extract import extract_rows
from cohort.sorting import nulls_last, sorted_rows
from cohort.sources import discover


def test_runs_spilled_to_files_merge_into_the_order_of_one_stable_sort() -> None:
    """NULL after every value, equal keys in the order they came (ties keep their arrival order)."""
    generator = random.Random(7)  # noqa: S311 - test data, not secrets
    days = [None, date(2022, 3, 1), date(2022, 3, 2)]
    patients = ["p1", "p2", "p10", "é"]
    rows = [
        (generator.choice(patients), generator.choice(days), f"line {n} " + "x" * generator.randrange(50))
        for n in range(3000)
    ]
    key = nulls_last((0, 1))
    expected = sorted(rows, key=lambda r: (r[0], r[1] is None, r[1] or date.min))
    for run_bytes in (1, 500, 20_000, 1 << 30):
        assert list(sorted_rows(iter(rows), key, run_bytes)) == expected, run_bytes


def test_an_empty_stream_is_sorted_too() -> None:
    assert list(sorted_rows(iter([]), nulls_last((0,)), 1)) == []


def test_rows_sorted_in_many_runs_on_disk_equal_the_rows_sorted_at_once(
    small_cohort: Path, definition: CohortDefinition
) -> None:
    """The engine's sort spills a run per few lines here, as on a large export: same rows, same order."""

    def rows(run_bytes: int) -> list[dict[str, Any]]:
        with DuckDBEngine(sort_run_bytes=run_bytes) as engine:
            return list(extract_rows(engine, discover([small_cohort]), definition))

    assert rows(2_000) == rows(1 << 30)
