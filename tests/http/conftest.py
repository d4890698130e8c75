"""HTTP tests of the CDS service through the Flask test client, with prefetch built from the
demo patients (the same records the integration tests load into HAPI)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from cds_service import close_app, create_app
from fhir_mappings.bundles import dumps, loads
from sandbox import demo_data

NOW = datetime(2026, 11, 29, 10, 0, tzinfo=UTC)
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"


def searchset(resources: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": len(resources),
        "entry": [
            {
                "fullUrl": f"http://ehr.example/fhir/{r['resourceType']}/{r['id']}",
                "resource": r,
                "search": {"mode": "match"},
            }
            for r in resources
        ],
    }


def prefetch_for(patient_id: str, now: datetime = NOW) -> dict[str, Any]:
    """The prefetch a client would send for a demo patient (round-tripped through JSON text)."""
    records = list(demo_data.resources(demo_data.BY_ID[patient_id], now))
    by_type: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        by_type.setdefault(record["resourceType"], []).append(record)
    prefetch = {
        "labs": searchset(by_type.get("Observation", [])),
        "conditions": searchset(by_type.get("Condition", [])),
    }
    parsed: dict[str, Any] = loads(dumps(prefetch))
    return parsed


def medication_request(
    oid: str, code: str = "1547545", display: str = "pembrolizumab", patient: str = "ichis-demo-2"
) -> dict[str, Any]:
    return {
        "resourceType": "MedicationRequest",
        "id": oid,
        "status": "draft",
        "intent": "order",
        "medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": code, "display": display}]},
        "subject": {"reference": f"Patient/{patient}"},
    }


CARBOPLATIN = ("40048", "carboplatin")


def hook_body(
    patient_id: str = "ichis-demo-2",
    *,
    hook: str = "order-select",
    orders: list[dict[str, Any]] | None = None,
    selections: list[str] | None = None,
    prefetch: dict[str, Any] | str | None = "full",
    fhir_server: str | None = None,
    token: str | None = None,
) -> dict[str, Any]:
    orders = orders if orders is not None else [medication_request("draft-1", patient=patient_id)]
    context: dict[str, Any] = {
        "userId": "Practitioner/dr-1",
        "patientId": patient_id,
        "draftOrders": {
            "resourceType": "Bundle",
            "type": "collection",
            "entry": [{"resource": o} for o in orders],
        },
    }
    if hook == "order-select":
        context["selections"] = (
            selections
            if selections is not None
            else [f"MedicationRequest/{orders[0]['id']}"]
            if orders
            else []
        )
    body: dict[str, Any] = {"hook": hook, "hookInstance": str(uuid.uuid4()), "context": context}
    if prefetch == "full":
        body["prefetch"] = prefetch_for(patient_id)
    elif prefetch is not None:
        body["prefetch"] = prefetch
    if fhir_server:
        body["fhirServer"] = fhir_server
        if token:
            body["fhirAuthorization"] = {
                "access_token": token,
                "token_type": "Bearer",
                "expires_in": 300,
                "scope": "patient/Observation.rs",
                "subject": "ichis",
            }
    return body


@pytest.fixture
def make_app(tmp_path: Path) -> Iterator[Callable[..., Flask]]:
    """Builds apps on one data directory (as restarts of one service) and closes their sessions."""
    apps: list[Flask] = []

    def build(**overrides: Any) -> Flask:
        overrides.setdefault("data_dir", str(tmp_path / "var"))
        overrides.setdefault("public_base_url", "https://cds.example")
        overrides.setdefault("auth_mode", "off")  # the JWT rules have their own tests (test_auth.py)
        app = create_app(overrides, clock=lambda: NOW, environ={})
        apps.append(app)
        return app

    yield build
    for app in apps:
        close_app(app)


@pytest.fixture
def client(make_app: Callable[..., Flask]) -> FlaskClient:
    return make_app().test_client()


def post_hook(client: FlaskClient, body: dict[str, Any], service: str = "ichis-prognosis") -> Any:
    return client.post(f"/cds-services/{service}", data=dumps(body), content_type="application/json")
