"""HTTP endpoints of the CDS service: discovery, hooks and feedback. Parse, call, serialise."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from flask import Blueprint, Response, g, request

from cds_service.auditing import FeedbackNote, notes
from cds_service.cards import CardContext, build_card
from cds_service.data import resolve
from cds_service.declarations import BY_ID
from cds_service.errors import BadRequest, UnknownService, UnsupportedMediaType
from cds_service.hook_request import ORDER_HOOKS, parse_hook_body, parse_json_body
from cds_service.settings import Runtime
from cds_service.store import FeedbackItem
from cds_service.wiring import current
from fhir_mappings.assessment import Assessment, assess
from fhir_mappings.medications import ORDER_TYPES, find_checkpoint_orders
from fhir_mappings.scope import Scope, assess_scope
from fhir_mappings.subjects import CallPatient, SubjectCheck, for_patient

log = logging.getLogger("ichis.cds")
blueprint = Blueprint("cds", __name__)

JSON = "application/json"


def _runtime() -> Runtime:
    return current().runtime


def _json(payload: Mapping[str, Any], status: int = 200) -> Response:
    return Response(json.dumps(payload, ensure_ascii=False), status=status, mimetype=JSON)


def _raw_body() -> bytes:
    mimetype = request.mimetype
    if mimetype and mimetype not in (JSON, "application/fhir+json") and not mimetype.endswith("+json"):
        raise UnsupportedMediaType(f"expected a JSON body (Content-Type: {JSON}), got {mimetype}")
    return request.get_data(cache=False)


def _body() -> Any:
    return parse_json_body(_raw_body(), _runtime().settings.max_json_depth)


def _base_url() -> str:
    configured = _runtime().settings.public_base_url
    return (configured or request.host_url).rstrip("/")


@blueprint.get("/cds-services")
def list_services() -> Response:
    """CDS Hooks discovery, generated from the service declarations."""
    return _json(_runtime().discovery)


@blueprint.post("/cds-services/<service_id>")
def call_service(service_id: str) -> Response:
    declaration = BY_ID.get(service_id)
    if declaration is None:
        raise UnknownService(f"no CDS service with id '{service_id}'")
    hook = parse_hook_body(_raw_body(), _runtime().settings.max_json_depth)
    g.hook_instance = hook.hook_instance
    call = notes()
    call.hook_instance, call.hook, call.user = hook.hook_instance, hook.hook, hook.user_id
    call.patient_id, call.fhir_server = hook.patient_id, hook.fhir_server
    if hook.hook not in ORDER_HOOKS:
        raise BadRequest(
            f"service '{service_id}' answers the order-select and order-sign hooks, not '{hook.hook}'",
            expression=["hook"],
        )
    runtime = _runtime()
    # Relative references in the request are the EHR's: absolute ones must be on its server.
    try:
        patient = CallPatient.parse(hook.patient_id, hook.fhir_server)
    except ValueError:
        raise BadRequest("context.patientId must be a FHIR id", expression=["context.patientId"]) from None
    _left_out("draft order", for_patient(hook.draft_orders, patient, ORDER_TYPES))
    only = hook.selections if hook.hook == "order-select" else None
    orders = find_checkpoint_orders(hook.draft_orders, runtime.drugs, only=only, patient=patient)
    call.orders = list(dict.fromkeys(o.order for o in orders))
    if not orders:
        call.outcome_text = "no checkpoint-inhibitor order: no card"
        log.info("no checkpoint-inhibitor order", extra={"cards": 0})
        return _json({"cards": []})
    data = resolve(hook, runtime.templates, current().http, runtime.settings)
    call.queries = list(data.queries.values())
    at = current().clock()
    assessment = assess(data.entries("labs"), at, runtime.mapping, patient=patient)
    _left_out("result", assessment.subjects)
    conditions = data.entries("conditions")
    _left_out("condition", for_patient(conditions, patient, frozenset({"Condition"})))
    scope = assess_scope(conditions, runtime.diagnoses, patient=patient)
    result = assessment.result
    call.observations = _observations_used(assessment)
    call.score, call.lower, call.upper = result.score, result.lower, result.upper
    call.status_of_score = result.status.value
    if scope.scope is not Scope.NSCLC and runtime.settings.scope_policy == "suppress":
        call.outcome_text = "outside the derivation population: card suppressed by policy"
        call.status_of_score = None
        log.info("outside the derivation population: no card", extra={"cards": 0})
        return _json({"cards": []})
    launch = runtime.settings.smart_launch_url
    context = CardContext(
        hook_instance=hook.hook_instance,
        service_id=service_id,
        patient_id=hook.patient_id,
        orders=orders,
        scope=scope,
        launch_url=launch if "://" in launch else _base_url() + launch,
        source_url=runtime.settings.source_url,
        at=at,
    )
    card = build_card(assessment, context, runtime.mapping.lookback.days)
    current().store.record_card(
        card_uuid=card["uuid"],
        service_id=service_id,
        hook=hook.hook,
        hook_instance=hook.hook_instance,
        patient_id=hook.patient_id,
        summary=card["summary"],
        score={
            "ichis": result.score,
            "status": result.status.value,
            "lower": result.lower,
            "upper": result.upper,
        },
        issued_at=at.isoformat(),
    )
    call.card_uuid, call.outcome_text = card["uuid"], "card issued"
    log.info(
        "card issued",
        extra={"cards": 1, "prefetched": data.prefetched, "fetched": data.fetched},
    )
    return _json({"cards": [card]})


def _left_out(noun: str, check: SubjectCheck) -> None:
    """Resources of another patient (or of none) in what the EHR sent: never used, logged by id
    (never a value) with the hookInstance, and named in the call's audit record."""
    if not check.foreign and not check.untied:
        return
    log.warning(
        "%s(s) of another patient or without a subject were ignored",
        noun,
        extra={
            "hookInstance": g.get("hook_instance"),
            "other_patient": list(check.foreign),
            "no_subject": list(check.untied),
        },
    )
    call = notes()
    call.foreign += check.foreign
    call.untied += check.untied


