"""The AuditEvents we write: valid FHIR R4 (checked with fhir.resources), searchable, no secrets."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from fhir.resources.R4B.auditevent import AuditEvent

from fhir_mappings.audit import (
    FeedbackAuditFacts,
    HookAuditFacts,
    audit_id,
    feedback_audit_event,
    hook_audit_event,
    outcome_for_status,
)

WHEN = datetime(2026, 11, 29, 10, 0, tzinfo=UTC)


def facts(**changes: object) -> HookAuditFacts:
    base = {
        "hook_instance": "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea",
        "hook": "order-select",
        "service_id": "ichis-prognosis",
        "recorded": WHEN,
        "status": 200,
        "outcome_text": "card issued",
        "service_url": "https://cds.example/cds-services",
        "iss": "https://ehr.example",
        "tenant": "north",
        "jti": "jti-1",
        "user": "Practitioner/dr-1",
        "patient_id": "p1",
        "orders": ["MedicationRequest/m1"],
        "observations": ["Observation/n1", "Observation/i1"],
        "queries": ["Observation?patient=p1&code=http://loinc.org|751-8"],
        "card_uuid": "6f1d3c3e-5a0b-4c8e-9a51-2a7f0f4e8b11",
        "score": 2,
        "status_of_score": "complete",
    }
    base.update(changes)
    return HookAuditFacts(**base)  # type: ignore[arg-type]


def test_a_hook_record_validates_as_fhir() -> None:
    AuditEvent.model_validate(hook_audit_event(facts()))


def test_a_hook_record_names_agents_entities_and_the_score() -> None:
    event = hook_audit_event(facts())
    agents = [a["who"].get("reference") or a["who"]["identifier"]["value"] for a in event["agent"]]
    assert agents == ["https://ehr.example", "https://cds.example/cds-services", "Practitioner/dr-1"]
    assert "tenant north" in event["agent"][0]["who"]["display"]
    assert event["agent"][2]["altId"] == "Practitioner/dr-1"
    whats = [
        e.get("what", {}).get("reference") or e.get("what", {}).get("identifier", {}).get("value")
        for e in event["entity"]
    ]
    assert "Patient/p1" in whats
    assert "urn:uuid:d1577c69-dfbe-44ad-ba6d-3e05e953b2ea" in whats
    assert {"MedicationRequest/m1", "Observation/n1", "Observation/i1"} <= set(whats)
    assert "urn:uuid:6f1d3c3e-5a0b-4c8e-9a51-2a7f0f4e8b11" in whats
    assert {"system": "urn:ichis:audit:score", "code": "ichis-2", "display": "Card stated IChIS 2"} in event[
        "subtype"
    ]
    assert event["purposeOfEvent"][0]["coding"][0]["code"] == "TREAT"


@pytest.mark.parametrize(("status", "outcome"), [(200, "0"), (412, "4"), (401, "4"), (400, "4"), (500, "8")])
def test_the_outcome_follows_the_http_status(status: int, outcome: str) -> None:
    assert outcome_for_status(status) == outcome
    assert hook_audit_event(facts(status=status))["outcome"] == outcome


def test_the_same_hook_instance_always_gives_the_same_record_id() -> None:
    assert hook_audit_event(facts())["id"] == hook_audit_event(facts(recorded=datetime.now(UTC)))["id"]
    assert hook_audit_event(facts())["id"] != hook_audit_event(facts(hook_instance="other"))["id"]
    assert audit_id("hook", "a") != audit_id("feedback", "a")


def test_a_record_carries_no_token_and_no_lab_value() -> None:
    text = json.dumps(hook_audit_event(facts()))
    assert "Bearer" not in text
    assert "access_token" not in text
    assert "9450" not in text


def test_a_feedback_record_validates_and_links_card_and_hook_instance() -> None:
    event = feedback_audit_event(
        FeedbackAuditFacts(
            card_uuid="c-1",
            hook_instance="h-1",
            service_id="ichis-prognosis",
            outcome="overridden",
            outcome_timestamp="2026-11-29T10:05:00Z",
            recorded=WHEN,
            service_url="https://cds.example/cds-services",
            iss="https://ehr.example",
            tenant=None,
            patient_id="p1",
            override_code="already-considered",
            override_display="Prognosis already discussed; score noted",
            user_comment_given=True,
        )
    )
    AuditEvent.model_validate(event)
    whats = [e.get("what", {}).get("identifier", {}).get("value") for e in event["entity"]]
    assert {"urn:uuid:c-1", "urn:uuid:h-1"} <= set(whats)
    card = next(
        e for e in event["entity"] if e.get("what", {}).get("identifier", {}).get("value") == "urn:uuid:c-1"
    )
    assert {
        "type": "overrideReason",
        "valueString": "already-considered: Prognosis already discussed; score noted",
    } in (card["detail"])
    assert "userComment" in json.dumps(event)  # that a comment was given, not what it said


@pytest.mark.parametrize(
    ("changes", "code"),
    [
        ({"score": None, "status_of_score": "partial", "lower": 1, "upper": 2}, "ichis-1-2"),
        ({"score": None, "status_of_score": "unavailable"}, "ichis-unavailable"),
        ({"score": None, "status_of_score": None, "card_uuid": None}, "no-card"),
    ],
)
def test_records_without_a_complete_score_say_what_the_card_said(
    changes: dict[str, object], code: str
) -> None:
    event = hook_audit_event(facts(**changes))
    assert code in [s["code"] for s in event["subtype"]]
    AuditEvent.model_validate(event)
