"""The two engines that run the extraction plan: DuckDB (embedded, the default) and Apache Spark.

Both expose the same four operations: register NDJSON files as a view of lines, register a small
table of rows, and stream a query's rows in order. Neither builds a Python object per input line.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator, Sequence
from datetime import date
from pathlib import Path
from typing import Any, Protocol, Self

import duckdb
import pyarrow as pa

from cohort.errors import CohortError, CohortInputError, CohortUsageError
from cohort.plan import DUCKDB, SPARK, Dialect

#: Rows fetched from DuckDB per round trip while streaming.
_BATCH = 4096


class Engine(Protocol):
    """What the extraction needs from an engine."""

    name: str
    dialect: Dialect

    def lines(self, view: str, files: Sequence[Path]) -> None:
        """Register NDJSON files (plain or .gz) as a view with one column ``line``."""

    def table(self, view: str, rows: Sequence[tuple[str, date]]) -> None:
        """Register ``(patient, dose_date)`` rows as a view."""

    def stream(self, sql: str) -> Iterator[tuple[Any, ...]]:
        """The query's rows, in its order, without holding them all."""

    def close(self) -> None: ...


class _Closing:
    """An engine that closes when the ``with`` block around it ends."""

    def close(self) -> None:
        raise NotImplementedError

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

    def __init__(self, threads: int | None = None, memory_limit: str | None = None) -> None:
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
        self._con.execute("SET disabled_optimizers = 'filter_pushdown'")
        # Sorting the candidate stream may spill; keep it beside other temporary files.
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

    def stream(self, sql: str) -> Iterator[tuple[Any, ...]]:
        # One query at a time on the connection: temporary views belong to it.
        try:
            result = self._con.execute(sql)
            while batch := result.fetchmany(_BATCH):
                yield from batch
        except duckdb.Error as error:
            raise _input_error(str(error)) from None

    def close(self) -> None:
        self._con.close()


class SparkEngine(_Closing):
    """Apache Spark: local mode by default, a cluster through ``master`` (``spark://host:7077``)."""

    name = "spark"
    dialect = SPARK

    def __init__(self, master: str = "local[2]", driver_memory: str = "2g") -> None:
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
        # (plan._nonblank).
        # The parser also stops after the array, so the line must end with the object's brace
        # ("{...}]" would read as one array and a stray bracket).
        one_object = (
            "transform(array(from_json(concat('[', value, ']'), 'ARRAY<STRUCT<resourceType: STRING>>', "
            "map('mode', 'FAILFAST'))), a -> size(a) = 1 AND a[0] IS NOT NULL)[0] "
            "AND substr(trim(BOTH ' \t\r\n' FROM value), -1) = '}'"
        )
        frame = self._spark.read.text([str(f) for f in files]).selectExpr(
            f"CASE WHEN translate(value, ' \t\r\n', '') = '' OR {one_object} THEN value "
            f"ELSE raise_error({SPARK.literal(NOT_AN_OBJECT)}) END AS line"
        )
        frame.createOrReplaceTempView(view)

    def table(self, view: str, rows: Sequence[tuple[str, date]]) -> None:
        frame = self._spark.createDataFrame(list(rows), schema="patient STRING, dose_date DATE")
        frame.createOrReplaceTempView(view)

    def stream(self, sql: str) -> Iterator[tuple[Any, ...]]:
        from py4j.protocol import Py4JJavaError  # noqa: PLC0415 - as above
        from pyspark.errors import PySparkException  # noqa: PLC0415 - as above

        try:
            for row in self._spark.sql(sql).toLocalIterator(prefetchPartitions=True):
                yield tuple(row)
        except (Py4JJavaError, PySparkException) as error:
            raise _input_error(str(error)) from None

    def close(self) -> None:
        self._spark.stop()


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
        # No memory limit: at 400 MB the 2.5 M-Observation benchmark peaked at 0.65-0.8 GiB instead of
        # 1.1-1.4 GiB, but five times that export failed with "Out of Memory" (an operator that does
        # not spill). A bounded peak needs the candidate stream to spill; see docs/cohort.md.
        return DuckDBEngine()
    if name == "spark":
        return SparkEngine(spark_master or "local[2]")
    raise CohortUsageError(f"unknown engine '{name}': use duckdb or spark")


__all__ = ["DuckDBEngine", "Engine", "SparkEngine", "open_engine"]
