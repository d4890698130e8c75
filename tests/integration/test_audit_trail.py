"""The audit trail in HAPI: searchable records, delivery through an outage and across a restart."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from flask import Flask

from cds_service import close_app, create_app
from cds_service.audit import AuditDeliverer, AuditSpool
from cds_service.wiring import service_of
from fhir_mappings.bundles import dumps
from tests.http.conftest import hook_body, prefetch_for
from tests.http.test_auth import ISS, JWKS, token
from tests.integration.proxy import RecordingProxy
from tests.smart.conftest import SmartEnv, smart_ehr_data_dir, smart_env
from tests.smart.conftest import app_context as smart_app_context

pytestmark = pytest.mark.integration
BASE = "https://cds.example"
__all__ = ["smart_ehr_data_dir", "smart_env"]  # the SMART app's fixtures, for its outage test


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Callable[..., Flask]]:
    apps: list[Flask] = []

    def build(**overrides: Any) -> Flask:
        settings = {
            "data_dir": str(tmp_path),
            "auth_mode": "jwt",
            "public_base_url": BASE,
            "trusted_issuers": [{"iss": ISS, "jwks": JWKS}],
            "allow_http_fhir": True,
            "allow_http_audit": True,  # HAPI on loopback speaks plain http
            "audit_retry_max_seconds": 0.2,
            "audit_poll_seconds": 0.05,
            **overrides,
        }
        app = create_app(settings, environ={})
        apps.append(app)
        return app

    yield build
    for app in apps:
        close_app(app)


def call(app: Flask, body: dict[str, Any], service: str = "ichis-prognosis") -> Any:
    return app.test_client().post(
        f"/cds-services/{service}",
        data=dumps(body),
        content_type="application/json",
        headers={"Authorization": f"Bearer {token(aud=f'{BASE}/cds-services/{service}')}"},
    )


def drain(app: Flask, timeout: float = 60.0) -> None:
    """Wait until the background deliverer has emptied the spool (bounded, then fail)."""
    spool: AuditSpool = service_of(app).spool
    deliverer: AuditDeliverer = service_of(app).deliverer
    deliverer.ensure_running()
    deliverer.wake()
    deadline = time.monotonic() + timeout
    while spool.stats().depth:
        if time.monotonic() > deadline:
            pytest.fail(f"spool not drained: {spool.stats()}")
        time.sleep(0.05)


def search(fhir: str, **params: str) -> list[dict[str, Any]]:
    reply = requests.get(f"{fhir}/AuditEvent", params={**params, "_count": "200"}, timeout=30)
    reply.raise_for_status()
    return [entry["resource"] for entry in reply.json().get("entry", [])]


def test_a_hook_call_gives_an_audit_event_an_auditor_can_find(
    service: Callable[..., Flask], demo_fhir: str
) -> None:
    app = service(audit_fhir_url=demo_fhir)
    body = hook_body("ichis-demo-2", prefetch=None, fhir_server=demo_fhir)
    body["context"]["userId"] = "Practitioner/auditor-test-user"
    response = call(app, body)
    assert response.status_code == 200
    card = response.get_json()["cards"][0]
    drain(app)
    hook_entity = f"urn:uuid:{body['hookInstance']}"
    by_user = search(demo_fhir, altid="Practitioner/auditor-test-user", _sort="-date")
    (record,) = [
        r
        for r in by_user
        if any(e.get("what", {}).get("identifier", {}).get("value") == hook_entity for e in r["entity"])
    ]
    assert record["outcome"] == "0"
    assert any(
        e.get("what", {}).get("identifier", {}).get("value") == f"urn:uuid:{card['uuid']}"
        for e in record["entity"]
    )
    observation = (
        f"{demo_fhir}/Observation/ichis-demo-2-0-neutrophils"  # its absolute URL on the EHR's server
    )
    assert any(e.get("what", {}).get("identifier", {}).get("value") == observation for e in record["entity"])
    assert any(e.get("query") for e in record["entity"])  # the FHIR queries the service made
    # Each auditor's search finds it (narrowed by _id: the server holds many other records).
    for criteria in (
        {"patient": "Patient/ichis-demo-2"},
        {"subtype": "urn:ichis:audit:score|ichis-2"},
        {"outcome": "0", "date": "ge2020-01-01"},
    ):
        assert [r["id"] for r in search(demo_fhir, _id=record["id"], **criteria)] == [record["id"]], criteria


def test_a_412_is_audited_with_a_failure_outcome(service: Callable[..., Flask], demo_fhir: str) -> None:
    app = service(audit_fhir_url=demo_fhir)
    body = hook_body("ichis-demo-0", prefetch=None)  # no prefetch and no fhirServer: 412
    assert call(app, body).status_code == 412
    drain(app)
    found = search(demo_fhir, outcome="4", patient="Patient/ichis-demo-0", _sort="-date")
    assert any(body["hookInstance"] in str(r["entity"]) and "412" in r["outcomeDesc"] for r in found)


def test_feedback_is_audited_and_linked_to_its_hook_instance(
    service: Callable[..., Flask], demo_fhir: str
) -> None:
    app = service(audit_fhir_url=demo_fhir)
    body = hook_body("ichis-demo-partial", prefetch=prefetch_for("ichis-demo-partial"))
    card = call(app, body).get_json()["cards"][0]
    url = f"{BASE}/cds-services/ichis-prognosis/feedback"
    feedback = {
        "feedback": [
            {
                "card": card["uuid"],
                "outcome": "overridden",
                "outcomeTimestamp": "2026-11-29T10:05:00Z",
                "overrideReason": {"reason": {"code": "not-relevant", "display": "Not relevant"}},
            }
        ]
    }
    reply = app.test_client().post(
        "/cds-services/ichis-prognosis/feedback",
        json=feedback,
        headers={"Authorization": f"Bearer {token(aud=url)}"},
    )
    assert reply.status_code == 200
    drain(app)
    found = search(demo_fhir, subtype="urn:ichis:audit:override-reason|not-relevant", _sort="-date")
    record = next(r for r in found if f"urn:uuid:{card['uuid']}" in str(r["entity"]))
    assert f"urn:uuid:{body['hookInstance']}" in str(record["entity"])


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _count_records(fhir: str, ids: list[str]) -> int:
    """How many of these records the server holds, each written once (version 1: never re-sent)."""
    reply = requests.get(f"{fhir}/AuditEvent", params={"_id": ",".join(ids), "_count": "500"}, timeout=30)
    records = [entry["resource"] for entry in reply.json().get("entry", [])]
    assert all(record["meta"]["versionId"] == "1" for record in records)
    return len(records)


N_DURING_OUTAGE = 12


def test_records_made_during_an_outage_are_all_delivered_exactly_once(
    service: Callable[..., Flask], demo_fhir: str
) -> None:
    """The audit server is down (nothing listens on its port) for N calls, then comes back."""
    port = _free_port()
    app = service(audit_fhir_url=f"http://127.0.0.1:{port}/fhir")
    spool: AuditSpool = service_of(app).spool
    for _ in range(N_DURING_OUTAGE):
        assert call(app, hook_body("ichis-demo-1")).status_code == 200
    deliverer: AuditDeliverer = service_of(app).deliverer
    assert deliverer.deliver_due() == 0  # the server is down: nothing delivered, nothing lost
    assert spool.stats().depth == N_DURING_OUTAGE
    assert spool.stats().failures > 0
    ids = spool.pending_ids()
    proxy = RecordingProxy(demo_fhir, port)  # the audit server comes back on its port
    try:
        drain(app)
    finally:
        proxy.close()
    assert spool.stats().depth == 0
    assert spool.stats().delivered == N_DURING_OUTAGE
    assert _count_records(demo_fhir, ids) == N_DURING_OUTAGE


def test_a_restarted_service_delivers_its_spool(service: Callable[..., Flask], demo_fhir: str) -> None:
    port = _free_port()
    first = service(audit_fhir_url=f"http://127.0.0.1:{port}/fhir")  # audit server unreachable
    for _ in range(5):
        assert call(first, hook_body("ichis-demo-0")).status_code == 200
    ids = service_of(first).spool.pending_ids()
    assert len(ids) == 5
    close_app(first)  # the service stops with a full spool
    restarted = service(audit_fhir_url=demo_fhir)  # same data directory, audit server reachable
    drain(restarted)
    assert _count_records(demo_fhir, ids) == 5


N_PAGE_VIEWS = 6


def test_page_views_made_during_an_outage_are_all_delivered_exactly_once(
    smart_env: Callable[..., SmartEnv], demo_fhir: str
) -> None:
    """The audit server is down while a clinician opens the SMART app and reloads its page: the
    launch and every page view wait in the spool and reach the server, once each, when it is back."""
    port = _free_port()
    env = smart_env(
        service={
            "audit_fhir_url": f"http://127.0.0.1:{port}/fhir",
            "allow_http_audit": True,  # HAPI on loopback speaks plain http
            "audit_retry_max_seconds": 0.2,
            "audit_poll_seconds": 0.05,
        }
    )
    page = env.open("ichis-demo-1", appContext=smart_app_context("ichis-demo-1"))
    assert page.status_code == 200
    for _ in range(N_PAGE_VIEWS - 1):
        assert env.client.get(page.request.path).status_code == 200
    spool: AuditSpool = service_of(env.app).spool
    deliverer: AuditDeliverer = service_of(env.app).deliverer
    assert deliverer.deliver_due() == 0  # the server is down: nothing delivered, nothing lost
    ids = spool.pending_ids()
    assert len(ids) == 1 + N_PAGE_VIEWS  # the launch, then each page view
    proxy = RecordingProxy(demo_fhir, port)  # the audit server comes back on its port
    try:
        drain(env.app)
    finally:
        proxy.close()
    assert _count_records(demo_fhir, ids) == 1 + N_PAGE_VIEWS
