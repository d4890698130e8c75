"""Audit delivery without loss: a durable local spool (SQLite) and a background deliverer.

The request path only inserts the AuditEvent into the spool (one local write) and returns. A
thread in each worker process delivers due records to the audit FHIR server with ``PUT
AuditEvent/{id}``: the id is derived from the hookInstance, so a retry after a lost response
updates the same resource instead of creating a duplicate. Failures back off exponentially
(with jitter) up to ``audit_retry_max_seconds``; records survive outages and restarts because
they leave the spool only once the server has confirmed them. Workers claim rows before sending,
so two processes do not send the same record at the same moment.
"""

from __future__ import annotations

import json
import logging
import os
import random
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from fhir_mappings.outbound import Destinations, UnsafeDestination
from plumbing.errors import first_diagnostics
from plumbing.sqlite import Connections

log = logging.getLogger("ichis.audit")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS spool (
    id TEXT PRIMARY KEY,
    resource TEXT NOT NULL,
    target TEXT NOT NULL,
    created REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt REAL NOT NULL,
    claimed_until REAL NOT NULL DEFAULT 0,
    last_error TEXT,
    -- 1 when the server refused the record for good (a 4xx): kept, not retried, shown in stats.
    rejected INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
-- The deliverer's search for due records, oldest first, without reading the records themselves:
-- one index for "any target", one for "a call's own server" (no audit repository configured).
CREATE INDEX IF NOT EXISTS spool_due ON spool (created, next_attempt, claimed_until) WHERE rejected = 0;
CREATE INDEX IF NOT EXISTS spool_due_elsewhere ON spool (created, next_attempt, claimed_until)
    WHERE rejected = 0 AND target != '';
"""

#: Due records, oldest first; with ``target != ''`` only those for a call's own server.
_DUE = (
    "SELECT id, resource, target, attempts FROM spool "
    "WHERE rejected = 0{targets} AND next_attempt <= ? AND claimed_until <= ? ORDER BY created LIMIT ?"
)
_DUE_ANYWHERE = _DUE.format(targets="")
_DUE_ELSEWHERE = _DUE.format(targets=" AND target != ''")


@dataclass(frozen=True)
class SpoolStats:
    depth: int  # records not yet delivered, rejected ones included
    oldest_age_seconds: float | None
    delivered: int
    failures: int
    rejected: int  # records the server refused for good: they need an operator


class AuditSpool:
    """The SQLite spool every worker shares; ``put`` is the only call on the request path."""

    def __init__(self, path: Path, clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self.clock = clock
        self._connections = Connections(path)
        self._connections.get().executescript(_SCHEMA)

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        yield self._connections.get()

    def put(self, resource: Mapping[str, Any], target: str) -> None:
        """Spool one AuditEvent for ``target`` (a FHIR base URL); the same id is kept once."""
        now = self.clock()
        # AuditEvents hold no lab values, so the C encoder is exact here (and much faster).
        text = json.dumps(resource, separators=(",", ":"), ensure_ascii=False)
        with self._connect() as db:
            db.execute(
                "INSERT OR IGNORE INTO spool (id, resource, target, created, next_attempt) "
                "VALUES (?, ?, ?, ?, ?)",
                (resource["id"], text, target, now, now),
            )

    def claim(
        self, limit: int, lease_seconds: float, *, with_default_target: bool
    ) -> list[tuple[str, dict[str, Any], str, int]]:
        """Due records, leased to this process for ``lease_seconds``. Records with an empty target
        go to the configured audit repository, so they are claimed only when one is configured.

        The due records are found outside the write lock (in WAL mode a reader blocks no writer),
        and the lock is then held only to lease them by primary key. Searching under the lock made
        every request's spool write wait on each poll, the longer the spool the longer: 20-65 ms
        once a second with a few thousand records waiting.
        """
        now = self.clock()
        with self._connect() as db:
            rows = db.execute(
                _DUE_ANYWHERE if with_default_target else _DUE_ELSEWHERE, (now, now, limit)
            ).fetchall()
        if not rows:
            return []
        leased = []
        with self._connections.transaction() as db:
            for row in rows:
                # Leased only if still due and free: another process may have leased, delivered or
                # rescheduled it since it was read.
                lease = db.execute(
                    "UPDATE spool SET claimed_until = ? "
                    "WHERE id = ? AND rejected = 0 AND next_attempt <= ? AND claimed_until <= ?",
                    (now + lease_seconds, row[0], now, now),
                )
                if lease.rowcount == 1:
                    leased.append(row)
        return [(row[0], json.loads(row[1]), row[2], row[3]) for row in leased]

    def delivered(self, record_id: str) -> None:
        with self._connect() as db:
            db.execute("DELETE FROM spool WHERE id = ?", (record_id,))
            self._count(db, "delivered")

    def failed(self, record_id: str, attempts: int, error: str, retry_max_seconds: float) -> None:
        # Exponential backoff with jitter (not security-relevant randomness), capped.
        backoff = min(retry_max_seconds, 0.5 * 2 ** min(attempts, 20)) * (0.5 + random.random() / 2)  # noqa: S311
        with self._connect() as db:
            db.execute(
                "UPDATE spool SET attempts = ?, next_attempt = ?, claimed_until = 0, last_error = ? "
                "WHERE id = ?",
                (attempts + 1, self.clock() + backoff, error[:500], record_id),
            )
            self._count(db, "failures")

    def rejected(self, record_id: str, error: str) -> None:
        """The server refused the record (e.g. 400): retrying cannot help; keep it for an operator."""
        with self._connect() as db:
            db.execute(
                "UPDATE spool SET rejected = 1, claimed_until = 0, last_error = ? WHERE id = ?",
                (error[:500], record_id),
            )
            self._count(db, "failures")

    @staticmethod
    def _count(db: sqlite3.Connection, name: str) -> None:
        db.execute(
            "INSERT INTO counters VALUES (?, 1) ON CONFLICT(name) DO UPDATE SET value = value + 1", (name,)
        )

    def pending_ids(self) -> list[str]:
        """Ids of every record not yet delivered, oldest first."""
        with self._connect() as db:
            return [row[0] for row in db.execute("SELECT id FROM spool ORDER BY created")]

    def stats(self) -> SpoolStats:
        with self._connect() as db:
            depth, oldest, rejected = db.execute(
                "SELECT COUNT(*), MIN(created), COALESCE(SUM(rejected), 0) FROM spool"
            ).fetchone()
            counters = dict(db.execute("SELECT name, value FROM counters").fetchall())
        age = self.clock() - oldest if oldest is not None else None
        return SpoolStats(depth, age, counters.get("delivered", 0), counters.get("failures", 0), rejected)

    def writable(self) -> bool:
        try:
            with self._connect() as db:
                db.execute("BEGIN IMMEDIATE")
                db.execute("ROLLBACK")
        except sqlite3.Error:
            return False
        return True


class AuditDeliverer:
    """Background delivery of spooled AuditEvents; one thread per worker process."""

    def __init__(
        self,
        spool: AuditSpool,
        session: requests.Session,
        *,
        repository: str | None = None,
        token: str | None = None,
        destinations: Destinations | None = None,
        retry_max_seconds: float = 300.0,
        poll_seconds: float = 1.0,
        timeout_seconds: float = 10.0,
    ) -> None:
        self.spool = spool
        self.session = session
        self.repository = repository
        self.token = token
        #: Checked again at delivery: a record spooled under other settings, or a target that
        #: no longer passes the rules, is kept for an operator instead of being sent.
        self.destinations = destinations or Destinations("the audit server")
        self.retry_max_seconds = retry_max_seconds
        self.poll_seconds = poll_seconds
        self.timeout_seconds = timeout_seconds
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._pid: int | None = None
        self._lock = threading.Lock()

    def ensure_running(self) -> None:
        """Start the thread in this process (after a fork the parent's thread does not exist)."""
        if self._pid == os.getpid() and self._thread is not None and self._thread.is_alive():
            return  # the common case, on every request: no lock
        with self._lock:
            if self._pid == os.getpid() and self._thread is not None and self._thread.is_alive():
                return
            self._stop.clear()
            self._pid = os.getpid()
            self._thread = threading.Thread(target=self._run, name="audit-delivery", daemon=True)
            self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None and self._pid == os.getpid():
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                sent = self.deliver_due()
            except Exception:
                log.exception("audit delivery loop failed; retrying")
                sent = 0
            if not sent:
                self._wake.wait(self.poll_seconds)
                self._wake.clear()

    def deliver_due(self, limit: int = 100) -> int:
        """Send what is due now, one FHIR batch per destination; returns how many were delivered."""
        due = self.spool.claim(limit, self.timeout_seconds * 3, with_default_target=bool(self.repository))
        groups: dict[str, list[tuple[str, dict[str, Any], int]]] = {}
        for record_id, resource, target, attempts in due:
            groups.setdefault(target, []).append((record_id, resource, attempts))
        delivered = 0
        for target, records in groups.items():
            if self._stop.is_set():
                break
            destination = target or self.repository or ""
            try:
                self.destinations.check(destination)
            except UnsafeDestination as refused:
                outcomes: list[tuple[str | None, bool]] = [(f"not sent: {refused}", True)] * len(records)
            else:
                # The audit repository's token goes only to the repository, never to an EHR's server.
                outcomes = self._send_batch(destination, records, None if target else self.token)
            for (record_id, _, attempts), (error, permanent) in zip(records, outcomes, strict=True):
                if error is None:
                    self.spool.delivered(record_id)
                    delivered += 1
                elif permanent:
                    self.spool.rejected(record_id, error)
                    log.error(
                        "audit record refused by the server; kept in the spool", extra={"reason": error}
                    )
                else:
                    self.spool.failed(record_id, attempts, error, self.retry_max_seconds)
                    log.warning("audit delivery failed; will retry", extra={"reason": error})
        return delivered

    def _send_batch(
        self, target: str, records: list[tuple[str, dict[str, Any], int]], token: str | None
    ) -> list[tuple[str | None, bool]]:
        """PUT each record by its id inside one ``batch`` Bundle (entries succeed or fail alone);
        for each record: (error or None, whether the error is permanent)."""
        bundle = {
            "resourceType": "Bundle",
            "type": "batch",
            "entry": [
                {"resource": resource, "request": {"method": "PUT", "url": f"AuditEvent/{record_id}"}}
                for record_id, resource, _ in records
            ],
        }
        headers = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        try:
            response = self.session.post(
                target.rstrip("/"),
                data=json.dumps(bundle).encode(),
                headers=headers,
                timeout=self.timeout_seconds,
                allow_redirects=False,
            )
        except requests.RequestException as error:
            return [(f"{type(error).__name__} sending to {target}", False)] * len(records)
        if response.is_redirect:
            # A redirect is never followed: the records would go (with the token) elsewhere.
            return [(f"{target} answered a redirect, which is not followed", False)] * len(records)
        if response.status_code != 200:
            failure = (f"{target} answered {response.status_code}{_diagnostics(response)}", False)
            return [failure] * len(records)
        try:
            entries = response.json().get("entry") or []
        except ValueError:
            entries = []
        if len(entries) != len(records):
            return [(f"{target} answered a batch without one entry per record", False)] * len(records)
        return [_entry_outcome(target, entry) for entry in entries]


def _entry_outcome(target: str, entry: Any) -> tuple[str | None, bool]:
    status_text = str((entry.get("response") or {}).get("status", "")) if isinstance(entry, dict) else ""
    code = int(status_text[:3]) if status_text[:3].isdigit() else 0
    if code in (200, 201):
        return None, False
    outcome = (entry.get("response") or {}).get("outcome") if isinstance(entry, dict) else None
    detail = _detail(first_diagnostics(outcome))
    # A refusal of the record itself (4xx other than auth, conflict, throttling) will not change
    # on retry; anything else may.
    permanent = 400 <= code < 500 and code not in (401, 403, 408, 409, 429)
    return f"{target} answered {code or status_text}{detail}", permanent


def _diagnostics(response: requests.Response) -> str:
    try:
        outcome = response.json()
    except ValueError:
        return ""
    return _detail(first_diagnostics(outcome))


def _detail(diagnostics: str) -> str:
    """What a failure line adds of the server's own words: the diagnostics, cut short."""
    return f": {diagnostics}"[:300] if diagnostics else ""
