"""Rows of many patients at once: ``records.patient_row`` in worker processes, one per core.

Building a row is pure Python (the service's own ``assess`` and this package's rules), so threads
would share one interpreter lock; processes score in parallel. Rows come back in the order the
patients went in, so the table is the same whatever the number of workers. This module imports only
what a worker needs (no engine, no pandas), so a worker starts in a fraction of a second.
"""

from __future__ import annotations

import multiprocessing
import os
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from datetime import date
from typing import Any

from cohort.definition import CohortDefinition
from cohort.doses import FirstDose
from cohort.records import patient_row

#: One patient's work: the first dose, its ``(resource type, line)`` pairs, its last contact.
Work = tuple[FirstDose, list[tuple[str, str]], date | None]

#: Patients per task: large enough that sending the lines costs little next to scoring them.
CHUNK = 250
#: Below this many cohort patients one process is quicker than starting others.
PARALLEL_FROM = 2000

_definition: CohortDefinition | None = None


def cores() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _start(definition: CohortDefinition) -> None:
    global _definition  # noqa: PLW0603 - one definition per worker process, set once at its start
    _definition = definition


def _rows(chunk: list[Work]) -> list[dict[str, Any] | None]:
    if _definition is None:  # never: the pool's initializer sets it
        raise RuntimeError("worker started without a cohort definition")
    return [patient_row(dose, lines, _definition, contact) for dose, lines, contact in chunk]


def _chunks(work: Iterable[Work], size: int) -> Iterator[list[Work]]:
    chunk: list[Work] = []
    for item in work:
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _ready() -> None:
    """A task that only makes a worker start (and import this module) before the rows come."""


class Scorer:
    """Builds rows in ``workers`` processes (in this one when ``workers`` is 1).

    The processes start (``spawn``: the engine's threads must not be forked) and import as soon as
    the scorer is made, while the engine still reads the input; use it as a context manager.
    """

    def __init__(self, definition: CohortDefinition, workers: int = 1) -> None:
        self._definition = definition
        self._workers = workers
        self._pool: ProcessPoolExecutor | None = None
        self._broken = False
        if workers > 1:
            context = multiprocessing.get_context("spawn")
            self._pool = ProcessPoolExecutor(
                workers, mp_context=context, initializer=_start, initargs=(definition,)
            )
            for _ in range(workers):
                self._pool.submit(_ready)

    def rows(self, work: Iterable[Work]) -> Iterator[tuple[FirstDose, dict[str, Any] | None]]:
        """Each patient's row (None: left out by the diagnosis rule), in the order of ``work``.

        At most two chunks per worker wait, so memory holds a few thousand patients' lines whatever
        the cohort's size.
        """
        if self._pool is None:
            for dose, lines, contact in work:
                yield dose, patient_row(dose, lines, self._definition, contact)
            return
        waiting: deque[tuple[list[Work], Future[list[dict[str, Any] | None]] | None]] = deque()
        for chunk in _chunks(work, CHUNK):
            waiting.append((chunk, self._submit(chunk)))
            while len(waiting) > 2 * self._workers:
                yield from self._done(*waiting.popleft())
        while waiting:
            yield from self._done(*waiting.popleft())

    def _submit(self, chunk: list[Work]) -> Future[list[dict[str, Any] | None]] | None:
        if self._pool is None or self._broken:
            return None
        try:
            return self._pool.submit(_rows, chunk)
        except BrokenProcessPool:
            self._broken = True
            return None

    def _done(
        self, chunk: list[Work], future: Future[list[dict[str, Any] | None]] | None
    ) -> Iterator[tuple[FirstDose, dict[str, Any] | None]]:
        rows: list[dict[str, Any] | None] | None = None
        if future is not None:
            try:
                rows = future.result()
            except BrokenProcessPool:
                # A worker killed from outside (the machine's out-of-memory killer, an operator):
                # the rows do not depend on where they are built, so this process builds the rest.
                self._broken = True
        if rows is None:
            rows = [patient_row(dose, lines, self._definition, contact) for dose, lines, contact in chunk]
        for (dose, _, _), row in zip(chunk, rows, strict=True):
            yield dose, row

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)

    def __enter__(self) -> Scorer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
