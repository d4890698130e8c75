"""Turning each hook call and each feedback item into a spooled AuditEvent.

Views note what they learn on the call's typed ``CallNotes`` (``notes()``); after the response
is made (whatever its status, errors included) the record is built by ``fhir_mappings.audit``
and put in the spool.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from flask import Flask, Response, g, request

from cds_service.audit import AuditDeliverer, AuditSpool
from cds_service.errors import outcome_response
from cds_service.settings import Settings, fhir_destinations
from fhir_mappings.audit import (
    FeedbackAuditFacts,
    FeedbackCallAuditFacts,
    HookAuditFacts,
    feedback_audit_event,
    feedback_call_audit_event,
    hook_audit_event,
)
from plumbing.errors import first_diagnostics

log = logging.getLogger("ichis.audit")

HOOK_ENDPOINT = "cds.call_service"
FEEDBACK_ENDPOINT = "cds.feedback"


@dataclass
class FeedbackNote:
    """One feedback item as its record states it (the card's own facts looked up)."""

    card: str
    outcome: str
    outcome_timestamp: str
    hook_instance: str | None
    patient_id: str | None
    override_code: str | None
    override_display: str | None
    user_comment_given: bool
    accepted_suggestions: tuple[str, ...]


@dataclass
class CallNotes:
    """What a hook or feedback call has learned, for its audit record and its metrics."""

    hook_instance: str | None = None
    hook: str | None = None
    user: str | None = None
    patient_id: str | None = None
    fhir_server: str | None = None
    orders: list[str] = field(default_factory=list)
    queries: list[str] = field(default_factory=list)
    observations: list[str] = field(default_factory=list)
    score: int | None = None
    lower: int | None = None
    upper: int | None = None
    status_of_score: str | None = None
    card_uuid: str | None = None
    outcome_text: str | None = None
    #: Resources of another patient, or of none, that were left out.
    foreign: list[str] = field(default_factory=list)
    untied: list[str] = field(default_factory=list)
    feedback: list[FeedbackNote] = field(default_factory=list)


def notes() -> CallNotes:
    """The current call's notes (made on first use)."""
    found = g.get("call_notes")
    if not isinstance(found, CallNotes):
        found = g.call_notes = CallNotes()
    return found


def _service_url(settings: Settings) -> str:
    return (settings.public_base_url or request.host_url).rstrip("/") + "/cds-services"


def install_auditing(
    app: Flask,
    settings: Settings,
    spool: AuditSpool,
    deliverer: AuditDeliverer,
    clock: Callable[[], datetime],
) -> None:
    @app.before_request
    def _start_deliverer() -> None:
        deliverer.ensure_running()  # in this worker process (gunicorn forks after the app is built)

    @app.after_request
    def _audit(response: Response) -> Response:
        if request.endpoint not in (HOOK_ENDPOINT, FEEDBACK_ENDPOINT):
            return response
        try:
            _spool_records(response, settings, spool, clock)
        except Exception as error:  # noqa: BLE001 - whatever failed, the call must not be answered
            # Answered means audited: a call whose record cannot be kept gets no answer (503),
            # and the log says so in one JSON line rather than Flask's plain-text traceback.
            # No traceback: its frames would carry request data into the log.
            log.error(
                "could not spool the audit record; the call is refused",
                extra={"reason": type(error).__name__},
            )
            return outcome_response(503, "The call could not be audited, so it was not answered; retry.")
        return response


def _outcome_text(response: Response, success: str) -> str:
    """What the record says of the call's end: the OperationOutcome's diagnostics for a refusal."""
    if response.status_code < 400:
        return success
    return f"HTTP {response.status_code}: {first_diagnostics(response.get_json(silent=True))}".strip()


def _target(settings: Settings, facts: CallNotes) -> str:
    """Empty: the configured audit repository (resolved at delivery). 'ehr': this call's server,
    when it passes the same rules as call-backs (allow-list, https); otherwise the record stays
    in the spool, never sent where the caller pointed."""
    if settings.audit_fhir_url != "ehr":
        return ""
    server = facts.fhir_server
    if isinstance(server, str) and fhir_destinations(settings).allows(server):
        return server
    if server:
        log.warning("the call's fhirServer may not receive audit records; the record stays in the spool")
    return ""


def _spool_records(
    response: Response, settings: Settings, spool: AuditSpool, clock: Callable[[], datetime]
) -> None:
    facts = notes()
    caller = g.get("caller")
    iss, tenant, jti = (caller.iss, caller.tenant, caller.jti) if caller else (None, None, None)
    if caller is not None:
        client = "verified"
    elif settings.auth_mode == "off":
        client = "off"
    else:
        client = "refused" if response.status_code == 401 else "unchecked"
    service_id = (request.view_args or {}).get("service_id", "")
    now = clock()
    if request.endpoint == FEEDBACK_ENDPOINT:
        for item in facts.feedback:
            event = feedback_audit_event(
                FeedbackAuditFacts(
                    card_uuid=item.card,
                    hook_instance=item.hook_instance,
                    service_id=service_id,
                    outcome=item.outcome,
                    outcome_timestamp=item.outcome_timestamp,
                    recorded=now,
                    service_url=_service_url(settings),
                    iss=iss,
                    tenant=tenant,
                    patient_id=item.patient_id,
                    client=client,
                    override_code=item.override_code,
                    override_display=item.override_display,
                    user_comment_given=item.user_comment_given,
                    accepted_suggestions=item.accepted_suggestions,
                )
            )
            spool.put(event, _target(settings, facts))
        if not facts.feedback:
            refused = feedback_call_audit_event(
                FeedbackCallAuditFacts(
                    request_id=str(g.get("request_id") or uuid.uuid4()),
                    service_id=service_id,
                    recorded=now,
                    status=response.status_code,
                    outcome_text=_outcome_text(response, "no feedback item"),
                    service_url=_service_url(settings),
                    iss=iss,
                    tenant=tenant,
                    jti=jti,
                    client=client,
                )
            )
            spool.put(refused, _target(settings, facts))
        return
    hook_instance = facts.hook_instance or f"request-{g.get('request_id') or uuid.uuid4()}"
    if response.status_code >= 400 and not facts.outcome_text:
        facts.outcome_text = _outcome_text(response, "")
    event = hook_audit_event(
        HookAuditFacts(
            hook_instance=hook_instance,
            hook=facts.hook or "unknown",
            service_id=service_id,
            recorded=now,
            status=response.status_code,
            outcome_text=facts.outcome_text or f"HTTP {response.status_code}",
            service_url=_service_url(settings),
            iss=iss,
            tenant=tenant,
            jti=jti,
            user=facts.user,
            patient_id=facts.patient_id,
            orders=tuple(facts.orders),
            observations=tuple(facts.observations),
            queries=tuple(facts.queries),
            card_uuid=facts.card_uuid,
            score=facts.score,
            lower=facts.lower,
            upper=facts.upper,
            status_of_score=facts.status_of_score,
            fhir_base=facts.fhir_server,
            client=client,
            foreign=tuple(facts.foreign),
            untied=tuple(facts.untied),
        )
    )
    spool.put(event, _target(settings, facts))
