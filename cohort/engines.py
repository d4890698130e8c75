"""The two engines that run the extraction plan: DuckDB (embedded, the default) and Apache Spark.

Both expose the same four operations: register NDJSON files as a view of lines, register a small
table of rows, and stream a query's rows in order. Neither builds a Python object per input line,
and neither holds the input or the candidate lines in memory: DuckDB's joins build on the cohort's
side, and the results of both engines are sorted here in bounded memory (``cohort.sorting``).
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator, Sequence
from datetime import date
from pathlib import Path
from typing import Any, Protocol, Self

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from cohort.errors import CohortError, CohortInputError, CohortUsageError
from cohort.plan import DUCKDB, SPARK, Dialect
from cohort.sorting import RUN_BYTES, nulls_last, sorted_rows

#: Rows read from an engine's result file at a time.
_BATCH = 4096


class Engine(Protocol):
    """What the extraction needs from an engine."""

    name: str
    dialect: Dialect

    def lines(self, view: str, files: Sequence[Path]) -> None:
        """Register NDJSON files (plain or .gz) as a view with one column ``line``."""

    def table(self, view: str, rows: Sequence[tuple[str, date]]) -> None:
        """Register ``(patient, dose_date)`` rows as a view."""

    def stream(self, sql: str, order: Sequence[str] = ()) -> Iterator[tuple[Any, ...]]:
        """The query's rows, ordered by the ``order`` columns of its result (ascending, NULL last),
        without holding them all."""

    def close(self) -> None: ...


class _Closing:
    """An engine that closes when the ``with`` block around it ends, and streams a query's rows
    sorted in bounded memory (``cohort.sorting``) rather than by the engine's ORDER BY."""

    _run_bytes: int = RUN_BYTES

    def close(self) -> None:
        raise NotImplementedError

    def _rows(self, sql: str) -> Iterator[Any]:
        """The result's column names, then its rows."""
        raise NotImplementedError

    def stream(self, sql: str, order: Sequence[str] = ()) -> Iterator[tuple[Any, ...]]:
        # Unsorted from the engine, sorted here. DuckDB's ORDER BY held every candidate line in
        # memory (0.3 GB per 12.5 million Observations, and growing) and under a memory limit failed
        # now and then instead of spilling; Spark's first ran the whole query once more to sample
        # the range of its keys (reading and parsing every line twice). The candidates are few
        # next to the input.
        rows = self._rows(sql)
        columns: list[str] = list(next(rows))
        if order:
            key = nulls_last(tuple(columns.index(name) for name in order))
            rows = sorted_rows(rows, key, self._run_bytes)
        yield from rows

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class DuckDBEngine(_Closing):
    """DuckDB in this process. Lines are read with its NDJSON object reader, which hands over each
    object's text exactly as the server wrote it (numbers too), skips blank lines, refuses a line
    that is not JSON, and reads files in parallel."""

    name = "duckdb"
    dialect = DUCKDB

    def __init__(
        self, threads: int | None = None, memory_limit: str | None = None, sort_run_bytes: int = RUN_BYTES
    ) -> None:
        self._run_bytes = sort_run_bytes
        config: dict[str, Any] = {}
        if threads:
            config["threads"] = threads
        if memory_limit:
            config["memory_limit"] = memory_limit
        self._con = duckdb.connect(config=config)
        # Our own progress bars report progress; DuckDB's would interleave with them.
        self._con.execute("SET enable_progress_bar = false")
        # Filter pushdown moves a filter on a parsed field below the projection that parses it,
        # substituting the expression: every line's JSON was then parsed twice (once to filter,
        # once to project), a third of the extraction's time. Results are the same without it.
        # DuckDB guesses a few hundred rows for read_json_objects, so its build-side optimiser put
        # the parsed Observations, line text and all, into the hash table of the join to the
        # cohort's patients: 0.9 million lines in memory per 2.5 million Observations, growing with
        # the export. The plan writes every join with its small side on the right, which DuckDB
        # builds when this optimiser is off; the input then streams through the joins.
        self._con.execute("SET disabled_optimizers = 'filter_pushdown,build_side_probe_side'")
        # An operator that spills (a large join or aggregate) keeps its files beside other temporary files.
        self._con.execute(
            f"SET temp_directory = {DUCKDB.literal(str(Path(tempfile.gettempdir()) / 'ichis-duckdb'))}"
        )

    def lines(self, view: str, files: Sequence[Path]) -> None:
        if not files:
            self._con.execute(
                f"CREATE OR REPLACE TEMP VIEW {view} AS SELECT NULL::VARCHAR AS line WHERE false"
            )
            return
        paths = "[" + ", ".join(DUCKDB.literal(str(f)) for f in files) + "]"
        # maximum_object_size bounds one resource at 32 MiB; DuckDB sizes its read buffers from it,
        # so a larger bound costs memory on every read. (The CSV reader with a delimiter no JSON line
        # contains keeps the text too, but read a 2.5 M-Observation export about 15% slower.)
        # Paths are quoted as SQL literals; view names are the plan's constants.
        # The reader strips whitespace around each value, so an object starts with '{'; any other
        # JSON value (null, a number, an array) is no resource, and both engines refuse it.
        self._con.execute(
            f"CREATE OR REPLACE TEMP VIEW {view} AS SELECT CASE WHEN substr(text, 1, 1) = '{{' "  # noqa: S608
            f"THEN text ELSE error('{NOT_AN_OBJECT}') END AS line "
            f"FROM (SELECT json::VARCHAR AS text FROM read_json_objects({paths}, "
            "format = 'newline_delimited', maximum_object_size = 33554432, compression = 'auto_detect'))"
        )

    def table(self, view: str, rows: Sequence[tuple[str, date]]) -> None:
        arrow = pa.table(
            {
                "patient": pa.array([r[0] for r in rows], pa.string()),
                "dose_date": pa.array([r[1] for r in rows], pa.date32()),
            }
        )
        self._con.register(f"{view}_arrow", arrow)
        self._con.execute(f"CREATE OR REPLACE TEMP TABLE {view} AS SELECT * FROM {view}_arrow")  # noqa: S608
        self._con.unregister(f"{view}_arrow")

    def _rows(self, sql: str) -> Iterator[Any]:
        """The result's column names, then its rows."""
        # The query writes its result to a Parquet file, which is then read back in batches. Fetched
        # straight from the query, the rows came from a streaming result, which ran the query on
        # little more than the fetching thread: the candidate Observations of a 2.5 M-Observation
        # export took 9.2 s at 1.2 cores busy, 6.4 s written this way (both cores; the file is 6 MB).
        # Insertion order is kept, so rows come in the input's order and the table is the same on
        # every run. One query at a time on the connection: temporary views belong to it.
        with tempfile.TemporaryDirectory(prefix="ichis-duckdb-result-") as folder:
            path = Path(folder) / "result.parquet"
            try:
                self._con.execute(
                    f"COPY ({sql}) TO {DUCKDB.literal(str(path))} (FORMAT parquet, ROW_GROUP_SIZE 8192)"
                )
            except duckdb.Error as error:
                raise _input_error(str(error)) from None
            yield pq.ParquetFile(path).schema_arrow.names
            yield from _parquet_rows([path])

    def close(self) -> None:
        self._con.close()


