"""Everything the service writes passes the real HAPI server's ``$validate`` (core R4): 0 errors.

Every kind of AuditEvent (a card of each stratum, no card, wrong-patient data left out, 412, 400,
401 refused, authentication off, feedback accepted and overridden) and the ServiceRequest a
partial card suggests are produced by the service itself, taken from its spool, and validated.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from flask import Flask

from cds_service.audit import AuditSpool
from cds_service.wiring import service_of
from fhir_mappings.bundles import dumps
from tests.http.conftest import CARBOPLATIN, hook_body, medication_request, prefetch_for
from tests.http.test_auth import token
from tests.integration.test_audit_trail import BASE, call, service
from tests.smart.conftest import SmartEnv, smart_ehr_data_dir, smart_env
from tests.smart.conftest import app_context as smart_app_context

pytestmark = pytest.mark.integration
__all__ = ["service"]  # the fixture, shared with the audit-trail tests
__all__ += ["smart_ehr_data_dir", "smart_env"]  # the SMART app's fixtures


def validate(fhir: str, resource: dict[str, Any]) -> list[str]:
    """The error and fatal issues HAPI's instance validator reports for ``resource``."""
    reply = requests.post(
        f"{fhir}/{resource['resourceType']}/$validate",
        data=dumps(resource),
        headers={"Content-Type": "application/fhir+json"},
        timeout=120,
    )
    outcome = reply.json()
    return [
        f"{issue.get('severity')}: {issue.get('diagnostics')} @ {issue.get('expression')}"
        for issue in outcome.get("issue", [])
        if issue.get("severity") in ("error", "fatal")
    ]


def spooled(app: Flask) -> list[dict[str, Any]]:
    spool: AuditSpool = service_of(app).spool
    return [resource for _, resource, _, _ in spool.claim(1000, 60, with_default_target=True)]


def with_another_patients_results(patient: str) -> dict[str, Any]:
    """A prefetch that also carries results of another patient (an EHR prefetch bug)."""
    prefetch = prefetch_for(patient)
    for entry in copy.deepcopy(prefetch_for("ichis-demo-2")["labs"]["entry"])[:2]:
        prefetch["labs"]["entry"].append(entry)
    return prefetch


def feedback(app: Flask, card: str, outcome: str) -> int:
    item: dict[str, Any] = {"card": card, "outcome": outcome, "outcomeTimestamp": "2026-12-02T10:00:00Z"}
    if outcome == "accepted":
        item["acceptedSuggestions"] = [{"id": "s-1"}]
    else:
        item["overrideReason"] = {"reason": {"code": "not-relevant", "display": "Not relevant"}}
    url = f"{BASE}/cds-services/ichis-prognosis/feedback"
    reply = app.test_client().post(
        "/cds-services/ichis-prognosis/feedback",
        data=dumps({"feedback": [item]}),
        content_type="application/json",
        headers={"Authorization": f"Bearer {token(aud=url)}"},
    )
    return reply.status_code


