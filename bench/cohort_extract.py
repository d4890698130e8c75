"""Benchmark of `ichis cohort extract`: throughput, linearity and peak memory, next to DuckDB's own scan.

    .venv/bin/python bench/cohort_extract.py [--data DIR] [--patients 10000] [--scales 1,5]
                                             [--engines duckdb,spark] [--spark-scales 1] [--runs 1]

Generates (once, then reuses) a SYNTHETIC Bulk Data export: ICI patients with a blood count before
every cycle plus vital signs, and patients without a checkpoint inhibitor, as a hospital export
would hold them. A larger scale is the same export copied with other patient ids (``syn0`` becomes
``s1n0``...), so it is the same data, k times over.

For each scale and run, each in a fresh process, it times:
- the reference: DuckDB's own structured scan of the Observations (``read_json`` with the columns the
  extraction needs as typed structs, one aggregate), the speed the goal is set against;
- the real command per engine, wall time from process start to the written Parquet and CSV;
- when Spark runs, Spark's own structured scan of the same files on the same master (``local[2]``),
  session start included: what Spark itself needs to read them, the floor of its engine;
and prints Observations per second, the ratio of each engine to the reference (and Spark to DuckDB
and to its own scan), the CPU seconds and peak resident memory of the whole process tree (Python,
its workers and, for Spark, the JVM), sampled from /proc every 50 ms, and whether the engines wrote
identical tables. CPU seconds over the cores bound the wall time from below: an engine that keeps
every core busy gets faster only by doing less work.
"""

from __future__ import annotations

import argparse
import filecmp
import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cohort.scoring import cores  # noqa: E402 - after the path is set
from cohort.synth import SynthOptions, write_cohort  # noqa: E402 - as above

CUTOFF = date(2023, 8, 31)

#: DuckDB's own scan of the same files: the elements the extraction reads, as typed columns.
SCAN = """
import sys, duckdb
files = sys.argv[1]
columns = {
    "subject": "STRUCT(reference VARCHAR)",
    "code": "STRUCT(coding STRUCT(system VARCHAR, code VARCHAR)[])",
    "effectiveDateTime": "VARCHAR",
    "status": "VARCHAR",
    "valueQuantity": "STRUCT(value DOUBLE, unit VARCHAR, system VARCHAR, code VARCHAR)",
}
print(duckdb.sql(
    "SELECT count(*), count(DISTINCT subject.reference), sum(len(code.coding)) "
    f"FROM read_json({files!r}, format = 'newline_delimited', columns = {columns!r})"
).fetchall())
"""

#: Spark's own scan of the same files with the same columns, on the master the engine uses.
SPARK_SCAN = """
import sys
from pyspark.sql import SparkSession
spark = (SparkSession.builder.master("local[2]").appName("ichis-bench-scan")
         .config("spark.ui.enabled", "false").config("spark.driver.memory", "2g")
         .config("spark.ui.showConsoleProgress", "false").getOrCreate())
spark.sparkContext.setLogLevel("ERROR")
schema = (
    "subject STRUCT<reference: STRING>, code STRUCT<coding: ARRAY<STRUCT<system: STRING, code: STRING>>>, "
    "effectiveDateTime STRING, status STRING, "
    "valueQuantity STRUCT<value: DOUBLE, unit: STRING, system: STRING, code: STRING>"
)
spark.read.schema(schema).json(sys.argv[1]).createOrReplaceTempView("observations")
print(spark.sql(
    "SELECT count(*), count(DISTINCT subject.reference), sum(size(code.coding)) FROM observations"
).collect())
spark.stop()
"""


