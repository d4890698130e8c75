"""Server-side sessions: a signed cookie, sealed records, a state that works once, a kept secret."""

from __future__ import annotations

import stat
from pathlib import Path

from smart_app.session import BrowserSession, CookieCodec, SessionStore, session_secret


def test_a_cookie_round_trips_and_a_forged_or_old_one_is_no_session() -> None:
    """Only a cookie this app signed, within its maximum age, names a session."""
    codec = CookieCodec("s" * 40, max_age_seconds=60)
    session = BrowserSession.new()
    value = codec.dumps(session)
    assert codec.loads(value) == session
    assert codec.loads(value[:-2] + "xx") is None
    assert CookieCodec("t" * 40, max_age_seconds=60).loads(value) is None
    assert CookieCodec("s" * 40, max_age_seconds=-1).loads(value) is None
    assert codec.loads(None) is None


def test_records_are_sealed_with_the_browsers_key(tmp_path: Path) -> None:
    """Another session's key opens nothing, and the database holds no plain text."""
    store = SessionStore(tmp_path / "smart.sqlite")
    mine, theirs = BrowserSession.new(), BrowserSession.new()
    store.put_launch(mine, "k", {"access_token": "secret-token-value"}, expires_at=store.clock() + 60)
    assert store.launch(mine, "k") == {"access_token": "secret-token-value"}
    assert store.launch(theirs, "k") is None
    assert store.launch(BrowserSession(mine.id, theirs.key), "k") is None
    # The database and its write-ahead log: with kept connections the newest writes are in the log.
    stored = b"".join(path.read_bytes() for path in tmp_path.glob("smart.sqlite*"))
    assert b"secret-token-value" not in stored


def test_a_pending_state_is_taken_once_and_expires(tmp_path: Path) -> None:
    """take_pending removes the state; an old pending launch is gone."""
    now = [1000.0]
    store = SessionStore(tmp_path / "smart.sqlite", clock=lambda: now[0])
    session = BrowserSession.new()
    store.put_pending(session, "state-1", {"code_verifier": "v"})
    assert store.take_pending(session, "state-1") == {"code_verifier": "v"}
    assert store.take_pending(session, "state-1") is None
    store.put_pending(session, "state-2", {"code_verifier": "v"})
    now[0] += 3600
    assert store.take_pending(session, "state-2") is None


def test_the_generated_secret_is_kept_private_and_reused(tmp_path: Path) -> None:
    """Restarts and other workers sign with the same secret, readable by the service only."""
    first = session_secret("", tmp_path)
    assert session_secret("", tmp_path) == first
    assert len(first) >= 32
    assert stat.S_IMODE((tmp_path / "smart-session.key").stat().st_mode) == 0o600
    assert session_secret("configured-secret", tmp_path) == "configured-secret"
