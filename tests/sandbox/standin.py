"""A stand-in CDS service and SMART app, real HTTP servers of our own, for the sandbox EHR's tests.

They stand in for ``cds_service`` and ``smart_app`` only until the end-to-end tests run the EHR
against the real ones (issue 6, item 4): they answer with fixed, spec-valid CDS Hooks responses
and run a textbook SMART EHR launch, and they record what the EHR sent so tests can check it
against the CDS Hooks 2.0.1 and SMART App Launch 2.2 specs.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import requests
from flask import Flask, Response, jsonify, redirect, request
from markupsafe import escape
from werkzeug.serving import BaseWSGIServer, make_server
from werkzeug.wrappers import Response as WerkzeugResponse

CHECKPOINT_CODES = {"1547545", "1657750", "1597876", "1792776"}
SERVICE_ID = "standin-ichis"
OVERRIDE_REASONS = [
    {"system": "http://example.org/override-reason", "code": "aware", "display": "Already aware of the risk"},
    {
        "system": "http://example.org/override-reason",
        "code": "trial",
        "display": "Patient in a clinical trial",
    },
]
PREFETCH = {
    "patient": "Patient/{{context.patientId}}",
    "labs": "Observation?patient={{context.patientId}}&_sort=-date&_count=50",
    "encounter": "Encounter/{{context.encounterId}}",
}


class Served:
    """A WSGI app on a real port of 127.0.0.1, in a thread; the app can be mounted after the bind."""

    def __init__(self) -> None:
        self._server: BaseWSGIServer = make_server("127.0.0.1", 0, self._not_mounted, threaded=True)
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        # A short poll interval: shutdown() waits for it, once per served app per test.
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)

    @staticmethod
    def _not_mounted(environ: Any, start_response: Any) -> list[bytes]:
        start_response("503 Service Unavailable", [("Content-Type", "text/plain")])
        return [b"not mounted yet"]

    def mount(self, app: Any) -> Served:
        self._server.app = app
        if not self._thread.is_alive():
            self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@dataclass
class Recorded:
    method: str
    path: str
    authorization: str | None
    body: Any


@dataclass
class StandIn:
    """What the stand-in saw, and how it is told to answer."""

    base_url: str = ""
    ehr_fhir_base: str = ""  # the EHR's FHIR endpoint, known once the EHR is up
    calls: list[Recorded] = field(default_factory=list)
    hook_status: int = 200  # e.g. 412 to show the EHR's handling of a refusal
    fetched: list[dict[str, Any]] = field(default_factory=list)  # FHIR call-backs the service made
    cards: list[dict[str, Any]] = field(default_factory=list)  # every card it answered with
    app_tokens: list[dict[str, Any]] = field(default_factory=list)  # token responses the SMART app got
    app_client_secret: str = "standin-secret"  # noqa: S105 - a test client's secret

    def hook_calls(self) -> list[Recorded]:
        return [c for c in self.calls if c.method == "POST" and not c.path.endswith("/feedback")]

    def feedback_calls(self) -> list[Recorded]:
        return [c for c in self.calls if c.path.endswith("/feedback")]


def _orders(body: dict[str, Any]) -> list[dict[str, Any]]:
    entries = ((body.get("context") or {}).get("draftOrders") or {}).get("entry") or []
    return [e["resource"] for e in entries if isinstance(e, dict) and isinstance(e.get("resource"), dict)]


def _is_checkpoint(order: dict[str, Any]) -> bool:
    concept = order.get("medicationCodeableConcept") or {}
    codes = {c.get("code") for c in concept.get("coding") or []}
    return bool(codes & CHECKPOINT_CODES) or "keytruda" in str(concept.get("text", "")).lower()


def card_for(standin: StandIn, body: dict[str, Any], fetched_note: str) -> dict[str, Any]:
    """The fixed card: every part of a CDS Hooks 2.0.1 card, so the EHR's rendering is exercised."""
    patient = body["context"]["patientId"]
    return {
        "uuid": str(uuid.uuid4()),
        "summary": "Stand-in: checkpoint inhibitor ordered; baseline counts reviewed",
        "indicator": "warning",
        "detail": (
            "**Baseline** counts for the stand-in card.\n\n"
            "| part | value |\n|---|---|\n| neutrophils | 9.5 x10^3/uL |\n\n"
            f"{fetched_note}\n\n<script>alert('x')</script>"
        ),
        "source": {
            "label": "Stand-in service",
            "url": "https://example.org/standin",
            "topic": {"system": "http://example.org/topics", "code": "prognosis", "display": "Prognosis"},
        },
        "selectionBehavior": "at-most-one",
        "suggestions": [
            {
                "label": "Add a CBC with differential",
                "uuid": str(uuid.uuid4()),
                "actions": [
                    {
                        "type": "create",
                        "description": "Order a CBC with differential",
                        "resource": {
                            "resourceType": "ServiceRequest",
                            "status": "draft",
                            "intent": "order",
                            "subject": {"reference": f"Patient/{patient}"},
                        },
                    }
                ],
            }
        ],
        "overrideReasons": OVERRIDE_REASONS,
        "links": [
            {
                "label": "Open the stand-in app",
                "url": f"{standin.base_url}/smart/launch",
                "type": "smart",
                "appContext": json.dumps({"order": body["context"].get("selections", ["?"])[0]}),
            },
            {"label": "The paper", "url": "https://example.org/paper", "type": "absolute"},
        ],
    }


