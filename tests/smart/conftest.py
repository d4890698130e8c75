"""HTTP tests of the SMART app through the Flask test client, against real parts.

The combined app (the CDS service with the SMART app installed) runs in the test client at
http://localhost. The sandbox EHR runs on a real port, because the app calls its discovery and
token endpoints over HTTP; behind the EHR's FHIR endpoint is the session's real HAPI server, into
which each test puts the demo patients it reads (dated relative to now, as the demo does).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
import requests
from flask import Flask
from flask.testing import FlaskClient

from cds_service import close_app, create_app
from cds_service.audit import AuditSpool
from cds_service.wiring import service_of
from fhir_mappings.bundles import dumps
from sandbox import demo_data
from sandbox.ehr import create_ehr_app
from sandbox.ehr.state import EXTENSION, EhrState
from sandbox.ehr.store import Store
from smart_app.runtime import SmartRuntime, smart_runtime
from smart_app.session import BrowserSession
from tests.sandbox.standin import Served

# The demo records are dated relative to the run, as the demo and the other suites load them.
NOW = datetime.now(UTC).replace(microsecond=0)
APP_BASE = "http://localhost"  # where Flask's test client sends requests
SECRET = "ichis-smart-sandbox-secret"  # noqa: S105 - the sandbox's documented default secret


@dataclass
class HapiFhir:
    """The demo patients a test needs, written to the real HAPI server with PUT (fixed ids)."""

    base_url: str
    resources: list[dict[str, Any]] = field(default_factory=list)
    _added: list[str] = field(default_factory=list)

    def add_patient(self, patient_id: str, now: datetime = NOW) -> None:
        self.add(list(demo_data.resources(demo_data.BY_ID[patient_id], now)))

    def add(self, resources: list[dict[str, Any]]) -> None:
        bundle = {
            "resourceType": "Bundle",
            "type": "transaction",
            "entry": [
                {"resource": r, "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"}}
                for r in resources
            ],
        }
        reply = requests.post(
            self.base_url, data=dumps(bundle), headers={"Content-Type": "application/fhir+json"}, timeout=60
        )
        reply.raise_for_status()
        self.resources += resources
        self._added += [
            f"{r['resourceType']}/{r['id']}" for r in resources if not r["id"].startswith("ichis-demo")
        ]

    def remove_extras(self) -> None:
        """Delete what a test added beyond the demo records, so no other test sees it."""
        for reference in self._added:
            requests.delete(f"{self.base_url}/{reference}", timeout=30)


@dataclass
class SmartEnv:
    """The combined app in the test client, the sandbox EHR on a port, the stub FHIR server."""

    app: Flask
    client: FlaskClient
    ehr: Flask
    ehr_url: str
    fhir: HapiFhir

    @property
    def iss(self) -> str:
        return f"{self.ehr_url}/fhir"

    @property
    def runtime(self) -> SmartRuntime:
        runtime = smart_runtime(self.app)
        return runtime

    @property
    def ehr_store(self) -> Store:
        """The sandbox authorization server's tokens (to revoke one, or move its clock)."""
        state: EhrState = self.ehr.extensions[EXTENSION]
        return state.store

    def browser_session(self) -> BrowserSession:
        """The server-side session the test client's cookie names."""
        cookie = self.client.get_cookie(self.runtime.settings.cookie_name, path="/smart")
        session = self.runtime.codec.loads(cookie.value if cookie is not None else None)
        assert session is not None
        return session

    def stored_launch(self, page: Any) -> dict[str, Any]:
        """What the app keeps (sealed) for the launch whose page this is: tokens included."""
        key = page.request.path.split("/smart/app/", 1)[1].split("/")[0]
        launch = self.runtime.store.launch(self.browser_session(), key)
        assert launch is not None
        return launch

    def tokens_used(self) -> set[str]:
        """The access tokens the app sent to the EHR's FHIR endpoint so far."""
        state: EhrState = self.ehr.extensions[EXTENSION]
        return {entry.token for entry in state.fhir_log() if entry.client_id == "ichis-smart" and entry.token}

    def later(self, seconds: float) -> None:
        """Move the app's clock (its session store's) ahead: tokens look older, nothing sleeps."""
        self.runtime.store.clock = lambda: time.time() + seconds

    def spooled(self) -> list[dict[str, Any]]:
        """The audit records waiting in the service's spool, oldest first."""
        spool: AuditSpool = service_of(self.app).spool
        return [resource for _, resource, _, _ in spool.claim(1000, 60, with_default_target=True)]

    def fhir_queries(self) -> list[str]:
        """What the app read through the EHR's FHIR endpoint (the proxy's test log)."""
        state: EhrState = self.ehr.extensions[EXTENSION]
        return [f"{entry.path.rsplit('/fhir/', 1)[-1]}?{entry.query}" for entry in state.fhir_log()]

    def mint_launch(self, patient: str, **context: Any) -> str:
        """A launch id as the EHR mints one for a card's SMART link (sandbox /_testing/launch)."""
        answer = requests.post(
            f"{self.ehr_url}/_testing/launch", json={"patient": patient, **context}, timeout=10
        )
        assert answer.status_code == 200, answer.text
        launch: str = answer.json()["launch"]
        return launch

    def start(self, patient: str, **context: Any) -> Any:
        """``/smart/launch`` as the EHR opens it: the app's redirect to the authorization endpoint."""
        launch = self.mint_launch(patient, **context)
        return self.client.get("/smart/launch?" + urlencode({"iss": self.iss, "launch": launch}))

    def authorize(self, location: str) -> str:
        """Follow the app's redirect to the EHR, which approves at once; the callback URL it sends back."""
        answer = requests.get(location, allow_redirects=False, timeout=10)
        assert answer.status_code in (302, 303), answer.text
        return answer.headers["Location"]

    def callback(self, location: str) -> Any:
        parts = urlsplit(location)
        return self.client.get(f"{parts.path}?{parts.query}")

    def open(self, patient: str, **context: Any) -> Any:
        """The whole launch: launch, authorize, callback, and the details page it redirects to."""
        started = self.start(patient, **context)
        assert started.status_code == 302, started.text
        done = self.callback(self.authorize(started.headers["Location"]))
        assert done.status_code == 303, done.text
        return self.client.get(done.headers["Location"])


