"""Rows in key order in bounded memory: an external merge sort over temporary files.

DuckDB's ORDER BY holds every row it sorts in memory unless a memory limit makes it spill, and
under a limit it failed now and then with "Out of Memory" (its JSON reader's buffers count against
the same limit). The candidate lines of a large export are hundreds of megabytes, so they are
sorted here instead: runs of at most ``run_bytes`` of text are sorted in memory and written to a
temporary file, then merged, a chunk of each run at a time.
"""

from __future__ import annotations

import heapq
import pickle
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack
from typing import IO, Any

Row = tuple[Any, ...]

#: Text per sorted run held in memory (a run's rows, as Python objects, take about half again).
RUN_BYTES = 16 << 20
#: Rows per pickled chunk of a run: what the merge holds of each run at a time.
_CHUNK = 512


def nulls_last(positions: tuple[int, ...]) -> Callable[[Row], tuple[Any, ...]]:
    """The key that orders rows by the columns at ``positions``, ascending, NULL after any value
    (DuckDB's default; strings by code point, which is the order of their UTF-8 bytes)."""
    if len(positions) == 1:
        # The common case (rows by patient), without a generator per row: a third of the sort.
        (i,) = positions
        return lambda row: (row[i] is None, row[i])
    return lambda row: tuple((row[i] is None, row[i]) for i in positions)


def _weight(row: Row) -> int:
    return sum(len(value) for value in row if isinstance(value, str)) + 64


def sorted_rows(rows: Iterable[Row], key: Callable[[Row], Any], run_bytes: int = RUN_BYTES) -> Iterator[Row]:
    """``rows`` sorted by ``key`` (stable), with at most about ``run_bytes`` of them in memory."""
    # All runs go to one file (one descriptor however many runs), deleted when the merge ends or
    # stops (at once on POSIX: it has no name).
    with ExitStack() as stack:
        spilled: IO[bytes] | None = None
        starts: list[int] = []
        run: list[Row] = []
        size = 0
        for row in rows:
            run.append(row)
            size += _weight(row)
            if size >= run_bytes:
                if spilled is None:
                    spilled = stack.enter_context(tempfile.TemporaryFile(prefix="ichis-sort-"))
                starts.append(spilled.tell())
                _spill(sorted(run, key=key), spilled)
                run, size = [], 0
        run.sort(key=key)
        if spilled is None:
            yield from run
            return
        ends = [*starts[1:], spilled.tell()]
        # heapq.merge takes equal keys from earlier runs first: the sort stays stable.
        yield from heapq.merge(
            *(_read(spilled, a, b) for a, b in zip(starts, ends, strict=True)), run, key=key
        )


def _spill(run: list[Row], spilled: IO[bytes]) -> None:
    for start in range(0, len(run), _CHUNK):
        pickle.dump(run[start : start + _CHUNK], spilled, protocol=pickle.HIGHEST_PROTOCOL)


def _read(spilled: IO[bytes], start: int, end: int) -> Iterator[Row]:
    """The run between two offsets of the file, a chunk at a time (the merge reads runs in turn)."""
    while start < end:
        spilled.seek(start)
        chunk: list[Row] = pickle.load(spilled)  # noqa: S301 - our own file, written just above
        start = spilled.tell()
        yield from chunk
