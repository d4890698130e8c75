"""Builders of the FHIR R4 AuditEvents we write, after IHE Basic Audit Log Patterns (BALP).

https://hl7.org/fhir/R4/auditevent.html and https://profiles.ihe.net/ITI/BALP/. No profile exists
for a CDS Hooks call, so the record follows BALP's building blocks: agents for the calling EHR
(its JWT ``iss``, with ``tenant``), this service and the user; entities for the patient, the
hookInstance, the orders, each Observation the score used, each FHIR query the service made
(BALP PatientQuery style: the query in ``entity.query``) and the card with its score. Pure: the
caller passes everything in, including the time. No token and no lab value ever enters a record.

Searchability (R4 AuditEvent search parameters): by patient (``patient``), user (``agent``),
date (``date``), outcome (``outcome``), and by score through a ``subtype`` coding
(``urn:ichis:audit:score|ichis-2``), since ``entity.detail`` is not searchable.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

DCM = "http://dicom.nema.org/resources/ontology/DCM"
AUDIT_EVENT_TYPE = "http://terminology.hl7.org/CodeSystem/audit-event-type"
ENTITY_TYPE = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
OBJECT_ROLE = "http://terminology.hl7.org/CodeSystem/object-role"
ACT_REASON = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
SECURITY_ROLE = "http://terminology.hl7.org/CodeSystem/extra-security-role-type"
SOURCE_TYPE = "http://terminology.hl7.org/CodeSystem/security-source-type"
RFC3986 = "urn:ietf:rfc:3986"
#: Our own code systems: what happened, and the score the card stated.
ACTIVITY = "urn:ichis:audit:activity"
SCORE = "urn:ichis:audit:score"
HOOKS = "https://cds-hooks.org/hooks"
OVERRIDE = "urn:ichis:audit:override-reason"

#: Deterministic AuditEvent ids: the same hookInstance (or feedback item) always maps to the same
#: resource id, so a delivery retried after a lost response updates instead of duplicating.
AUDIT_NAMESPACE = uuid.UUID("0a7e0b0c-4d8e-4f3a-9c55-6b1f2e9d7a21")

#: BALP outcome codes (https://hl7.org/fhir/R4/valueset-audit-event-outcome.html).
OUTCOME_SUCCESS, OUTCOME_MINOR, OUTCOME_SERIOUS = "0", "4", "8"


def outcome_for_status(status: int) -> str:
    if status < 400:
        return OUTCOME_SUCCESS
    return OUTCOME_MINOR if status < 500 else OUTCOME_SERIOUS


@dataclass(frozen=True)
class HookAuditFacts:
    """Everything one hook call's record states."""

    hook_instance: str
    hook: str
    service_id: str
    recorded: datetime
    status: int
    outcome_text: str
    service_url: str
    iss: str | None
    tenant: str | None
    jti: str | None
    user: str | None
    patient_id: str | None
    orders: Sequence[str] = ()
    observations: Sequence[str] = ()
    queries: Sequence[str] = ()
    card_uuid: str | None = None
    score: int | None = None
    lower: int | None = None
    upper: int | None = None
    status_of_score: str | None = None
    #: The EHR's FHIR base: orders and Observations are recorded by their absolute URL there.
    fhir_base: str | None = None
    #: How the calling client stands: ``verified`` (a valid JWT), ``off`` (authentication off),
    #: ``refused`` (a 401: no valid JWT), or ``unchecked`` (failed before authentication).
    client: str = "verified"
    #: Resources the EHR sent about another patient, or about none, that were left out.
    foreign: Sequence[str] = ()
    untied: Sequence[str] = ()


@dataclass(frozen=True)
class FeedbackAuditFacts:
    card_uuid: str
    hook_instance: str | None
    service_id: str
    outcome: str  # accepted | overridden
    outcome_timestamp: str
    recorded: datetime
    service_url: str
    iss: str | None
    tenant: str | None
    patient_id: str | None
    client: str = "verified"
    override_code: str | None = None
    override_display: str | None = None
    user_comment_given: bool = False
    accepted_suggestions: Sequence[str] = field(default_factory=tuple)


def audit_id(kind: str, *parts: str) -> str:
    return str(uuid.uuid5(AUDIT_NAMESPACE, "|".join((kind, *parts))))


#: What the record says of a client that did not prove who it is.
_CLIENT_WITHOUT_ISS = {
    "off": "CDS client (authentication off)",
    "refused": "CDS client (refused: invalid token)",
    "unchecked": "CDS client (not authenticated: the call failed before authentication)",
}


