"""Shared fixtures of the sandbox EHR's tests: the app, a real HAPI server, stand-ins, a browser."""

from __future__ import annotations

import base64
import hashlib
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
import requests
from flask import Flask
from flask.testing import FlaskClient

from sandbox.ehr import create_ehr_app
from sandbox.ehr.state import EXTENSION, EhrState
from tests.sandbox.standin import Served, StandIn, create_standin

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
TEST_BASE = "http://localhost"  # where Flask's test client sends requests
SMART_REDIRECT = "http://127.0.0.1:8000/smart/callback"  # the default ichis-smart client's
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


# --- the app through the test client ---------------------------------------------------------


@pytest.fixture(scope="session")
def ehr_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One data dir for the session: generating RSA keys for every test would cost seconds."""
    return tmp_path_factory.mktemp("ehr-data")


@pytest.fixture
def make_ehr(ehr_data_dir: Path) -> Callable[..., Flask]:
    """A factory of sandbox EHR apps, testing on, reachable at http://localhost (the test client's)."""

    def make(**settings: Any) -> Flask:
        base: dict[str, Any] = {
            "public_base_url": TEST_BASE,
            "data_dir": str(ehr_data_dir),
            "testing": True,
            "fhir_upstream": "http://127.0.0.1:9/fhir",  # nothing listens there: no FHIR unless asked
        }
        return create_ehr_app({**base, **settings})

    return make


@pytest.fixture
def ehr(make_ehr: Callable[..., Flask]) -> Flask:
    return make_ehr()


@pytest.fixture
def client(ehr: Flask) -> FlaskClient:
    return ehr.test_client()


def state_of(app: Flask) -> EhrState:
    state: EhrState = app.extensions[EXTENSION]
    return state


def pkce_pair() -> tuple[str, str]:
    """An RFC 7636 code verifier and its S256 challenge."""
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode()).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def mint_launch(client: FlaskClient, patient: str = "pat-1", **context: Any) -> str:
    response = client.post("/_testing/launch", json={"patient": patient, **context})
    assert response.status_code == 200, response.text
    launch: str = response.json["launch"]
    return launch


def authorize_query(**overrides: Any) -> str:
    """An EHR-launch authorization request of the default ichis-smart client; None drops a field."""
    params: dict[str, Any] = {
        "response_type": "code",
        "client_id": "ichis-smart",
        "redirect_uri": SMART_REDIRECT,
        "scope": "launch openid fhirUser patient/Patient.rs patient/Observation.rs",
        "state": "state-7f3a",
        "aud": f"{TEST_BASE}/fhir",
        "code_challenge_method": "S256",
    }
    params.update(overrides)
    return urlencode({k: v for k, v in params.items() if v is not None})


def redirect_params(location: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


# --- real servers ----------------------------------------------------------------------------

LOINC = "http://loinc.org"


def _observation(oid: str, patient: str, code: str, name: str, *, value: float, when: str) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": oid,
        "status": "final",
        "code": {"coding": [{"system": LOINC, "code": code, "display": name}], "text": name},
        "subject": {"reference": f"Patient/{patient}"},
        "effectiveDateTime": when,
        "valueQuantity": {
            "value": value,
            "unit": "10*3/uL",
            "system": "http://unitsofmeasure.org",
            "code": "10*3/uL",
        },
    }


