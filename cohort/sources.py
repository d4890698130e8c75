"""A folder of Bulk Data NDJSON files: which file holds which resource type.

Bulk Data servers name their files freely (``Observation.ndjson``, ``1.Observation.ndjson``,
``Observation_2.ndjson.gz``); the specification promises one resource type per file, so the type is
read from each file's first resource rather than guessed from its name.
https://hl7.org/fhir/uv/bulkdata/export.html#file-request
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from cohort.errors import CohortInputError
from cohort.plan import RESOURCE_TYPES

SUFFIXES = (".ndjson", ".ndjson.gz", ".jsonl", ".jsonl.gz")


@dataclass(frozen=True)
class Sources:
    """NDJSON files by resource type, and the files that were not read (with why)."""

    files: dict[str, list[Path]]
    skipped: list[str] = field(default_factory=list)

    def count(self) -> int:
        return sum(len(paths) for paths in self.files.values())


def _first_type(path: Path) -> str | None:
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8") as handle:
            for line in handle:
                if line.strip():
                    document = json.loads(line)
                    kind = document.get("resourceType") if isinstance(document, dict) else None
                    return kind if isinstance(kind, str) else None
    except (OSError, EOFError, UnicodeDecodeError) as error:
        raise CohortInputError(f"cannot read {path}: {error}") from None
    except json.JSONDecodeError as error:
        raise CohortInputError(f"{path}: the first line is not JSON ({error.msg})") from None
    return None


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
    skipped = []
    for path in candidates:
        kind = _first_type(path)
        if kind is None:
            skipped.append(f"{path.name}: empty")
        elif kind in files:
            files[kind].append(path)
        else:
            skipped.append(f"{path.name}: {kind} is not read")
    if not any(files.values()):
        raise CohortInputError("none of the input files holds Patient, Observation or medication resources")
    return Sources(files, skipped)
