"""A folder of Bulk Data NDJSON files: which file holds which resource type.

Bulk Data servers name their files freely (``Observation.ndjson``, ``1.Observation.ndjson``,
``Observation_2.ndjson.gz``); the specification promises one resource type per file, so the type is
read from each file's first resource rather than guessed from its name.
https://hl7.org/fhir/uv/bulkdata/export.html#file-request
"""

from __future__ import annotations

import gzip
import json
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from cohort.errors import CohortError, CohortInputError
from cohort.plan import RESOURCE_TYPES
from fhir_mappings.bundles import JsonTextError, loads

SUFFIXES = (".ndjson", ".ndjson.gz", ".jsonl", ".jsonl.gz")

_ID = re.compile(r'"resourceType"\s*:\s*"([A-Za-z]{1,64})".*?"id"\s*:\s*"([A-Za-z0-9\-.]{1,64})"')


def read_line(line: str) -> Any:
    """A line an engine handed over, read by the service's own parser (RFC 8259, exact decimals).

    The engines' readers tolerate more than JSON (DuckDB: ``NaN``, ``Infinity``, trailing commas;
    Spark: single quotes), and the rows are built from this second reading: such a line is an input
    error in one line, named by its resource, never a traceback or a guessed value.
    """
    try:
        return loads(line)
    except (JsonTextError, RecursionError) as error:
        found = _ID.search(line)
        named = f"{found[1]}/{found[2]}" if found else "a resource without a readable id"
        raise CohortInputError(
            f"an input line ({named}) is not strict JSON (RFC 8259: no NaN, Infinity, trailing comma "
            f"or single quotes): {error}"
        ) from None


#: UTF-8's byte-order mark. JSON text must not start with one, but parsers "MAY ignore" it
#: (RFC 8259, section 8.1), and files saved by some Windows tools carry it.
BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True)
class Sources:
    """NDJSON files by resource type, and the files that were not read (with why)."""

    files: dict[str, list[Path]]
    skipped: list[str] = field(default_factory=list)
    #: Files that start with a byte-order mark; the engines read them through :func:`readable`.
    with_bom: list[Path] = field(default_factory=list)

    def count(self) -> int:
        return sum(len(paths) for paths in self.files.values())


def _open(path: Path, mode: str = "rb", encoding: str | None = None) -> Any:
    if path.name.endswith(".gz"):
        return gzip.open(path, mode, encoding=encoding)
    return path.open(mode, encoding=encoding)


def _first_type(path: Path) -> tuple[str | None, bool]:
    """The resource type of the file's first resource, and whether the file starts with a BOM."""
    try:
        with _open(path) as raw:
            bom = raw.read(len(BOM)) == BOM
        # utf-8-sig reads the mark as nothing.
        with _open(path, "rt", encoding="utf-8-sig") as handle:
            for line in handle:
                if line.strip():
                    document = json.loads(line)
                    kind = document.get("resourceType") if isinstance(document, dict) else None
                    return (kind if isinstance(kind, str) else None), bom
    except (OSError, EOFError, UnicodeDecodeError) as error:
        raise CohortInputError(f"cannot read {path}: {error}") from None
    except json.JSONDecodeError as error:
        raise CohortInputError(f"{path}: the first line is not JSON ({error.msg})") from None
    return None, bom


def discover(paths: Iterable[Path]) -> Sources:
    """NDJSON files (folders are searched recursively) grouped by the resource type they hold."""
    candidates: list[Path] = []
    for path in paths:
        if path.is_dir():
            candidates += sorted(p for p in path.rglob("*") if p.is_file() and p.name.endswith(SUFFIXES))
        elif path.is_file():
            candidates.append(path)
        else:
            raise CohortInputError(f"{path}: no such file or folder")
    if not candidates:
        raise CohortInputError("no .ndjson or .ndjson.gz files found in the input")
    files: dict[str, list[Path]] = {kind: [] for kind in RESOURCE_TYPES}
    skipped, with_bom = [], []
    for path in candidates:
        kind, bom = _first_type(path)
        if bom and kind in files:
            with_bom.append(path)
        if kind is None:
            skipped.append(f"{path.name}: empty")
        elif kind in files:
            files[kind].append(path)
        else:
            skipped.append(f"{path.name}: {kind} is not read")
    if not any(files.values()):
        raise CohortInputError("none of the input files holds Patient, Observation or medication resources")
    return Sources(files, skipped, with_bom)


@contextmanager
def readable(sources: Sources) -> Iterator[Sources]:
    """``sources`` as the engines can read them: a file that starts with a byte-order mark is copied
    without it (uncompressed) into a temporary folder that lives as long as the block. DuckDB and
    Spark would refuse the mark or read it as part of the first line."""
    if not sources.with_bom:
        yield sources
        return
    with tempfile.TemporaryDirectory(prefix="ichis-bom-") as folder:
        copies: dict[Path, Path] = {}
        for number, path in enumerate(sources.with_bom):
            copy = Path(folder) / f"{number}.ndjson"
            try:
                with _open(path) as source, copy.open("wb") as target:
                    source.read(len(BOM))
                    shutil.copyfileobj(source, target, 1 << 20)
            except (OSError, EOFError) as error:
                raise CohortInputError(f"cannot read {path}: {error}") from None
            copies[path] = copy
        files = {kind: [copies.get(p, p) for p in paths] for kind, paths in sources.files.items()}
        try:
            yield replace(sources, files=files)
        except CohortError as error:
            # The engine names the copy it read; the user knows the original.
            message = str(error)
            for original, copy in copies.items():
                message = message.replace(str(copy), f"{original} (read without its byte-order mark)")
            raise type(error)(message) from None