def sandbox_records() -> list[dict[str, Any]]:
    """Two patients (one with an encounter and a lab panel), the sandbox user, nothing else."""
    return [
        {"resourceType": "Practitioner", "id": "ichis-sandbox-clinician", "name": [{"family": "Clinician"}]},
        {
            "resourceType": "Patient",
            "id": "ehr-test-a",
            "name": [{"family": "Alpha", "given": ["Ann"]}],
            "gender": "female",
            "birthDate": "1950-02-03",
        },
        {
            "resourceType": "Patient",
            "id": "ehr-test-b",
            "name": [{"family": "Beta", "given": ["Bob"]}],
            "gender": "male",
            "birthDate": "1961-07-08",
        },
        {
            "resourceType": "Encounter",
            "id": "ehr-test-a-visit",
            "status": "in-progress",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
            "subject": {"reference": "Patient/ehr-test-a"},
            "period": {"start": "2026-01-10T08:00:00+09:00"},
        },
        _observation(
            "ehr-a-neut-old",
            "ehr-test-a",
            "751-8",
            "Neutrophils",
            value=6.1,
            when="2025-12-01T09:00:00+09:00",
        ),
        _observation(
            "ehr-a-neut", "ehr-test-a", "751-8", "Neutrophils", value=9.5, when="2026-01-09T09:00:00+09:00"
        ),
        _observation(
            "ehr-a-ig",
            "ehr-test-a",
            "53115-2",
            "Immature granulocytes",
            value=0.09,
            when="2026-01-09T09:00:00+09:00",
        ),
        {
            "resourceType": "Observation",
            "id": "ehr-a-panel",
            "status": "final",
            "code": {"text": "Differential panel"},
            "subject": {"reference": "Patient/ehr-test-a"},
            "effectiveDateTime": "2025-11-01T09:00:00+09:00",
            "component": [
                {
                    "code": {"coding": [{"system": LOINC, "code": "731-0"}], "text": "Lymphocytes"},
                    "valueQuantity": {"value": 1.6, "unit": "10*3/uL"},
                }
            ],
        },
        _observation(
            "ehr-b-neut", "ehr-test-b", "751-8", "Neutrophils", value=4.2, when="2026-01-05T09:00:00+09:00"
        ),
        {
            "resourceType": "Condition",
            "id": "ehr-a-nsclc",
            "subject": {"reference": "Patient/ehr-test-a"},
            "code": {"coding": [{"system": "http://snomed.info/sct", "code": "254637007"}]},
        },
    ]


@pytest.fixture(scope="session")
def hapi(hapi_url: str) -> str:
    """The session's real HAPI FHIR server (tests/conftest.py) with ``sandbox_records()`` loaded."""
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"resource": r, "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"}}
            for r in sandbox_records()
        ],
    }
    loaded = requests.post(
        hapi_url, json=bundle, headers={"Content-Type": "application/fhir+json"}, timeout=60
    )
    assert loaded.status_code == 200, loaded.text
    return hapi_url


@pytest.fixture
def served_ehr(ehr_data_dir: Path) -> Iterator[Callable[..., tuple[Flask, str]]]:
    """Sandbox EHRs on real ports (public base URL = where they listen); stopped after the test."""
    servers: list[Served] = []

    def serve(**settings: Any) -> tuple[Flask, str]:
        served = Served()
        servers.append(served)
        app = create_ehr_app(
            {"public_base_url": served.url, "data_dir": str(ehr_data_dir), "testing": True, **settings}
        )
        served.mount(app)
        return app, served.url

    yield serve
    for served in servers:
        served.stop()


@pytest.fixture
def standin() -> Iterator[tuple[StandIn, Served]]:
    """The stand-in CDS service and SMART app on a real port (see standin.py for why)."""
    record = StandIn()
    served = Served()
    record.base_url = served.url
    served.mount(create_standin(record))
    yield record, served
    served.stop()


@pytest.fixture
def stack(
    hapi: str, standin: tuple[StandIn, Served], served_ehr: Callable[..., tuple[Flask, str]]
) -> Callable[..., tuple[Flask, str, StandIn]]:
    """HAPI, the stand-in service and app, and a sandbox EHR wired to both."""

    def make(**settings: Any) -> tuple[Flask, str, StandIn]:
        record, _ = standin
        app_client = {
            "client_id": "standin-app",
            "type": "confidential",
            "secret": record.app_client_secret,
            "redirect_uris": [f"{record.base_url}/smart/callback"],
            "scopes": ["launch", "openid", "fhirUser", "patient/*.rs"],
        }
        app, url = served_ehr(
            fhir_upstream=hapi, cds_base_url=record.base_url, clients=[app_client], **settings
        )
        record.ehr_fhir_base = f"{url}/fhir"
        return app, url, record

    return make


# --- the browser ------------------------------------------------------------------------------


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    setattr(item, f"report_{report.when}", report)  # the page fixture screenshots failed tests
    return report


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Chromium for one test module: Playwright's event loop must not outlive the browser tests."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Any, request: pytest.FixtureRequest) -> Iterator[Any]:
    """A fresh browser page at 1400 x 1000; a screenshot lands in test-artifacts/ if the test fails."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    context.set_default_timeout(15000)
    opened = context.new_page()
    yield opened
    report = getattr(request.node, "report_call", None)
    if report is not None and report.failed:
        ARTIFACTS.mkdir(exist_ok=True)
        opened.screenshot(path=str(ARTIFACTS / f"sandbox-{request.node.name}.png"), full_page=True)
    context.close()