class SparkEngine(_Closing):
    """Apache Spark: local mode by default, a cluster through ``master`` (``spark://host:7077``)."""

    name = "spark"
    dialect = SPARK

    def __init__(
        self, master: str = "local[2]", driver_memory: str = "2g", sort_run_bytes: int = RUN_BYTES
    ) -> None:
        self._run_bytes = sort_run_bytes
        # Imported here: pyspark is heavy, and only this engine needs it.
        from pyspark.sql import SparkSession  # noqa: PLC0415

        builder: Any = SparkSession.builder
        self._spark = (
            builder.master(master)
            .appName("ichis-cohort")
            .config("spark.ui.enabled", "false")
            .config("spark.driver.memory", driver_memory)
            # Few, larger tasks: the plan's shuffles are small (one row per candidate).
            .config("spark.sql.shuffle.partitions", "4")
            .config("spark.ui.showConsoleProgress", "false")
            .config("spark.sql.session.timeZone", "UTC")
            # A wrongly typed field nulls only itself, not its whole object (the default from Spark
            # 4.0; set for clusters that run an older default).
            .config("spark.sql.json.enablePartialResults", "true")
            .getOrCreate()
        )
        self._spark.sparkContext.setLogLevel("ERROR")
        # In local mode the tasks run in this machine's JVM and write where Python can read.
        self._local = master.startswith("local")

    def lines(self, view: str, files: Sequence[Path]) -> None:
        if not files:
            self._spark.sql("SELECT CAST(NULL AS STRING) AS line WHERE false").createOrReplaceTempView(view)
            return
        # Every non-blank line must be one JSON object and nothing else, as DuckDB requires (the
        # plan's own parse is PERMISSIVE, see plan.py). Spark's parser stops after the first value
        # and ignores what follows, so the line is read as the body of an array: FAILFAST stops the
        # query on text that is not JSON or trails the object ("{...} x", "{...} {...}"), and the
        # array must hold exactly one object ("null", "{...}, {...}" do not). The lambda binds the
        # parse once. Blank means JSON whitespace only (space, tab, CR, LF), as on DuckDB
        # (plan._nonblank). Single quotes and NaN, which Spark's parser takes by default, are
        # refused as DuckDB refuses single quotes (and the rows' strict reading refuses NaN).
        # The parser also stops after the array, so the line must end with the object's brace
        # ("{...}]" would read as one array and a stray bracket).
        one_object = (
            "transform(array(from_json(concat('[', value, ']'), 'ARRAY<STRUCT<resourceType: STRING>>', "
            "map('mode', 'FAILFAST', 'allowSingleQuotes', 'false', 'allowNonNumericNumbers', 'false'))), "
            "a -> size(a) = 1 AND a[0] IS NOT NULL)[0] "
            "AND (endswith(value, '}') OR substr(trim(BOTH ' \t\r\n' FROM value), -1) = '}')"
        )
        # Written in this order, the blank test (which copies every line it reads) runs only on
        # the few lines that are not one object, and the trim only on an object followed by spaces:
        # before, both ran on every line, and checking the Observations of a 2.5 M-line export took
        # 56-59 s on local[2] instead of 12-16 s (the text alone: 2-6 s).
        frame = self._spark.read.text([str(f) for f in files]).selectExpr(
            f"CASE WHEN {one_object} OR translate(value, ' \t\r\n', '') = '' THEN value "
            f"ELSE raise_error({SPARK.literal(NOT_AN_OBJECT)}) END AS line"
        )
        frame.createOrReplaceTempView(view)

    def table(self, view: str, rows: Sequence[tuple[str, date]]) -> None:
        frame = self._spark.createDataFrame(list(rows), schema="patient STRING, dose_date DATE")
        frame.createOrReplaceTempView(view)

    def _rows(self, sql: str) -> Iterator[Any]:
        """The result's column names, then its rows."""
        from py4j.protocol import Py4JJavaError  # noqa: PLC0415 - as above
        from pyspark.errors import PySparkException  # noqa: PLC0415 - as above

        try:
            frame = self._spark.sql(sql)
            yield frame.columns
            if not self._local:
                for row in frame.toLocalIterator(prefetchPartitions=True):
                    yield tuple(row)
                return
            # toLocalIterator runs one job per partition, one after the other, so one core of
            # local[2] worked while the other waited (the orders, and every join after the
            # Observations' scan). Written to Parquet, all partitions run at once; Python reads the
            # result back a batch at a time. (A cluster's tasks write where this process may not
            # read, so there the rows still come through the driver.)
            with tempfile.TemporaryDirectory(prefix="ichis-spark-result-") as folder:
                frame.write.parquet(str(Path(folder) / "result"))
                # Part files are named by partition number, so their order is the partitions'.
                yield from _parquet_rows(sorted((Path(folder) / "result").glob("part-*.parquet")))
        except (Py4JJavaError, PySparkException) as error:
            raise _input_error(str(error)) from None

    def close(self) -> None:
        self._spark.stop()