def _rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def _cpu_ticks(pid: int) -> int:
    """User and system CPU time of one process so far, in clock ticks (its own, not its children's)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[11]) + int(fields[12])  # utime and stime: fields 14 and 15 of proc(5)


def _tree(pid: int) -> list[int]:
    """The process and all its descendants (Spark's JVM and the scoring workers are children)."""
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


@dataclass
class Measured:
    seconds: float
    #: Peak resident memory of the process tree, KiB.
    peak: int
    #: CPU seconds of the process tree (each process's last sample: up to 50 ms of each may be missed).
    cpu: float


def run(command: list[str]) -> tuple[Measured, str]:
    """Wall seconds, peak RSS and CPU of the process tree, and standard output of one command."""
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # noqa: S603
    peak = 0
    ticks: dict[int, int] = {}
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            tree = _tree(process.pid)
            peak = max(peak, sum(_rss_kib(p) for p in tree))
            for pid in tree:
                ticks[pid] = max(ticks.get(pid, 0), _cpu_ticks(pid))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, err = process.communicate()
    seconds = time.perf_counter() - start
    done.set()
    sampler.join()
    if process.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({process.returncode}): {err.strip()[-500:]}")
    cpu = sum(ticks.values()) / os.sysconf("SC_CLK_TCK")
    return Measured(seconds, peak, cpu), out


def _count(folder: Path) -> dict[str, int]:
    counts: dict[str, int] = {}
    for path in folder.glob("*.ndjson"):
        kind = path.name.split(".")[0]
        with path.open("rb") as handle:
            counts[kind] = counts.get(kind, 0) + sum(1 for _ in handle)
    return counts


def generate(folder: Path, patients: int) -> dict[str, int]:
    if (folder / "SYNTHETIC-README.txt").exists():
        return _count(folder)
    options = SynthOptions(labs_per_cycle=True, extra_observations=140, patients_without_ici=patients // 5)
    summary = write_cohort(folder, patients, seed=99, cutoff=CUTOFF, options=options, max_lines=250_000)
    return summary.resources


def scaled(base: Path, scale: int) -> Path:
    """The base export ``scale`` times over, the copies with other patient ids (made once)."""
    if scale == 1:
        return base
    folder = base.parent / f"{base.name}-x{scale}"
    if (folder / "SYNTHETIC-README.txt").exists():
        return folder
    folder.mkdir(exist_ok=True)
    for path in sorted(base.glob("*.ndjson")):
        stem = path.name.removesuffix(".ndjson")
        (folder / f"{stem}.c0.ndjson").symlink_to(path)
        for copy in range(1, scale):
            # Ids are syn0000001, ...: each copy's patients get their own (s1n0000001, ...).
            old, new = b"syn0", f"s{copy}n0".encode()
            with path.open("rb") as source, (folder / f"{stem}.c{copy}.ndjson").open("wb") as out:
                out.writelines(line.replace(old, new) for line in source)
    (folder / "SYNTHETIC-README.txt").write_text((base / "SYNTHETIC-README.txt").read_text())
    return folder


def _extract(data: Path, engine: str) -> tuple[Measured, Path]:
    out = Path(tempfile.mkdtemp(prefix=f"ichis-bench-{engine}-"))
    command = [sys.executable, "-m", "ichis_cli", "cohort", "extract", str(data)]
    command += ["--cutoff", CUTOFF.isoformat(), "--out", str(out), "--engine", engine]
    measured, _ = run(command)
    return measured, out


def main() -> None:
    raw = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=raw)
    parser.add_argument("--data", type=Path, default=Path(tempfile.gettempdir()) / "ichis-bench-cohort")
    parser.add_argument("--patients", type=int, default=10_000)
    parser.add_argument("--scales", default="1,5", help="sizes to run, as multiples of the base export")
    parser.add_argument("--engines", default="duckdb,spark")
    parser.add_argument("--spark-scales", default="1", help="scales Spark runs at (it is the slow one)")
    parser.add_argument("--runs", type=int, default=1, help="repetitions of every measurement")
    args = parser.parse_args()
    started = time.perf_counter()
    base = generate(args.data, args.patients)
    sys.stdout.write(
        f"data: {args.data} (SYNTHETIC; {base.get('Observation', 0):,} Observations, "
        f"{base.get('Patient', 0):,} patients, {sum(base.values()):,} resources; "
        f"ready in {time.perf_counter() - started:.0f} s); cores: {cores()}; "
        f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}\n"
    )
    engines = args.engines.split(",")
    spark_scales = {int(s) for s in args.spark_scales.split(",")}
    header = (
        "| scale | run | what | Observations | seconds | Observations/s | vs scan | peak RSS (MiB) "
        f"| CPU s | cores busy (of {cores()}) |"
    )
    lines = _Printed([header, "|---|---|---|---|---|---|---|---|---|---|"])
    notes = _Printed()
    for scale in (int(s) for s in args.scales.split(",")):
        data = scaled(args.data, scale)
        observations = base.get("Observation", 0) * scale
        pattern = str(data / "Observation.*.ndjson")
        for number in range(1, args.runs + 1):
            scan, _ = run([sys.executable, "-c", SCAN, pattern])
            what = "DuckDB read_json scan"
            lines.append(_line(scale, number, what, observations, scan, scan=scan.seconds))
            tables: dict[str, Path] = {}
            times: dict[str, float] = {}
            spark_scan: Measured | None = None
            for engine in engines:
                if engine == "spark" and scale not in spark_scales:
                    continue
                if engine == "spark":
                    spark_scan, _ = run([sys.executable, "-c", SPARK_SCAN, pattern])
                    what = "Spark read.json scan, local[2], session included"
                    lines.append(_line(scale, number, what, observations, spark_scan, scan=scan.seconds))
                measured, out = _extract(data, engine)
                times[engine], tables[engine] = measured.seconds, out
                what = f"cohort extract --engine {engine}"
                lines.append(_line(scale, number, what, observations, measured, scan=scan.seconds))
            if "spark" in times and spark_scan is not None:
                ratio = spark_scan.seconds / times["spark"]
                notes.append(f"scale {scale} run {number}: Spark's engine at {ratio:.2f}x Spark's own scan")
            if "duckdb" in times and "spark" in times:
                duck, spark = (tables[e] / "cohort.csv" for e in ("duckdb", "spark"))
                same = filecmp.cmp(duck, spark, shallow=False)
                notes.append(
                    f"scale {scale} run {number}: Spark at {times['duckdb'] / times['spark']:.2f}x DuckDB's "
                    f"rate; tables {'identical' if same else 'DIFFERENT'}"
                )
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    sys.stdout.write(f"load average at the end: {load}\n")


class _Printed(list[str]):
    """Lines printed as they are measured: a long run interrupted still shows what it measured."""

    def __init__(self, first: list[str] | None = None) -> None:
        super().__init__()
        for line in first or []:
            self.append(line)

    def append(self, line: str) -> None:
        super().append(line)
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def _line(scale: int, run_: int, what: str, n: int, measured: Measured, *, scan: float) -> str:
    seconds = measured.seconds
    return (
        f"| {scale}x | {run_} | {what} | {n:,} | {seconds:.1f} | {n / seconds:,.0f} | "
        f"{scan / seconds:.2f} | {measured.peak / 1024:,.0f} | {measured.cpu:.1f} | "
        f"{measured.cpu / seconds:.2f} |"
    )


if __name__ == "__main__":
    main()
