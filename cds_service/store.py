"""Durable local records: the cards we issued and the feedback on them (SQLite, WAL).

Every gunicorn worker opens the same file; SQLite's locking makes the writes safe across
processes. Feedback is idempotent: the same item posted twice is stored once.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_SCHEMA = """
CREATE TABLE IF NOT EXISTS cards (
    card_uuid TEXT PRIMARY KEY,
    service_id TEXT NOT NULL,
    hook TEXT NOT NULL,
    hook_instance TEXT NOT NULL,
    patient_id TEXT NOT NULL,
    summary TEXT NOT NULL,
    score_json TEXT NOT NULL,
    issued_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS feedback (
    service_id TEXT NOT NULL,
    card_uuid TEXT NOT NULL,
    outcome TEXT NOT NULL,
    outcome_timestamp TEXT NOT NULL,
    accepted_suggestions TEXT NOT NULL,
    override_reason TEXT,
    hook_instance TEXT,
    received_at TEXT NOT NULL,
    PRIMARY KEY (service_id, card_uuid, outcome, outcome_timestamp)
);
"""


@dataclass(frozen=True, slots=True)
class FeedbackItem:
    card: str
    outcome: str
    outcome_timestamp: str
    accepted_suggestions: tuple[str, ...]
    override_reason: Mapping[str, Any] | None


class Store:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(_SCHEMA)

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=10, isolation_level=None)
        try:
            db.execute("PRAGMA busy_timeout=10000")
            yield db
        finally:
            db.close()

    def record_card(
        self,
        *,
        card_uuid: str,
        service_id: str,
        hook: str,
        hook_instance: str,
        patient_id: str,
        summary: str,
        score: Mapping[str, Any],
        issued_at: str,
    ) -> None:
        """Remember an issued card (a retried hookInstance re-issues the same uuid: kept once)."""
        with self._connect() as db:
            db.execute(
                "INSERT OR IGNORE INTO cards VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    card_uuid,
                    service_id,
                    hook,
                    hook_instance,
                    patient_id,
                    summary,
                    json.dumps(score),
                    issued_at,
                ),
            )

    def card(self, card_uuid: str) -> dict[str, Any] | None:
        with self._connect() as db:
            db.row_factory = sqlite3.Row
            row = db.execute("SELECT * FROM cards WHERE card_uuid = ?", (card_uuid,)).fetchone()
        return dict(row) if row else None

    def record_feedback(
        self, service_id: str, items: Sequence[FeedbackItem], received_at: str
    ) -> tuple[int, int]:
        """Store a batch in one transaction; returns (newly stored, duplicates)."""
        stored = 0
        with self._connect() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                for item in items:
                    row = db.execute(
                        "SELECT hook_instance FROM cards WHERE card_uuid = ?", (item.card,)
                    ).fetchone()
                    cursor = db.execute(
                        "INSERT OR IGNORE INTO feedback VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        (
                            service_id,
                            item.card,
                            item.outcome,
                            item.outcome_timestamp,
                            json.dumps(list(item.accepted_suggestions)),
                            json.dumps(item.override_reason, default=str)
                            if item.override_reason is not None
                            else None,
                            row[0] if row else None,
                            received_at,
                        ),
                    )
                    stored += cursor.rowcount
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        return stored, len(items) - stored

    def feedback(self, card_uuid: str) -> list[dict[str, Any]]:
        with self._connect() as db:
            db.row_factory = sqlite3.Row
            rows = db.execute(
                "SELECT * FROM feedback WHERE card_uuid = ? ORDER BY outcome_timestamp", (card_uuid,)
            ).fetchall()
        return [dict(r) for r in rows]
