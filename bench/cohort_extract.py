"""Benchmark of `ichis cohort extract`: throughput and peak memory on >= 2 million Observations.

    .venv/bin/python bench/cohort_extract.py [--data DIR] [--patients 10000] [--engines duckdb,spark]

Generates (once, then reuses) a SYNTHETIC Bulk Data export: ICI patients with a blood count before
every cycle plus vital signs, and patients without a checkpoint inhibitor, as a hospital export
would hold them. Then runs the real command once per engine in a fresh process and prints a table:
wall time end to end (process start to the written Parquet and CSV), Observations per second, and
the peak resident memory of the whole process tree (Python and, for Spark, the JVM), sampled from
/proc every 50 ms.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import threading
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cohort.synth import SynthOptions, write_cohort  # noqa: E402 - after the path is set

CUTOFF = date(2023, 8, 31)


def _rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def _tree(pid: int) -> list[int]:
    """The process and all its descendants (Spark's JVM is a child of the Python process)."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        try:
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
        except OSError:
            children = []
        todo += [int(c) for c in children]
    return found


def run(command: list[str]) -> tuple[float, int, str]:
    """Wall seconds, peak RSS of the process tree in KiB, and standard output of one command."""
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # noqa: S603
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, sum(_rss_kib(p) for p in _tree(process.pid)))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, err = process.communicate()
    seconds = time.perf_counter() - start
    done.set()
    sampler.join()
    if process.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({process.returncode}): {err.strip()[-500:]}")
    return seconds, peak, out


def generate(folder: Path, patients: int) -> dict[str, int]:
    marker = folder / "SYNTHETIC-README.txt"
    if marker.exists():
        counts: dict[str, int] = {}
        for path in folder.glob("*.ndjson"):
            kind = path.name.split(".")[0]
            with path.open("rb") as handle:
                counts[kind] = counts.get(kind, 0) + sum(1 for _ in handle)
        return counts
    options = SynthOptions(labs_per_cycle=True, extra_observations=140, patients_without_ici=patients // 5)
    summary = write_cohort(folder, patients, seed=99, cutoff=CUTOFF, options=options, max_lines=250_000)
    return summary.resources


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=Path(tempfile.gettempdir()) / "ichis-bench-cohort")
    parser.add_argument("--patients", type=int, default=10_000)
    parser.add_argument("--engines", default="duckdb,spark")
    args = parser.parse_args()
    started = time.perf_counter()
    counts = generate(args.data, args.patients)
    observations = counts.get("Observation", 0)
    sys.stdout.write(
        f"data: {args.data} (SYNTHETIC; {observations:,} Observations, "
        f"{counts.get('Patient', 0):,} patients, "
        f"{sum(counts.values()):,} resources; ready in {time.perf_counter() - started:.0f} s)\n"
    )
    if observations < 2_000_000:
        sys.stdout.write("note: fewer than 2 million Observations; raise --patients\n")
    rows = []
    for engine in args.engines.split(","):
        out = Path(tempfile.mkdtemp(prefix=f"ichis-bench-{engine}-"))
        command = [
            sys.executable,
            "-m",
            "ichis_cli",
            "cohort",
            "extract",
            str(args.data),
            "--cutoff",
            CUTOFF.isoformat(),
            "--out",
            str(out),
            "--engine",
            engine,
        ]
        seconds, peak, stdout = run(command)
        cohort = next((line for line in stdout.splitlines() if line.startswith("patients with")), "")
        rows.append(
            (engine, observations, seconds, observations / seconds, peak / 1024, cohort.split(": ")[-1])
        )
    sys.stdout.write(
        "\n| engine | Observations | seconds | Observations/s | peak RSS (MiB) | cohort |\n"
        "|---|---|---|---|---|---|\n"
    )
    for engine, n, seconds, rate, mib, cohort in rows:
        sys.stdout.write(f"| {engine} | {n:,} | {seconds:.1f} | {rate:,.0f} | {mib:,.0f} | {cohort} |\n")


if __name__ == "__main__":
    main()
