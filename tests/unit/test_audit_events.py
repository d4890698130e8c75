"""The AuditEvents we write: valid FHIR R4 (checked with fhir.resources), searchable, no secrets."""

from __future__ import annotations

import base64
import json
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest
from fhir.resources.R4B.auditevent import AuditEvent

from fhir_mappings.audit import (
    SMART_LAUNCH,
    SMART_PAGE_VIEW,
    SMART_PRINT_VIEW,
    FeedbackAuditFacts,
    HookAuditFacts,
    SmartAuditFacts,
    SmartRequest,
    audit_id,
    feedback_audit_event,
    hook_audit_event,
    outcome_for_status,
    smart_launch_audit_event,
    smart_page_audit_event,
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


# --- the SMART app's records -------------------------------------------------------------------

EHR_FHIR = "https://ehr.example/fhir"
PAGE_REQUESTS = (
    SmartRequest("read", "Patient/p1", "200"),
    SmartRequest("search-type", "Observation?patient=p1&code=http://loinc.org|751-8", "200"),
    SmartRequest("search-type", "Condition?patient=p1&_count=100", "403"),
)


SMART_FACTS = SmartAuditFacts(
    record_id="5b0c1c3e-8f1d-4a57-9d52-7b0f6b1f2a11",
    activity=SMART_PAGE_VIEW,
    recorded=WHEN,
    outcome="0",
    outcome_text="page shown",
    app_url="https://cds.example/smart",
    client_id="ichis-smart",
    iss=EHR_FHIR,
    user=f"{EHR_FHIR}/Practitioner/dr-1",
    patient_id="p1",
    hook_instance="d1577c69-dfbe-44ad-ba6d-3e05e953b2ea",
    requests=PAGE_REQUESTS,
)


def smart_facts(**changes: Any) -> SmartAuditFacts:
    return replace(SMART_FACTS, **changes)


def whats(event: dict[str, Any]) -> list[str | None]:
    return [
        e.get("what", {}).get("reference") or e.get("what", {}).get("identifier", {}).get("value")
        for e in event["entity"]
    ]


def test_a_page_view_names_the_user_the_app_the_ehr_the_patient_and_the_card() -> None:
    """BALP's user, client (Source Role ID) and server (Destination Role ID) agents, then the
    patient and the card's hookInstance."""
    event = smart_page_audit_event(smart_facts())
    AuditEvent.model_validate(event)
    user, app, server = event["agent"]
    assert user["who"] == {
        "reference": "Practitioner/dr-1",
        "identifier": {"system": "urn:ietf:rfc:3986", "value": f"{EHR_FHIR}/Practitioner/dr-1"},
    }
    assert (user["altId"], user["requestor"]) == ("Practitioner/dr-1", True)
    assert app["who"]["identifier"] == {"value": "ichis-smart"}
    assert app["network"] == {"address": "https://cds.example/smart", "type": "5"}
    assert server["who"]["identifier"]["value"] == EHR_FHIR
    assert [a["type"]["coding"][0]["code"] for a in (app, server)] == ["110153", "110152"]
    assert whats(event)[:2] == ["Patient/p1", "urn:uuid:d1577c69-dfbe-44ad-ba6d-3e05e953b2ea"]
    assert event["source"]["site"] == "https://cds.example/smart"


def test_a_page_view_lists_each_request_it_made_with_its_result() -> None:
    """Each read and search is a query entity (BALP PatientQuery), its result in a detail."""
    event = smart_page_audit_event(smart_facts())
    queries = [e for e in event["entity"] if e["role"]["code"] == "24"]
    sent = [base64.b64decode(e["query"]).decode() for e in queries]
    assert sent == [made.query for made in PAGE_REQUESTS]
    assert [e["detail"] for e in queries][2] == [{"type": "result", "valueString": "403"}]
    codes = [(c["system"], c["code"]) for c in event["subtype"]]
    assert codes == [
        ("http://hl7.org/fhir/restful-interaction", "read"),
        ("http://hl7.org/fhir/restful-interaction", "search-type"),
        ("urn:ichis:audit:activity", "smart-page-view"),
    ]
    assert (event["type"]["code"], event["action"]) == ("rest", "E")


@pytest.mark.parametrize(
    ("changes", "action", "activities"),
    [
        ({"requests": PAGE_REQUESTS[:1]}, "R", ["smart-page-view"]),
        ({"requests": ()}, "R", ["smart-page-view"]),
        ({"activity": SMART_PRINT_VIEW}, "E", ["smart-page-view", "smart-print-view"]),
    ],
)
def test_a_page_that_only_read_or_was_printed_says_so(
    changes: dict[str, Any], action: str, activities: list[str]
) -> None:
    """Action R without a search; a printout is found among page views and as a print view."""
    event = smart_page_audit_event(smart_facts(**changes))
    AuditEvent.model_validate(event)
    assert event["action"] == action
    assert [c["code"] for c in event["subtype"] if c["system"] == "urn:ichis:audit:activity"] == activities


@pytest.mark.parametrize(
    ("user", "who", "alt_id"),
    [
        ("Practitioner/dr-1", {"reference": "Practitioner/dr-1"}, "Practitioner/dr-1"),
        (
            "https://other.example/fhir/Practitioner/dr-2",
            {
                "identifier": {
                    "system": "urn:ietf:rfc:3986",
                    "value": "https://other.example/fhir/Practitioner/dr-2",
                }
            },
            "https://other.example/fhir/Practitioner/dr-2",
        ),
        (None, {"display": "user not identified (the EHR sent no fhirUser)"}, None),
    ],
)
def test_the_user_is_recorded_so_a_repository_without_external_references_accepts_it(
    user: str | None, who: dict[str, object], alt_id: str | None
) -> None:
    """A fhirUser on another server is an identifier, not an absolute reference; no fhirUser is said."""
    event = smart_page_audit_event(smart_facts(user=user))
    AuditEvent.model_validate(event)
    assert event["agent"][0]["who"] == who
    assert event["agent"][0].get("altId") == alt_id


def test_a_launch_record_is_an_application_start_of_the_smart_app() -> None:
    """DICOM Application Activity / Application Start, with the launch's outcome in words."""
    event = smart_launch_audit_event(
        smart_facts(activity=SMART_LAUNCH, requests=(), outcome="4", outcome_text="authorization-denied: no")
    )
    AuditEvent.model_validate(event)
    assert (event["type"]["code"], event["subtype"][0]["code"]) == ("110100", "110120")
    assert event["subtype"][1] == {
        "system": "urn:ichis:audit:activity",
        "code": "smart-launch",
        "display": "SMART app launch",
    }
    assert (event["outcome"], event["outcomeDesc"]) == ("4", "authorization-denied: no")
    assert "Patient/p1" in whats(event)


def test_a_smart_record_carries_no_token() -> None:
    """Nothing in a SMART record looks like a token or a value."""
    text = json.dumps(smart_page_audit_event(smart_facts()))
    assert "Bearer" not in text
    assert "token" not in text.lower()


def test_a_launch_refused_before_the_ehr_named_anyone_has_no_empty_entity_list() -> None:
    """FHIR allows no empty array: a record with no patient, card or request leaves entity out."""
    event = smart_launch_audit_event(
        smart_facts(activity=SMART_LAUNCH, patient_id=None, hook_instance=None, requests=(), user=None)
    )
    AuditEvent.model_validate(event)
    assert "entity" not in event