def create_standin(standin: StandIn) -> Flask:
    """The stand-in CDS service (``/cds-services``) and SMART app (``/smart``) as one Flask app."""
    app = Flask("standin")
    pending: dict[str, str] = {}  # state -> PKCE verifier

    @app.before_request
    def record() -> None:
        standin.calls.append(
            Recorded(
                request.method,
                request.path,
                request.headers.get("Authorization"),
                request.get_json(silent=True),
            )
        )

    @app.get("/cds-services")
    def discovery() -> Response:
        service = {
            "id": SERVICE_ID,
            "title": "Stand-in IChIS",
            "description": "A stand-in",
            "prefetch": PREFETCH,
        }
        return jsonify({"services": [{**service, "hook": "order-select"}, {**service, "hook": "order-sign"}]})

    @app.post(f"/cds-services/{SERVICE_ID}")
    def hook() -> Response:
        body = request.get_json()
        if standin.hook_status != 200:
            outcome = {
                "resourceType": "OperationOutcome",
                "issue": [
                    {"severity": "error", "code": "not-found", "diagnostics": "stand-in refuses: no labs"}
                ],
            }
            return Response(json.dumps(outcome), status=standin.hook_status, mimetype="application/json")
        note = "Prefetch was sent."
        if "prefetch" not in body and body.get("fhirAuthorization"):
            # No prefetch: fetch from the EHR's FHIR server with the token it gave us.
            token = body["fhirAuthorization"]["access_token"]
            patient = body["context"]["patientId"]
            answer = requests.get(
                f"{body['fhirServer']}/Observation",
                params={"patient": patient},
                headers={"Authorization": f"Bearer {token}", "Accept": "application/fhir+json"},
                timeout=10,
            )
            standin.fetched.append({"status": answer.status_code, "token": token, "body": answer.json()})
            note = f"Fetched labs from fhirServer: HTTP {answer.status_code}."
        if not any(_is_checkpoint(o) for o in _orders(body)):
            return jsonify({"cards": []})
        card = card_for(standin, body, note)
        standin.cards.append(card)
        return jsonify({"cards": [card]})

    @app.post(f"/cds-services/{SERVICE_ID}/feedback")
    def feedback() -> Response:
        return jsonify({})

    @app.get("/smart/launch")
    def launch() -> WerkzeugResponse:
        iss, launch_id = request.args["iss"], request.args["launch"]
        config = requests.get(f"{iss}/.well-known/smart-configuration", timeout=10).json()
        verifier = secrets.token_urlsafe(48)
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        state = secrets.token_urlsafe(16)
        pending[state] = verifier
        query = {
            "response_type": "code",
            "client_id": "standin-app",
            "redirect_uri": f"{standin.base_url}/smart/callback",
            "scope": "launch openid fhirUser patient/Patient.rs patient/Observation.rs",
            "state": state,
            "aud": iss,
            "launch": launch_id,
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        }
        return redirect(f"{config['authorization_endpoint']}?{urlencode(query)}")

    @app.get("/smart/callback")
    def callback() -> Response:
        if "error" in request.args:
            return Response(
                f"<p data-testid='app-error'>{escape(request.args['error'])}</p>", mimetype="text/html"
            )
        verifier = pending.pop(request.args["state"])
        config = requests.get(f"{standin.ehr_fhir_base}/.well-known/smart-configuration", timeout=10).json()
        token = requests.post(
            config["token_endpoint"],
            data={
                "grant_type": "authorization_code",
                "code": request.args["code"],
                "redirect_uri": f"{standin.base_url}/smart/callback",
                "code_verifier": verifier,
            },
            auth=("standin-app", standin.app_client_secret),
            timeout=10,
        ).json()
        standin.app_tokens.append(token)
        patient = requests.get(
            f"{standin.ehr_fhir_base}/Patient/{token['patient']}",
            headers={"Authorization": f"Bearer {token['access_token']}"},
            timeout=10,
        ).json()
        family = patient["name"][0]["family"]
        page = (
            f"<p data-testid='app-patient'>{escape(family)}</p>"
            f"<p data-testid='app-context'>{escape(token.get('appContext', ''))}</p>"
            f"<p data-testid='app-scope'>{escape(token['scope'])}</p>"
        )
        return Response(page, mimetype="text/html")

    return app
