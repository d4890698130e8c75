"""Durable local records: the cards we issued and the feedback on them (SQLite, WAL).

Every gunicorn worker opens the same file; SQLite's locking makes the writes safe across
processes. Feedback is idempotent: the same item posted twice is stored once.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from plumbing.sqlite import Connections

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
        self._connections = Connections(path)
        self._connect().executescript(_SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        return self._connections.get()

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
        self._connect().execute(
            "INSERT OR IGNORE INTO cards VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                card_uuid,
                service_id,
                hook,
                hook_instance,
                patient_id,
                summary,
                json.dumps(score, default=str),
                issued_at,
            ),
        )

    def card(self, card_uuid: str) -> dict[str, Any] | None:
        cursor = self._connect().execute("SELECT * FROM cards WHERE card_uuid = ?", (card_uuid,))
        row = cursor.fetchone()
        return dict(zip([c[0] for c in cursor.description], row, strict=True)) if row else None

    def record_feedback(
        self, service_id: str, items: Sequence[FeedbackItem], received_at: str
    ) -> tuple[int, int]:
        """Store a batch in one transaction; returns (newly stored, duplicates)."""
        stored = 0
        db = self._connect()
        db.execute("BEGIN IMMEDIATE")
        try:
            for item in items:
                row = db.execute(
                    "SELECT hook_instance FROM cards WHERE card_uuid = ?", (item.card,)
                ).fetchone()
                reason = (
                    json.dumps(item.override_reason, default=str)
                    if item.override_reason is not None
                    else None
                )
                cursor = db.execute(
                    "INSERT OR IGNORE INTO feedback VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        service_id,
                        item.card,
                        item.outcome,
                        item.outcome_timestamp,
                        json.dumps(list(item.accepted_suggestions)),
                        reason,
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
        cursor = self._connect().execute(
            "SELECT * FROM feedback WHERE card_uuid = ? ORDER BY outcome_timestamp", (card_uuid,)
        )
        names = [c[0] for c in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
