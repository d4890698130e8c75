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


@dataclass(frozen=True, kw_only=True)
class CallAuditFacts:
    """What every record of a call to the service states: which service, when, how it ended, and
    who called (the client's JWT issuer, tenant and jti, or how it stands without one)."""

    service_id: str
    recorded: datetime
    status: int
    outcome_text: str
    service_url: str
    iss: str | None
    tenant: str | None
    jti: str | None
    #: How the calling client stands: ``verified`` (a valid JWT), ``off`` (authentication off),
    #: ``refused`` (a 401: no valid JWT), or ``unchecked`` (failed before authentication).
    client: str = "verified"


@dataclass(frozen=True, kw_only=True)
class HookAuditFacts(CallAuditFacts):
    """Everything one hook call's record states."""

    hook_instance: str
    hook: str
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


def _hook_instance(hook_instance: str, description: str) -> dict[str, Any]:
    """The hookInstance as an entity: its ``urn:uuid:`` identifier, object role Job (20), so that
    a hook call's record and the records linked to it are found by that one identifier."""
    return _entity(
        identifier=f"urn:uuid:{hook_instance}", entity_type="2", role="20", description=description
    )


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
        _hook_instance(facts.hook_instance, f"hookInstance of {facts.hook} to {facts.service_id}")
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
        entities.append(_hook_instance(facts.hook_instance, "hookInstance"))
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


@dataclass(frozen=True, kw_only=True)
class FeedbackCallAuditFacts(CallAuditFacts):
    """A feedback call that recorded no item: refused (a 4xx), failed, or sent an empty list."""

    request_id: str


def feedback_call_audit_event(facts: FeedbackCallAuditFacts) -> dict[str, Any]:
    """The AuditEvent for a feedback call without a feedback item to record: every call that
    reaches the service leaves a record, the refused ones first of all."""
    return {
        "resourceType": "AuditEvent",
        "id": audit_id("feedback-call", facts.service_id, facts.request_id),
        "type": {"system": AUDIT_EVENT_TYPE, "code": "rest", "display": "RESTful Operation"},
        "subtype": [
            {"system": ACTIVITY, "code": "cds-feedback", "display": "CDS Hooks feedback"},
            {
                "system": ACTIVITY,
                "code": "feedback-without-items",
                "display": "Feedback call with no item recorded",
            },
        ],
        "action": "C",
        "recorded": facts.recorded.isoformat(),
        "outcome": outcome_for_status(facts.status),
        "outcomeDesc": facts.outcome_text,
        "purposeOfEvent": [{"coding": [{"system": ACT_REASON, "code": "TREAT", "display": "treatment"}]}],
        "agent": [
            _agent_ehr(facts.iss, facts.tenant, facts.jti, facts.client),
            _agent_service(facts.service_url),
        ],
        "source": _source(facts.service_url),
    }


# --- the SMART app's records ----------------------------------------------------------------------

RESTFUL_INTERACTION = "http://hl7.org/fhir/restful-interaction"
#: The SMART app's activities, as ``subtype`` codes an auditor searches by (``ACTIVITY`` system).
SMART_LAUNCH, SMART_PAGE_VIEW, SMART_PRINT_VIEW = "smart-launch", "smart-page-view", "smart-print-view"
_SMART_ACTIVITY_DISPLAY = {
    SMART_LAUNCH: "SMART app launch",
    SMART_PAGE_VIEW: "SMART app page view",
    SMART_PRINT_VIEW: "SMART app print view",
}


@dataclass(frozen=True)
class SmartRequest:
    """One request the SMART app made to the EHR's FHIR server, and how it ended."""

    #: ``read`` or ``search-type`` (https://hl7.org/fhir/R4/codesystem-restful-interaction.html).
    interaction: str
    #: The request relative to the FHIR base: ``Patient/p1``, ``Observation?patient=p1&...``.
    query: str
    #: What came of it, in words: ``200``, ``403``, ``timeout``...
    result: str


@dataclass(frozen=True)
class SmartAuditFacts:
    """Everything one SMART launch's or one page's record states."""

    record_id: str
    activity: str  # SMART_LAUNCH, SMART_PAGE_VIEW or SMART_PRINT_VIEW
    recorded: datetime
    outcome: str  # OUTCOME_SUCCESS, OUTCOME_MINOR or OUTCOME_SERIOUS
    outcome_text: str
    #: The app's own base URL (``{public base}/smart``): the client's network address.
    app_url: str
    client_id: str
    #: The EHR's FHIR base URL (the launch's ``iss``).
    iss: str | None
    #: The id token's ``fhirUser``: the user's FHIR resource URL on the EHR.
    user: str | None
    patient_id: str | None
    #: The hookInstance of the card whose link opened the app (its ``appContext``).
    hook_instance: str | None
    requests: Sequence[SmartRequest] = ()


def _relative_to(url: str, base: str | None) -> str:
    """``{base}/Practitioner/1`` as ``Practitioner/1``, the form the hook records' user has."""
    if base and url.startswith(base.rstrip("/") + "/"):
        return url[len(base.rstrip("/")) + 1 :]
    return url


