"""Server-side sessions: the browser holds a signed cookie with an id and a key, nothing else.

SMART App Launch 2.2 asks the app to tie ``state`` to the user's session and to keep tokens out of
cookies and pages. Here the cookie carries a random session id and a random key (signed with the
session secret, so it cannot be forged); the launch state, the PKCE verifier and the tokens are
kept in SQLite under ``data_dir``, **encrypted with that per-browser key** (Fernet). A copy of the
database (a backup, a stray file) therefore holds no usable token, and every gunicorn worker
shares the same sessions. State is plain JSON data that round-trips through the store, as
smart-on-fhir/client-py keeps it.
"""

from __future__ import annotations

import json
import os
import secrets
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet, InvalidToken
from itsdangerous import BadSignature, URLSafeTimedSerializer

from plumbing.sqlite import Connections

_SCHEMA = """
CREATE TABLE IF NOT EXISTS pending (
    session_id TEXT NOT NULL,
    state TEXT NOT NULL,
    expires_at REAL NOT NULL,
    payload BLOB NOT NULL,
    PRIMARY KEY (session_id, state)
);
CREATE TABLE IF NOT EXISTS launches (
    session_id TEXT NOT NULL,
    launch_key TEXT NOT NULL,
    expires_at REAL NOT NULL,
    payload BLOB NOT NULL,
    PRIMARY KEY (session_id, launch_key)
);
"""

#: How long an authorization may take, from the launch to the callback: the user may be asked
#: to sign in or consent at the EHR; the code itself then lives a minute at most.
PENDING_SECONDS = 600


@dataclass(frozen=True, slots=True)
class BrowserSession:
    """What the cookie carries: which server-side session, and the key its records are sealed with."""

    id: str
    key: str

    @classmethod
    def new(cls) -> BrowserSession:
        return cls(secrets.token_urlsafe(24), Fernet.generate_key().decode())

    def seal(self, payload: dict[str, Any]) -> bytes:
        return Fernet(self.key.encode()).encrypt(json.dumps(payload).encode())

    def open(self, sealed: bytes) -> dict[str, Any] | None:
        try:
            data: dict[str, Any] = json.loads(Fernet(self.key.encode()).decrypt(sealed))
        except (InvalidToken, ValueError):
            return None
        return data


class CookieCodec:
    """Signs and checks the cookie value (itsdangerous, with a timestamp for the maximum age)."""

    def __init__(self, secret: str, max_age_seconds: int) -> None:
        self._serializer = URLSafeTimedSerializer(secret, salt="ichis-smart-session")
        self.max_age_seconds = max_age_seconds

    def dumps(self, session: BrowserSession) -> str:
        return self._serializer.dumps({"sid": session.id, "key": session.key})

    def loads(self, value: str | None) -> BrowserSession | None:
        """The session of a cookie, or None when it is absent, forged or too old."""
        if not value:
            return None
        try:
            data = self._serializer.loads(value, max_age=self.max_age_seconds)
        except BadSignature:  # SignatureExpired is a BadSignature too
            return None
        if (
            not isinstance(data, dict)
            or not isinstance(data.get("sid"), str)
            or not isinstance(data.get("key"), str)
        ):
            return None
        return BrowserSession(data["sid"], data["key"])


def session_secret(configured: str, data_dir: Path) -> str:
    """The configured secret, or one generated once and kept in ``{data_dir}/smart-session.key``.

    Created with O_EXCL so that two processes starting together agree on one secret.
    """
    if configured:
        return configured
    path = data_dir / "smart-session.key"
    data_dir.mkdir(parents=True, exist_ok=True)
    try:
        handle = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        secret = path.read_text("ascii").strip()
        if len(secret) >= 32:
            return secret
        # An empty file (a crash mid-write): replace it rather than sign with a short key.
        path.unlink()
        return session_secret(configured, data_dir)
    with os.fdopen(handle, "w", encoding="ascii") as out:
        secret = secrets.token_urlsafe(48)
        out.write(secret)
    return secret


class SessionStore:
    """Pending authorizations (by ``state``) and completed launches (by a random key), per session."""

    def __init__(self, path: Path, clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self.clock = clock
        self._connections = Connections(path, schema=_SCHEMA)

    def _purge(self, db: sqlite3.Connection) -> None:
        now = self.clock()
        db.execute("DELETE FROM pending WHERE expires_at < ?", (now,))
        db.execute("DELETE FROM launches WHERE expires_at < ?", (now,))

    def put_pending(self, session: BrowserSession, state: str, payload: dict[str, Any]) -> None:
        db = self._connections.get()
        self._purge(db)
        db.execute(
            "INSERT OR REPLACE INTO pending VALUES (?, ?, ?, ?)",
            (session.id, state, self.clock() + PENDING_SECONDS, session.seal(payload)),
        )

    def take_pending(self, session: BrowserSession, state: str) -> dict[str, Any] | None:
        """The pending authorization of ``state`` in this session, removed: a state works once."""
        with self._connections.transaction() as db:
            row = db.execute(
                "SELECT payload, expires_at FROM pending WHERE session_id = ? AND state = ?",
                (session.id, state),
            ).fetchone()
            db.execute("DELETE FROM pending WHERE session_id = ? AND state = ?", (session.id, state))
        if row is None or row[1] < self.clock():
            return None
        return session.open(row[0])

    def put_launch(
        self, session: BrowserSession, key: str, payload: dict[str, Any], expires_at: float
    ) -> None:
        db = self._connections.get()
        self._purge(db)
        db.execute(
            "INSERT OR REPLACE INTO launches VALUES (?, ?, ?, ?)",
            (session.id, key, expires_at, session.seal(payload)),
        )

    def launch(self, session: BrowserSession, key: str) -> dict[str, Any] | None:
        db = self._connections.get()
        row = db.execute(
            "SELECT payload, expires_at FROM launches WHERE session_id = ? AND launch_key = ?",
            (session.id, key),
        ).fetchone()
        if row is None or row[1] < self.clock():
            return None
        return session.open(row[0])

    def replace_launch(self, session: BrowserSession, key: str, payload: dict[str, Any]) -> bool:
        """Store a launch's renewed tokens, keeping when it ends; False when the launch is gone."""
        db = self._connections.get()
        changed = db.execute(
            "UPDATE launches SET payload = ? WHERE session_id = ? AND launch_key = ? AND expires_at >= ?",
            (session.seal(payload), session.id, key, self.clock()),
        ).rowcount
        return bool(changed)