def test_every_kind_of_record_and_suggestion_the_service_writes_is_valid_fhir(
    service: Callable[..., Flask], demo_fhir: str
) -> None:
    app = service()
    cards: dict[str, dict[str, Any]] = {}
    for patient in ("ichis-demo-2", "ichis-demo-partial", "ichis-demo-stale", "ichis-demo-1"):
        reply = call(app, hook_body(patient))
        assert reply.status_code == 200, reply.get_json()
        cards[patient] = reply.get_json()["cards"][0]
    no_card = hook_body(
        "ichis-demo-0", orders=[medication_request("chemo", *CARBOPLATIN, patient="ichis-demo-0")]
    )
    assert call(app, no_card).get_json() == {"cards": []}
    mixed = hook_body("ichis-demo-0", prefetch=with_another_patients_results("ichis-demo-0"))
    assert call(app, mixed).status_code == 200
    assert call(app, hook_body("ichis-demo-0", prefetch=None)).status_code == 412
    bad = hook_body("ichis-demo-0")
    del bad["hookInstance"]
    assert call(app, bad).status_code == 400
    unsigned = app.test_client().post(
        "/cds-services/ichis-prognosis",
        data=dumps(hook_body("ichis-demo-0")),
        content_type="application/json",
    )
    assert unsigned.status_code == 401
    assert feedback(app, cards["ichis-demo-2"]["uuid"], "overridden") == 200
    assert feedback(app, cards["ichis-demo-partial"]["uuid"], "accepted") == 200
    refused_feedback = app.test_client().post(
        "/cds-services/ichis-prognosis/feedback",
        data=dumps({"feedback": [{"card": 5}]}),
        content_type="application/json",
        headers={"Authorization": f"Bearer {token(aud=f'{BASE}/cds-services/ichis-prognosis/feedback')}"},
    )
    assert refused_feedback.status_code == 400
    open_app = service(auth_mode="off")  # the same data directory: one spool for both
    assert (
        open_app.test_client()
        .post(
            "/cds-services/ichis-prognosis",
            data=dumps(hook_body("ichis-demo-0")),
            content_type="application/json",
        )
        .status_code
        == 200
    )

    records = spooled(app)
    kinds = {coding["code"] for record in records for coding in record.get("subtype", [])}
    assert {"ichis-2", "ichis-1-2", "ichis-unavailable", "ichis-1", "no-card", "other-patient-data"} <= kinds
    assert {"feedback-accepted", "feedback-overridden", "feedback-without-items"} <= kinds
    displays = {agent["who"].get("display") for record in records for agent in record["agent"]}
    assert {"CDS client (refused: invalid token)", "CDS client (authentication off)"} <= displays
    suggestion = cards["ichis-demo-partial"]["suggestions"][0]["actions"][0]["resource"]
    problems = {record["id"]: validate(demo_fhir, record) for record in records}
    problems["suggested ServiceRequest"] = validate(demo_fhir, suggestion)
    assert {key: found for key, found in problems.items() if found} == {}


def test_every_kind_of_record_the_smart_app_writes_is_valid_fhir(
    smart_env: Callable[..., SmartEnv], hapi_url: str
) -> None:
    """Launches (completed, refused with and without a patient) and page views (shown, partly
    denied, renewed, printed, refused for an ended token, failed at the FHIR server), as the app
    spools them, pass HAPI's $validate with 0 errors."""
    records: list[dict[str, Any]] = []
    env = smart_env()
    env.fhir.add_patient("ichis-demo-2")
    page = env.open("ichis-demo-2", appContext=smart_app_context("ichis-demo-2"))
    env.client.get(page.request.path + "/print")
    env.later(3600)  # the token is renewed with the refresh token before the next page
    env.client.get(page.request.path)
    env.open("ichis-demo-2", deny_scopes=["patient/Observation.rs"])
    refused = env.start("ichis-demo-2", appContext=smart_app_context("ichis-demo-0"))
    env.callback(env.authorize(refused.headers["Location"]))
    state = parse_qs(urlsplit(env.start("ichis-demo-2").headers["Location"]).query)["state"][0]
    env.client.get(f"/smart/callback?error=access_denied&state={state}")
    records += env.spooled()
    expired = smart_env(ehr={"access_token_ttl": 1}, smart={"refresh_scope": "none"})
    expired.open("ichis-demo-2")
    records += expired.spooled()
    failing = smart_env(ehr={"fhir_upstream": "http://127.0.0.1:9/fhir"})  # nothing listens there
    failing.open("ichis-demo-2")
    records += failing.spooled()

    outcomes = {(activity["code"], record["outcome"]) for record in records for activity in record["subtype"]}
    assert {("smart-launch", "0"), ("smart-launch", "4"), ("smart-print-view", "0")} <= outcomes
    assert {("smart-page-view", "0"), ("smart-page-view", "4"), ("smart-page-view", "8")} <= outcomes
    assert any("renewed" in record["outcomeDesc"] for record in records)
    problems = {f"{record['outcomeDesc']} ({record['id']})": validate(hapi_url, record) for record in records}
    assert {key: found for key, found in problems.items() if found} == {}