def _agent_fhir_user(user: str | None, iss: str | None) -> dict[str, Any]:
    """The user (BALP's user agent): the reference in the hook records' form, the URL as identifier.

    ``altId`` is the relative form too, so that ``altid=Practitioner/x`` finds this user's hook
    calls and page views alike, whatever the audit repository holds.
    """
    agent: dict[str, Any] = {
        "type": {"coding": [{"system": SECURITY_ROLE, "code": "humanuser", "display": "human user"}]},
        "requestor": True,
    }
    if not user:
        agent["who"] = {"display": "user not identified (the EHR sent no fhirUser)"}
        return agent
    relative = _relative_to(user, iss)
    who: dict[str, Any] = {}
    if "://" not in relative:
        who["reference"] = relative
    if "://" in user:
        # An absolute reference to another server would be refused by a repository that allows no
        # external references (HAPI's default): the URL goes in as an identifier.
        who["identifier"] = {"system": RFC3986, "value": user}
    agent.update(who=who, altId=relative, name=relative)
    return agent


def _agent_smart_client(client_id: str, app_url: str) -> dict[str, Any]:
    """The app as the client of the FHIR requests (DICOM and IHE: the Source Role ID)."""
    return {
        "type": {"coding": [{"system": DCM, "code": "110153", "display": "Source Role ID"}]},
        "who": {"identifier": {"value": client_id}, "display": f"IChIS SMART app (client {client_id})"},
        "requestor": False,
        "network": {"address": app_url, "type": "5"},
    }


def _agent_fhir_server(iss: str) -> dict[str, Any]:
    """The EHR's FHIR server that answered (DICOM and IHE: the Destination Role ID)."""
    return {
        "type": {"coding": [{"system": DCM, "code": "110152", "display": "Destination Role ID"}]},
        "who": {"identifier": {"system": RFC3986, "value": iss}, "display": f"EHR FHIR server {iss}"},
        "requestor": False,
        "network": {"address": iss, "type": "5"},
    }


def _smart_event(
    facts: SmartAuditFacts, event_type: dict[str, str], subtype: list[dict[str, str]]
) -> dict[str, Any]:
    agents = [_agent_fhir_user(facts.user, facts.iss), _agent_smart_client(facts.client_id, facts.app_url)]
    if facts.iss:
        agents.append(_agent_fhir_server(facts.iss))
    entities = []
    if facts.patient_id:
        entities.append(_entity(reference=f"Patient/{facts.patient_id}", entity_type="1", role="1"))
    if facts.hook_instance:
        entities.append(
            _hook_instance(facts.hook_instance, "hookInstance of the card whose link opened the app")
        )
    for made in facts.requests:
        entities.append(
            _entity(
                entity_type="2",
                role="24",
                description=f"FHIR {made.interaction} by the SMART app",
                query=made.query,
                detail=[("result", made.result)],
            )
        )
    activity = {
        "system": ACTIVITY,
        "code": facts.activity,
        "display": _SMART_ACTIVITY_DISPLAY[facts.activity],
    }
    event: dict[str, Any] = {
        "resourceType": "AuditEvent",
        "id": facts.record_id,
        "type": event_type,
        "subtype": [*subtype, activity],
        "action": "E",
        "recorded": facts.recorded.isoformat(),
        "outcome": facts.outcome,
        "outcomeDesc": facts.outcome_text,
        "purposeOfEvent": [{"coding": [{"system": ACT_REASON, "code": "TREAT", "display": "treatment"}]}],
        "agent": agents,
        "source": {
            "site": facts.app_url,
            "observer": {"display": "IChIS SMART app"},
            "type": [{"system": SOURCE_TYPE, "code": "4", "display": "Application Server"}],
        },
    }
    if entities:  # FHIR forbids empty arrays: a refused launch may know of no patient or card
        event["entity"] = entities
    return event


def smart_launch_audit_event(facts: SmartAuditFacts) -> dict[str, Any]:
    """The AuditEvent for one SMART launch: the app started for a user and a patient (or refused).

    DICOM's Application Activity / Application Start: BALP has no launch pattern, and the launch
    reads no patient data itself (the page does, and has its own record).
    """
    return _smart_event(
        facts,
        {"system": DCM, "code": "110100", "display": "Application Activity"},
        [{"system": DCM, "code": "110120", "display": "Application Start"}],
    )


def smart_page_audit_event(facts: SmartAuditFacts) -> dict[str, Any]:
    """The AuditEvent for one page of the SMART app that reads patient data (or was refused).

    BALP PatientRead and PatientQuery in one record, as one page makes both: type ``rest``, a
    ``restful-interaction`` subtype per kind of request, each request as a query entity with its
    result; action R for a page that only read, E once it searched (BALP's Query).
    """
    interactions = list(dict.fromkeys(made.interaction for made in facts.requests))
    subtype = [{"system": RESTFUL_INTERACTION, "code": kind, "display": kind} for kind in interactions]
    if facts.activity == SMART_PRINT_VIEW:
        # A printout is a page view too: one search by smart-page-view finds every view.
        subtype.append(
            {"system": ACTIVITY, "code": SMART_PAGE_VIEW, "display": _SMART_ACTIVITY_DISPLAY[SMART_PAGE_VIEW]}
        )
    event = _smart_event(
        facts, {"system": AUDIT_EVENT_TYPE, "code": "rest", "display": "RESTful Operation"}, subtype
    )
    event["action"] = "E" if "search-type" in interactions else "R"
    return event
