"""The audit spool's deliverer finds due records without keeping the request path's writes waiting."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from cds_service.audit import _DUE_ANYWHERE, _DUE_ELSEWHERE, AuditSpool


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def _record(n: int) -> dict[str, object]:
    return {"resourceType": "AuditEvent", "id": f"record-{n}"}


def test_the_search_for_due_records_reads_an_index_not_every_record(tmp_path: Path) -> None:
    spool = AuditSpool(tmp_path / "audit.sqlite")
    db = spool._connections.get()
    for query, index in ((_DUE_ANYWHERE, "spool_due"), (_DUE_ELSEWHERE, "spool_due_elsewhere")):
        plan = " ".join(str(row[3]) for row in db.execute("EXPLAIN QUERY PLAN " + query, (0, 0, 1)))
        assert f"USING INDEX {index}" in plan


def test_a_request_can_write_while_the_deliverer_searches(tmp_path: Path) -> None:
    path = tmp_path / "audit.sqlite"
    spool = AuditSpool(path)
    for n in range(3):
        spool.put(_record(n), "")
    written_during_search: list[bool] = []

    def at_each_statement(statement: str) -> None:
        if statement.startswith("SELECT id, resource"):
            # Another worker's request, which must not wait (timeout 0: locked means refused).
            other = sqlite3.connect(path, timeout=0, isolation_level=None)
            try:
                other.execute(
                    "INSERT INTO spool (id, resource, target, created, next_attempt) "
                    "VALUES ('meanwhile', '{}', '', 0, 0)"
                )
                written_during_search.append(True)
            except sqlite3.OperationalError:
                written_during_search.append(False)
            finally:
                other.close()

    spool._connections.get().set_trace_callback(at_each_statement)
    leased = spool.claim(10, 60, with_default_target=True)
    assert written_during_search == [True]
    # The search began after the other write: it finds that record too.
    assert {record_id for record_id, *_ in leased} == {"record-0", "record-1", "record-2", "meanwhile"}


def test_a_record_is_leased_to_one_process_at_a_time(tmp_path: Path) -> None:
    clock = Clock()
    first, second = AuditSpool(tmp_path / "audit.sqlite", clock), AuditSpool(tmp_path / "audit.sqlite", clock)
    for n in range(5):
        first.put(_record(n), "")
    taken = first.claim(3, 60, with_default_target=True)
    rest = second.claim(10, 60, with_default_target=True)
    assert [r[0] for r in taken] == ["record-0", "record-1", "record-2"]  # oldest first
    assert [r[0] for r in rest] == ["record-3", "record-4"]
    assert second.claim(10, 60, with_default_target=True) == []
    clock.now += 61  # the leases ran out: the records are due again
    assert len(second.claim(10, 60, with_default_target=True)) == 5


def test_without_an_audit_repository_only_records_for_a_calls_own_server_are_claimed(tmp_path: Path) -> None:
    spool = AuditSpool(tmp_path / "audit.sqlite")
    spool.put(_record(1), "")
    spool.put(_record(2), "https://ehr.example/fhir")
    assert [r[0] for r in spool.claim(10, 60, with_default_target=False)] == ["record-2"]


def test_records_waiting_for_a_retry_or_refused_for_good_are_not_claimed(tmp_path: Path) -> None:
    clock = Clock()
    spool = AuditSpool(tmp_path / "audit.sqlite", clock)
    spool.put(_record(1), "")
    spool.put(_record(2), "")
    spool.failed("record-1", 0, "answered 503", retry_max_seconds=300)
    spool.rejected("record-2", "answered 400")
    assert spool.claim(10, 60, with_default_target=True) == []
    clock.now += 301
    assert [r[0] for r in spool.claim(10, 60, with_default_target=True)] == ["record-1"]
