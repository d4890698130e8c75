"""Writing and reading the cohort table (Parquet and CSV), in batches so memory stays bounded."""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from datetime import date
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from cohort.errors import CohortInputError
from cohort.records import COLUMNS

if TYPE_CHECKING:
    # pandas (a third of a second to import) is only needed to read a table, and pyarrow loads it then.
    import pandas as pd

_BATCH = 5000


def arrow_schema() -> Any:
    """The Parquet schema of the cohort table (pyarrow)."""

    types = {"string": pa.string(), "int": pa.int64(), "bool": pa.bool_(), "date": pa.date32()}
    return pa.schema([(name, types[kind]) for name, kind in COLUMNS])


class TableWriter:
    """Rows -> ``cohort.parquet`` and/or ``cohort.csv`` in a folder, written as they come."""

    def __init__(self, folder: Path, formats: Sequence[str] = ("parquet", "csv")) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.paths: list[Path] = []
        self._batch: list[dict[str, Any]] = []
        self._schema = arrow_schema()
        self._parquet: Any = None
        self._csv: Any = None
        self._csv_writer: Any = None
        if "parquet" in formats:
            path = folder / "cohort.parquet"
            self._parquet = pq.ParquetWriter(path, self._schema)
            self.paths.append(path)
        if "csv" in formats:
            path = folder / "cohort.csv"
            self._csv = path.open("w", newline="", encoding="utf-8")
            self._csv_writer = csv.writer(self._csv)
            self._csv_writer.writerow([name for name, _ in COLUMNS])
            self.paths.append(path)

    def write(self, row: dict[str, Any]) -> None:
        self._batch.append(row)
        if len(self._batch) >= _BATCH:
            self._flush()

    def _flush(self) -> None:
        if not self._batch:
            return
        if self._parquet is not None:
            self._parquet.write_table(pa.Table.from_pylist(self._batch, schema=self._schema))
        if self._csv_writer is not None:
            for row in self._batch:
                self._csv_writer.writerow([_csv_value(row[name]) for name, _ in COLUMNS])
        self._batch = []

    def close(self) -> None:
        self._flush()
        if self._parquet is not None:
            self._parquet.close()
        if self._csv is not None:
            self._csv.close()

    def __enter__(self) -> TableWriter:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()


def _csv_value(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, date):
        return value.isoformat()
    return value


def write_rows(rows: Iterable[dict[str, Any]], folder: Path, formats: Sequence[str]) -> list[Path]:
    with TableWriter(folder, formats) as writer:
        for row in rows:
            writer.write(row)
    return writer.paths


def read_table(path: Path) -> Any:
    """A cohort table (Parquet or CSV) as a pandas DataFrame with the documented columns."""

    if path.is_dir():
        path = path / "cohort.parquet" if (path / "cohort.parquet").exists() else path / "cohort.csv"
    try:
        if path.suffix == ".csv":
            schema = arrow_schema()
            options = pacsv.ConvertOptions(
                column_types={f.name: f.type for f in schema},
                true_values=["true"],
                false_values=["false"],
                strings_can_be_null=True,
            )
            table: pa.Table = pacsv.read_csv(path, convert_options=options)
        else:
            table = pq.read_table(path)
    except (OSError, pa.ArrowInvalid) as error:
        raise CohortInputError(f"cannot read the cohort table {path}: {error}") from None
    missing = [name for name, _ in COLUMNS if name not in table.column_names]
    if missing:
        raise CohortInputError(f"{path} is not a cohort table: missing columns {', '.join(missing)}")
    frame: pd.DataFrame = table.to_pandas()
    return frame
