"""One SQLite connection per thread and process, opened on first use and kept.

Opening a connection costs more than the insert it serves; keeping one per thread avoids that
while staying safe across gunicorn's fork (a child never reuses its parent's connection) and
across threads (sqlite3 connections are not shared). WAL with synchronous=NORMAL: a commit is
durable against a crash of the process, and costs no fsync on the request path.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class Connections:
    """The connections of one SQLite file: this thread's, opened on first use."""

    def __init__(self, path: Path, *, schema: str = "") -> None:
        """``schema``: the statements that create the store's tables if they are missing."""
        self.path = path
        self._local = threading.local()
        path.parent.mkdir(parents=True, exist_ok=True)
        if schema:
            self.get().executescript(schema)

    def get(self) -> sqlite3.Connection:
        """This thread's connection (autocommit: each statement, or BEGIN ... COMMIT, is one write)."""
        local = self._local
        if getattr(local, "pid", None) != os.getpid() or getattr(local, "db", None) is None:
            db = sqlite3.connect(self.path, timeout=10, isolation_level=None, check_same_thread=True)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA busy_timeout=10000")
            local.db, local.pid = db, os.getpid()
        connection: sqlite3.Connection = local.db
        return connection

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """This thread's connection inside BEGIN IMMEDIATE ... COMMIT, rolled back on an error.

        The connection is kept, so a transaction left open by an error would block every later
        one on this thread: the rollback is not optional.
        """
        db = self.get()
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def close(self) -> None:
        """Close this thread's connection (others close when their thread ends)."""
        db = getattr(self._local, "db", None)
        if db is not None and getattr(self._local, "pid", None) == os.getpid():
            db.close()
        self._local.db = None