def query_of(location: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


def app_context(patient: str, at: datetime = NOW, order: str = "MedicationRequest/draft-1") -> str:
    """The appContext the CDS card puts on its SMART link (cds_service/cards.py)."""
    return json.dumps(
        {
            "hookInstance": "hook-1",
            "patientId": patient,
            "orders": [order],
            "order": order,
            "at": at.isoformat(),
        }
    )


@pytest.fixture(scope="session")
def smart_ehr_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One EHR data dir for the session: its RSA keys take a moment to generate."""
    return tmp_path_factory.mktemp("smart-ehr")


@pytest.fixture
def smart_env(smart_ehr_data_dir: Path, tmp_path: Path, hapi_url: str) -> Iterator[Callable[..., SmartEnv]]:
    """Builds a SmartEnv; keyword groups ``smart``, ``ehr`` and ``service`` override settings."""
    served: list[Served] = []
    apps: list[Flask] = []
    stores: list[HapiFhir] = []

    def build(
        *,
        smart: dict[str, Any] | None = None,
        ehr: dict[str, Any] | None = None,
        service: dict[str, Any] | None = None,
    ) -> SmartEnv:
        fhir = HapiFhir(hapi_url)
        stores.append(fhir)
        ehr_server = Served()
        served.append(ehr_server)
        ehr_app = create_ehr_app(
            {
                "public_base_url": ehr_server.url,
                "fhir_upstream": hapi_url,
                "cds_base_url": APP_BASE,
                "data_dir": str(smart_ehr_data_dir),
                "testing": True,
                **(ehr or {}),
            }
        )
        ehr_server.mount(ehr_app)
        app = create_app(
            {
                "data_dir": str(tmp_path / "service"),
                "public_base_url": APP_BASE,
                "auth_mode": "off",
                "allow_http_fhir": True,
                **(service or {}),
            },
            environ={},
            smart={"client_secret": SECRET, "trusted_iss": [f"{ehr_server.url}/fhir"], **(smart or {})},
        )
        apps.append(app)
        return SmartEnv(app, app.test_client(), ehr_app, ehr_server.url, fhir)

    yield build
    for server in served:
        server.stop()
    for store in stores:
        store.remove_extras()
    for app in apps:
        close_app(app)
