"""The cohort benchmark counts the CPU of every process a command starts, not only its own.

``bench/cohort_extract.py`` prints CPU seconds and cores busy beside each wall time: the figure that
shows whether an engine already keeps every core busy (and so gets faster only by doing less). A
command whose work runs in children (DuckDB's threads are in-process, but the scoring workers and
Spark's JVM are child processes) must be counted whole. These tests burn CPU on purpose and check
the accounting, never the wall time.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"

#: Spins for about `seconds` of CPU time (process time, so a busy machine does not shorten it).
BURN = "import time\nend = time.process_time() + {seconds}\nwhile time.process_time() < end: pass\n"


@pytest.fixture
def bench(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.syspath_prepend(str(BENCH))
    # Found only once the bench folder is on the path.
    return importlib.import_module("cohort_extract")


def test_a_commands_cpu_includes_the_child_it_starts(bench: ModuleType) -> None:
    child = BURN.format(seconds=0.6)
    parent = (
        "import subprocess, sys\n"
        f"subprocess.run([sys.executable, '-c', {child!r}], check=True)\n" + BURN.format(seconds=0.6)
    )

    measured, _ = bench.run([sys.executable, "-c", parent])

    # 1.2 s of CPU in two processes; each process's last 50 ms sample may miss a little of it.
    assert measured.cpu >= 1.0
    assert measured.peak > 0


def test_a_failing_command_stops_the_benchmark_with_its_error(bench: ModuleType) -> None:
    with pytest.raises(SystemExit, match="no such export"):
        bench.run([sys.executable, "-c", "import sys; sys.exit('no such export')"])


def test_a_line_states_cores_busy_from_cpu_over_wall(bench: ModuleType) -> None:
    measured = bench.Measured(seconds=10.0, peak=512 * 1024, cpu=19.0)

    line = bench._line(1, 1, "cohort extract --engine duckdb", 2_516_572, measured, scan=2.0)

    assert line == (
        "| 1x | 1 | cohort extract --engine duckdb | 2,516,572 | 10.0 | 251,657 | 0.20 | 512 | 19.0 | 1.90 |"
    )
