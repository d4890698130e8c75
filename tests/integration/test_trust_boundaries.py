"""The trust boundaries with real servers on loopback: redirects, audit diversion, key sets.

A second HTTP server stands for what an attacker controls (another origin); HAPI (real) holds the
data. Each test shows the service refusing to go there, and that nothing was lost on the way.
"""

from __future__ import annotations

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
from tests.http.conftest import hook_body
from tests.integration.proxy import RecordingProxy, Redirector

pytestmark = pytest.mark.integration


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Callable[..., Flask]]:
    """The service without client authentication (its own tests cover it), on plain http."""
    apps: list[Flask] = []

    def build(**overrides: Any) -> Flask:
        settings = {"data_dir": str(tmp_path), "auth_mode": "off", "allow_http_fhir": True, **overrides}
        app = create_app(settings, environ={})
        apps.append(app)
        return app

    yield build
    for app in apps:
        close_app(app)


@pytest.fixture
def attacker(demo_fhir: str) -> Iterator[RecordingProxy]:
    """Another origin that would serve real-looking data (HAPI's, forwarded) and logs each request."""
    proxy = RecordingProxy(demo_fhir)
    yield proxy
    proxy.close()


def post(app: Flask, body: dict[str, Any]) -> Any:
    return app.test_client().post(
        "/cds-services/ichis-prognosis", data=dumps(body), content_type="application/json"
    )


def test_a_call_back_redirected_to_another_origin_is_not_followed(
    service: Callable[..., Flask], attacker: RecordingProxy
) -> None:
    redirector = Redirector(target=attacker.base.removesuffix("/fhir"))
    try:
        app = service(fhir_allowed_hosts=[f"127.0.0.1:{redirector.port}"])
        body = hook_body("ichis-demo-2", prefetch=None, fhir_server=redirector.base, token="ehr-token")  # noqa: S106
        reply = post(app, body)
        assert reply.status_code == 412
        assert "redirected to another server" in reply.get_json()["issue"][0]["diagnostics"]
        assert redirector.seen  # the service asked the allowed server ...
        assert attacker.seen == []  # ... and never the one it pointed to
    finally:
        redirector.close()


def test_a_redirect_within_the_fhir_servers_own_origin_is_followed(
    service: Callable[..., Flask], demo_fhir: str
) -> None:
    moved = Redirector(target=None, upstream=demo_fhir, status=301)
    try:
        app = service(fhir_allowed_hosts=[f"127.0.0.1:{moved.port}"])
        body = hook_body("ichis-demo-2", prefetch=None, fhir_server=moved.base, token="ehr-token")  # noqa: S106
        reply = post(app, body)
        assert reply.status_code == 200, reply.get_data(as_text=True)
        assert reply.get_json()["cards"][0]["summary"].startswith("IChIS 2 of 2")
        assert any(path.startswith("/moved/fhir/Observation") for _, path in moved.seen)
    finally:
        moved.close()


def _deliver(app: Flask) -> tuple[int, list[str]]:
    """One delivery round now; what was delivered and what stays in the spool."""
    deliverer: AuditDeliverer = service_of(app).deliverer
    spool: AuditSpool = service_of(app).spool
    return deliverer.deliver_due(), spool.pending_ids()


def test_audit_to_the_ehr_goes_only_to_listed_servers_and_the_rest_stays_in_the_spool(
    service: Callable[..., Flask], attacker: RecordingProxy, demo_fhir: str
) -> None:
    """A caller that names its own fhirServer cannot divert, nor erase, its audit trail."""
    hapi_host = demo_fhir.split("//")[1].split("/", maxsplit=1)[0]
    app = service(audit_fhir_url="ehr", fhir_allowed_hosts=[hapi_host])
    diverted = hook_body("ichis-demo-2", fhir_server=attacker.base)
    assert post(app, diverted).status_code == 200  # prefetch was complete: no call-back needed
    delivered, pending = _deliver(app)
    assert (delivered, attacker.seen) == (0, [])
    assert len(pending) == 1  # kept for an operator, not lost
    listed = hook_body("ichis-demo-2", fhir_server=demo_fhir)
    assert post(app, listed).status_code == 200
    delivered, pending = _deliver(app)
    assert (delivered, len(pending), attacker.seen) == (1, 1, [])
    record = requests.get(f"{demo_fhir}/AuditEvent", params={"_count": "200"}, timeout=30).json()
    texts = dumps(record)
    assert listed["hookInstance"] in texts
    assert diverted["hookInstance"] not in texts


def test_audit_ehr_mode_without_an_allow_list_does_not_start(service: Callable[..., Flask]) -> None:
    from fhir_mappings.config import ConfigurationError

    with pytest.raises(ConfigurationError, match="fhir_allowed_hosts"):
        service(audit_fhir_url="ehr")


def test_an_audit_repository_that_redirects_is_not_followed_and_the_record_waits(
    service: Callable[..., Flask], attacker: RecordingProxy
) -> None:
    redirector = Redirector(target=attacker.base.removesuffix("/fhir"), status=307)
    try:
        app = service(audit_fhir_url=redirector.base, allow_http_audit=True)
        assert post(app, hook_body("ichis-demo-2")).status_code == 200
        delivered, pending = _deliver(app)
        assert (delivered, len(pending), attacker.seen) == (0, 1, [])
        assert redirector.seen == [("POST", "/fhir")]
    finally:
        redirector.close()


def test_an_http_audit_repository_needs_the_development_switch(service: Callable[..., Flask]) -> None:
    from fhir_mappings.config import ConfigurationError

    with pytest.raises(ConfigurationError, match="allow_http_audit"):
        service(audit_fhir_url="http://audit.example/fhir")