def _parquet_rows(files: Sequence[Path]) -> Iterator[tuple[Any, ...]]:
    """The rows of an engine's result files, file by file, a batch at a time."""
    for path in files:
        for batch in pq.ParquetFile(path).iter_batches(batch_size=_BATCH):
            yield from zip(*(column.to_pylist() for column in batch.columns), strict=True)


#: The error both engines raise for a line that holds JSON but no object.
NOT_AN_OBJECT = "an input line holds JSON that is not an object (a FHIR resource)"


def _input_error(message: str) -> CohortError:
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    # Spark's first line names a Py4J call; the parser's own words come further down.
    first = next((line for line in lines if "malformed" in line.lower() or NOT_AN_OBJECT in line), None)
    first = first or (lines[0] if lines else "query failed")
    lowered = message.lower()
    if "malformed" in lowered or "json" in lowered:
        return CohortInputError(f"an input line is not valid FHIR JSON: {first[:300]}")
    return CohortError(f"the extraction query failed: {first[:300]}")


def open_engine(name: str, spark_master: str | None = None) -> DuckDBEngine | SparkEngine:
    """The engine by name: ``duckdb`` (default) or ``spark`` (``spark_master`` chooses the cluster)."""
    if name == "duckdb":
        # No memory limit: what DuckDB holds is bounded without one (the joins build on the cohort's
        # side, the sorts are done in bounded memory in Python). A limit of 300-400 MB failed now and
        # then with "Out of Memory" in ORDER BY while the JSON reader's buffers (about 140 MB on two
        # threads) counted against it; see docs/cohort.md.
        return DuckDBEngine()
    if name == "spark":
        return SparkEngine(spark_master or "local[2]")
    raise CohortUsageError(f"unknown engine '{name}': use duckdb or spark")


__all__ = ["DuckDBEngine", "Engine", "SparkEngine", "open_engine"]
