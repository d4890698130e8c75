"""Everything the service writes passes the real HAPI server's ``$validate`` (core R4): 0 errors.

Every kind of AuditEvent (a card of each stratum, no card, wrong-patient data left out, 412, 400,
401 refused, authentication off, feedback accepted and overridden) and the ServiceRequest a
partial card suggests are produced by the service itself, taken from its spool, and validated.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest
import requests
from flask import Flask

from cds_service.audit import AuditSpool
from fhir_mappings.bundles import dumps
from tests.http.conftest import CARBOPLATIN, hook_body, medication_request, prefetch_for
from tests.http.test_auth import token
from tests.integration.test_audit_trail import BASE, call, service

pytestmark = pytest.mark.integration
__all__ = ["service"]  # the fixture, shared with the audit-trail tests


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
    spool: AuditSpool = app.extensions["ichis.audit.spool"]
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
    assert {"feedback-accepted", "feedback-overridden"} <= kinds
    displays = {agent["who"].get("display") for record in records for agent in record["agent"]}
    assert {"CDS client (refused: invalid token)", "CDS client (authentication off)"} <= displays
    suggestion = cards["ichis-demo-partial"]["suggestions"][0]["actions"][0]["resource"]
    problems = {record["id"]: validate(demo_fhir, record) for record in records}
    problems["suggested ServiceRequest"] = validate(demo_fhir, suggestion)
    assert {key: found for key, found in problems.items() if found} == {}