def _agent_ehr(
    iss: str | None, tenant: str | None, jti: str | None, client: str = "verified"
) -> dict[str, Any]:
    who: dict[str, Any]
    if iss and client == "verified":
        # RFC 3986 identifiers must be absolute URIs; CDS Hooks issuers are URLs, but not always.
        absolute = "://" in iss or iss.startswith("urn:")
        who = {
            "identifier": {"system": RFC3986, "value": iss} if absolute else {"value": iss},
            "display": f"CDS client {iss}" + (f", tenant {tenant}" if tenant else ""),
        }
    else:
        who = {"display": _CLIENT_WITHOUT_ISS.get(client, _CLIENT_WITHOUT_ISS["unchecked"])}
    agent: dict[str, Any] = {
        "type": {"coding": [{"system": DCM, "code": "110150", "display": "Application"}]},
        "who": who,
        "requestor": False,
    }
    if jti:
        # BALP's OAuth agent slices carry the token's jti; the token itself is never recorded.
        agent["policy"] = [f"jti:{jti}"]
    return agent


def _agent_service(service_url: str) -> dict[str, Any]:
    return {
        "type": {"coding": [{"system": DCM, "code": "110153", "display": "Source Role ID"}]},
        "who": {"identifier": {"system": RFC3986, "value": service_url}, "display": "IChIS CDS service"},
        "requestor": False,
        "network": {"address": service_url, "type": "5"},
    }


def _agent_user(user: str) -> dict[str, Any]:
    # altId repeats the user reference as a token: an auditor finds it with ``altid=`` even when
    # the audit repository does not hold the Practitioner (then ``agent=`` finds nothing).
    return {
        "type": {"coding": [{"system": SECURITY_ROLE, "code": "humanuser", "display": "human user"}]},
        "who": {"reference": user},
        "altId": user,
        "name": user,
        "requestor": True,
    }


def _source(service_url: str) -> dict[str, Any]:
    return {
        "site": service_url,
        "observer": {"display": "IChIS CDS service"},
        "type": [{"system": SOURCE_TYPE, "code": "4", "display": "Application Server"}],
    }


def _entity(
    *,
    reference: str | None = None,
    identifier: str | None = None,
    entity_type: str,
    role: str,
    description: str | None = None,
    detail: Sequence[tuple[str, str]] = (),
    query: str | None = None,
) -> dict[str, Any]:
    what: dict[str, Any] = {}
    if reference:
        what["reference"] = reference
    if identifier:
        # RFC 3986 identifiers must be absolute URIs; a relative reference (a request that came
        # with prefetch and no fhirServer) is kept as a plain identifier value.
        absolute = "://" in identifier or identifier.startswith("urn:")
        what["identifier"] = {"system": RFC3986, "value": identifier} if absolute else {"value": identifier}
    entity: dict[str, Any] = {
        "type": {"system": ENTITY_TYPE, "code": entity_type},
        "role": {"system": OBJECT_ROLE, "code": role},
    }
    if what:  # FHIR forbids empty elements; a query entity has no "what"
        entity["what"] = what
    if description:
        entity["description"] = description
    if query:
        entity["query"] = base64.b64encode(query.encode("utf-8")).decode("ascii")
    if detail:
        entity["detail"] = [{"type": kind, "valueString": value} for kind, value in detail]
    return entity


def _absolute(reference: str, base: str | None) -> str:
    """``Observation/1`` on ``https://ehr/fhir`` is ``https://ehr/fhir/Observation/1``."""
    if reference.startswith(("http://", "https://", "urn:")) or not base:
        return reference
    return f"{base.rstrip('/')}/{reference}"


def _score_code(facts: HookAuditFacts) -> tuple[str, str]:
    if facts.score is not None:
        return f"ichis-{facts.score}", f"Card stated IChIS {facts.score}"
    if facts.status_of_score == "partial":
        return f"ichis-{facts.lower}-{facts.upper}", f"Card stated IChIS {facts.lower} to {facts.upper}"
    if facts.status_of_score == "unavailable":
        return "ichis-unavailable", "Card stated IChIS not available"
    return "no-card", "No card"


