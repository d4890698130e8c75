"""Write-ahead-log checkpoints run in a background thread, never inside a request's commit."""

from __future__ import annotations

import threading
from pathlib import Path

from plumbing.sqlite import BACKSTOP_PAGES, Checkpointer, Connections


def _log_pages(path: Path) -> int:
    """Pages in the write-ahead log, read from the file's size (a 32-byte header, then frames of
    a 24-byte header and a 4 KiB page): asking SQLite could checkpoint."""
    size = path.with_name(path.name + "-wal").stat().st_size
    return (size - 32) // (24 + 4096)


def _store(tmp_path: Path) -> Connections:
    connections = Connections(tmp_path / "store.sqlite")
    connections.get().execute("CREATE TABLE IF NOT EXISTS rows (n INTEGER)")
    return connections


def test_a_commit_on_the_request_path_never_checkpoints_below_the_backstop(tmp_path: Path) -> None:
    connections = _store(tmp_path)
    db = connections.get()
    assert db.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == BACKSTOP_PAGES
    # 1,500 commits write 1,500 pages of log: SQLite's default (1,000) would have checkpointed
    # inside one of them and started the log again.
    for n in range(1_500):
        db.execute("INSERT INTO rows VALUES (?)", (n,))
    assert _log_pages(connections.path) >= 1_500


def test_the_checkpointer_copies_the_whole_log_into_the_database(tmp_path: Path) -> None:
    connections = _store(tmp_path)
    for n in range(200):
        connections.get().execute("INSERT INTO rows VALUES (?)", (n,))
    checkpointer = Checkpointer(interval=3600)
    checkpointer.watch(connections)
    checkpointer.run_once()
    busy, logged, copied = connections.checkpoint()
    assert busy == 0
    assert logged == copied  # nothing left to copy: the checkpointer did it
    assert logged >= 200
    checkpointer.stop()


def test_each_process_checkpoints_what_it_opened_in_a_thread_of_its_own(tmp_path: Path) -> None:
    _store(tmp_path)
    assert any(thread.name == "ichis-sqlite-checkpoint" for thread in threading.enumerate())


def test_a_store_whose_folder_is_gone_is_skipped_not_created_again(tmp_path: Path) -> None:
    folder = tmp_path / "gone"
    connections = Connections(folder / "store.sqlite")
    connections.get().execute("CREATE TABLE IF NOT EXISTS rows (n INTEGER)")
    connections.close()
    for name in ("store.sqlite", "store.sqlite-wal", "store.sqlite-shm"):
        (folder / name).unlink(missing_ok=True)
    checkpointer = Checkpointer(interval=3600)
    checkpointer.watch(connections)
    checkpointer.run_once()
    assert not (folder / "store.sqlite").exists()
    checkpointer.stop()