def _observations_used(assessment: Assessment) -> list[str]:
    """References of every Observation the score read, derived inputs included."""
    refs: list[str] = []
    for part in assessment.result.parts.values():
        if part.measurement is not None:
            refs.append(part.measurement.source.reference)
            refs.extend(source.reference for source in part.measurement.derived_from)
    return list(dict.fromkeys(refs))


def _feedback_items(document: Any) -> list[FeedbackItem]:
    if not isinstance(document, Mapping) or not isinstance(document.get("feedback"), list):
        raise BadRequest("the body must be an object with a 'feedback' array", expression=["feedback"])
    items = []
    for position, raw in enumerate(document["feedback"]):
        where = f"feedback[{position}]"
        if not isinstance(raw, Mapping):
            raise BadRequest(f"{where} must be an object", expression=[where])
        card, outcome, stamp = raw.get("card"), raw.get("outcome"), raw.get("outcomeTimestamp")
        if not isinstance(card, str) or not card:
            raise BadRequest(f"{where}.card must be the card's uuid", expression=[f"{where}.card"])
        if outcome not in ("accepted", "overridden"):
            raise BadRequest(
                f"{where}.outcome must be accepted or overridden", expression=[f"{where}.outcome"]
            )
        if not isinstance(stamp, str) or not _is_timestamp(stamp):
            raise BadRequest(
                f"{where}.outcomeTimestamp must be an ISO 8601 time", expression=[f"{where}.outcomeTimestamp"]
            )
        accepted = raw.get("acceptedSuggestions") or []
        if not isinstance(accepted, list) or not all(
            isinstance(a, Mapping) and isinstance(a.get("id"), str) for a in accepted
        ):
            raise BadRequest(
                f"{where}.acceptedSuggestions must be a list of {{id}}",
                expression=[f"{where}.acceptedSuggestions"],
            )
        if outcome == "accepted" and not accepted:
            raise BadRequest(
                f"{where}: an accepted outcome needs acceptedSuggestions",
                expression=[f"{where}.acceptedSuggestions"],
            )
        reason = raw.get("overrideReason")
        if reason is not None and not isinstance(reason, Mapping):
            raise BadRequest(
                f"{where}.overrideReason must be an object", expression=[f"{where}.overrideReason"]
            )
        items.append(FeedbackItem(card, outcome, stamp, tuple(a["id"] for a in accepted), reason))
    return items


def _is_timestamp(text: str) -> bool:
    try:
        datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return False
    return True


@blueprint.post("/cds-services/<service_id>/feedback")
def feedback(service_id: str) -> Response:
    if service_id not in BY_ID:
        raise UnknownService(f"no CDS service with id '{service_id}'")
    items = _feedback_items(_body())
    store = current().store
    # The service's one clock (injected by create_app), as for the hook's order time.
    stored, duplicates = store.record_feedback(service_id, items, current().clock().isoformat())
    for item in items:
        issued = store.card(item.card) or {}
        reason = item.override_reason or {}
        raw_coding = reason.get("reason")
        coding: Mapping[str, Any] = raw_coding if isinstance(raw_coding, Mapping) else {}
        code, display = coding.get("code"), coding.get("display")
        notes().feedback.append(
            FeedbackNote(
                card=item.card,
                outcome=item.outcome,
                outcome_timestamp=item.outcome_timestamp,
                hook_instance=issued.get("hook_instance"),
                patient_id=issued.get("patient_id"),
                override_code=code if isinstance(code, str) else None,
                override_display=display if isinstance(display, str) else None,
                user_comment_given=bool(reason.get("userComment")),
                accepted_suggestions=tuple(item.accepted_suggestions),
            )
        )
    log.info("feedback", extra={"stored": stored, "duplicates": duplicates})
    return _json({"received": len(items), "stored": stored, "duplicates": duplicates})