def hook_audit_event(facts: HookAuditFacts) -> dict[str, Any]:
    """The AuditEvent for one hook call."""
    code, display = _score_code(facts)
    subtype = [
        {"system": ACTIVITY, "code": "cds-hook-call", "display": "CDS Hooks service call"},
        {"system": HOOKS, "code": facts.hook, "display": facts.hook},
        {"system": SCORE, "code": code, "display": display},
    ]
    if facts.foreign or facts.untied:
        # Wrong-patient data in a request is an incident an auditor looks for: searchable by subtype.
        subtype.append(
            {"system": ACTIVITY, "code": "other-patient-data", "display": "Data of another patient left out"}
        )
    agents = [
        _agent_ehr(facts.iss, facts.tenant, facts.jti, facts.client),
        _agent_service(facts.service_url),
    ]
    if facts.user:
        agents.append(_agent_user(facts.user))
    entities = []
    if facts.patient_id:
        entities.append(_entity(reference=f"Patient/{facts.patient_id}", entity_type="1", role="1"))
    entities.append(
        _entity(
            identifier=f"urn:uuid:{facts.hook_instance}",
            entity_type="2",
            role="20",
            description=f"hookInstance of {facts.hook} to {facts.service_id}",
        )
    )
    # Orders are drafts and Observations live on the EHR's server, which need not be the audit
    # repository: both are recorded by identifier (their absolute URL), not by a local reference.
    inputs = [(o, "4", "triggering order") for o in facts.orders]
    inputs += [(o, "3", "input of the score") for o in facts.observations]
    for reference, role, description in inputs:
        entities.append(
            _entity(
                identifier=_absolute(reference, facts.fhir_base),
                entity_type="2",
                role=role,
                description=description,
            )
        )
    left_out = [(r, "left out: its subject is another patient") for r in facts.foreign]
    left_out += [(r, "left out: no subject that resolves to this patient") for r in facts.untied]
    for reference, description in left_out:
        entities.append(
            _entity(
                identifier=_absolute(reference, facts.fhir_base),
                entity_type="2",
                role="3",
                description=description,
            )
        )
    for query in facts.queries:
        entities.append(
            _entity(entity_type="2", role="24", description="FHIR query by the service", query=query)
        )
    if facts.card_uuid:
        detail = [("score", code)]
        entities.append(
            _entity(
                identifier=f"urn:uuid:{facts.card_uuid}",
                entity_type="2",
                role="4",
                description=display,
                detail=detail,
            )
        )
    return {
        "resourceType": "AuditEvent",
        "id": audit_id("hook", facts.service_id, facts.hook_instance),
        "type": {"system": DCM, "code": "110112", "display": "Query"},
        "subtype": subtype,
        "action": "E",
        "recorded": facts.recorded.isoformat(),
        "outcome": outcome_for_status(facts.status),
        "outcomeDesc": facts.outcome_text,
        "purposeOfEvent": [{"coding": [{"system": ACT_REASON, "code": "TREAT", "display": "treatment"}]}],
        "agent": agents,
        "source": _source(facts.service_url),
        "entity": entities,
    }


def feedback_audit_event(facts: FeedbackAuditFacts) -> dict[str, Any]:
    """The AuditEvent for one feedback item on a card."""
    subtype = [
        {"system": ACTIVITY, "code": "cds-feedback", "display": "CDS Hooks feedback"},
        {"system": ACTIVITY, "code": f"feedback-{facts.outcome}", "display": f"Card {facts.outcome}"},
    ]
    if facts.override_code:
        subtype.append(
            {
                "system": OVERRIDE,
                "code": facts.override_code,
                "display": facts.override_display or facts.override_code,
            }
        )
    entities = []
    if facts.patient_id:
        entities.append(_entity(reference=f"Patient/{facts.patient_id}", entity_type="1", role="1"))
    detail = [("outcome", facts.outcome), ("outcomeTimestamp", facts.outcome_timestamp)]
    if facts.override_code:
        detail.append(("overrideReason", f"{facts.override_code}: {facts.override_display or ''}".strip()))
    if facts.user_comment_given:
        detail.append(("userComment", "given (not recorded here)"))
    for suggestion in facts.accepted_suggestions:
        detail.append(("acceptedSuggestion", suggestion))
    entities.append(
        _entity(
            identifier=f"urn:uuid:{facts.card_uuid}",
            entity_type="2",
            role="4",
            description="card",
            detail=detail,
        )
    )
    if facts.hook_instance:
        entities.append(
            _entity(
                identifier=f"urn:uuid:{facts.hook_instance}",
                entity_type="2",
                role="20",
                description="hookInstance",
            )
        )
    return {
        "resourceType": "AuditEvent",
        "id": audit_id("feedback", facts.service_id, facts.card_uuid, facts.outcome, facts.outcome_timestamp),
        "type": {"system": AUDIT_EVENT_TYPE, "code": "rest", "display": "RESTful Operation"},
        "subtype": subtype,
        "action": "C",
        "recorded": facts.recorded.isoformat(),
        "outcome": OUTCOME_SUCCESS,
        "purposeOfEvent": [{"coding": [{"system": ACT_REASON, "code": "TREAT", "display": "treatment"}]}],
        "agent": [_agent_ehr(facts.iss, facts.tenant, None, facts.client), _agent_service(facts.service_url)],
        "source": _source(facts.service_url),
        "entity": entities,
    }
