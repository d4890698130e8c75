"""What the clinician does at a workspace: open a chart, draft orders, fire hooks, act on cards.

Each action is a function of (state, workspace, what was clicked), so the views only parse forms
and redirect back to the page. CDS Hooks 2.0.1 decides what a call, a feedback item and a SMART
launch from a card carry.
"""

from __future__ import annotations

import secrets
import uuid
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from sandbox.ehr.access import Access
from sandbox.ehr.cards import CardView, read_cards
from sandbox.ehr.cds_client import redacted
from sandbox.ehr.errors import BadRequest
from sandbox.ehr.orders import BY_KEY, draft_medication_request
from sandbox.ehr.prefetch import PrefetchNote, fill_prefetch
from sandbox.ehr.state import EhrState
from sandbox.ehr.store import LaunchContext, TokenRecord
from sandbox.ehr.workspace import AppPane, CardState, Exchange, Workspace

HOOKS = ("order-select", "order-sign")


def utc_timestamp() -> str:
    """Now as RFC 3339 in UTC (``2021-12-11T10:05:31.123Z``), as CDS Hooks feedback wants it."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def open_chart(state: EhrState, workspace: Workspace, patient_id: str) -> None:
    """Open a patient's chart: a fresh desk (no drafts, no cards), with their latest encounter."""
    patient = state.require_patient(patient_id)
    encounters = state.upstream.search("Encounter", f"patient={patient_id}&_sort=-date&_count=1")
    workspace.patient_id = patient_id
    workspace.patient = patient
    workspace.encounter_id = str(encounters[0]["id"]) if encounters and encounters[0].get("id") else None
    workspace.drafts = []
    workspace.exchanges = []
    workspace.hook_note = None
    workspace.app = None


def _require_chart(workspace: Workspace) -> str:
    if workspace.patient_id is None:
        raise BadRequest("open a patient's chart first")
    return workspace.patient_id


def draft_order(state: EhrState, workspace: Workspace, catalogue_key: str) -> dict[str, Any]:
    """Add a draft MedicationRequest for a catalogue entry."""
    patient_id = _require_chart(workspace)
    entry = BY_KEY.get(catalogue_key)
    if entry is None:
        raise BadRequest(f"{catalogue_key!r} is not in the order catalogue")
    draft = draft_medication_request(
        entry, patient_id=patient_id, encounter_id=workspace.encounter_id, user_id=state.settings.user_id
    )
    workspace.drafts.append(draft)
    return draft


def discard_order(workspace: Workspace, order_id: str) -> None:
    workspace.drafts = [d for d in workspace.drafts if d.get("id") != order_id]


def hook_context(state: EhrState, workspace: Workspace, hook: str, selections: list[str]) -> dict[str, Any]:
    """The ``context`` of order-select or order-sign, as the CDS Hooks hook library defines them."""
    context: dict[str, Any] = {"userId": state.settings.user_id, "patientId": _require_chart(workspace)}
    if workspace.encounter_id:
        context["encounterId"] = workspace.encounter_id
    if hook == "order-select":
        context["selections"] = [f"MedicationRequest/{s}" for s in selections]
    context["draftOrders"] = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"resource": draft} for draft in workspace.drafts],
    }
    return context


def _mint_cds_token(state: EhrState, patient_id: str) -> TokenRecord:
    """A fresh, short-lived token for the CDS service's own FHIR calls (``fhirAuthorization``)."""
    settings = state.settings
    record = TokenRecord(
        access_token=secrets.token_urlsafe(32),
        client_id=settings.cds_client_id,
        scope=settings.cds_scope,
        patient=patient_id,
        encounter=None,
        user=settings.user_id,
        expires_at=state.store.clock() + settings.cds_token_ttl,
    )
    state.store.save_token(record)
    return record


def fire_hook(state: EhrState, workspace: Workspace, hook: str, selections: list[str]) -> None:
    """Call every service discovered for ``hook``; its new cards replace the ones on screen.

    CDS Hooks 2.0.1, "Update stale guidance": a new call to a service replaces its earlier cards.
    """
    if hook not in HOOKS:
        raise BadRequest(f"the sandbox fires order-select and order-sign, not {hook!r}")
    patient_id = _require_chart(workspace)
    if not workspace.drafts:
        raise BadRequest("draft an order first")
    known = {d.get("id") for d in workspace.drafts}
    if hook == "order-select" and (not selections or not set(selections) <= known):
        raise BadRequest("select one of the draft orders")
    settings = state.settings
    discovery = state.cds.discover()
    services = [s for s in discovery.services if s.get("hook") == hook]
    workspace.app = None
    workspace.exchanges = []
    if not discovery.record.ok:
        workspace.hook_note = "discovery failed, so no service was called: see the discovery panel"
        return
    workspace.hook_note = None if services else f"no service in discovery listens to {hook}"
    context = hook_context(state, workspace, hook, selections)
    for service in services:
        token = _mint_cds_token(state, patient_id)
        body: dict[str, Any] = {
            "hook": hook,
            "hookInstance": str(uuid.uuid4()),
            "fhirServer": settings.fhir_base_url,
            "fhirAuthorization": {
                "access_token": token.access_token,
                "token_type": "Bearer",
                "expires_in": settings.cds_token_ttl,
                "scope": token.scope,
                "subject": settings.cds_client_id,
                "patient": patient_id,
            },
            "context": context,
        }
        notes: list[PrefetchNote] = []
        templates = service.get("prefetch")
        if workspace.prefetch and isinstance(templates, dict) and templates:
            result = fill_prefetch(
                templates,
                context,
                Access.from_scope(token.scope, patient_id),
                state.upstream,
                settings.fhir_base_url,
            )
            body["prefetch"] = result.values
            notes = result.notes
        record = state.cds.send("POST", state.cds.service_url(service["id"]), body, shown_body=redacted(body))
        if settings.revoke_cds_tokens:
            # CDS Hooks 2.0.1: clients SHOULD revoke the token once the call has been answered.
            state.store.revoke(token.access_token)
        exchange = Exchange(
            service_id=service["id"],
            service_title=str(service.get("title") or service["id"]),
            hook=hook,
            hook_instance=body["hookInstance"],
            record=record,
            prefetch_sent="prefetch" in body,
            prefetch_notes=notes,
        )
        if record.ok:
            exchange.cards, exchange.response_problems = read_cards(record.response_body)
        workspace.exchanges.append(exchange)


def _card(workspace: Workspace, hook_instance: str, card_index: int) -> tuple[Exchange, CardView, CardState]:
    exchange = workspace.exchange(hook_instance)
    card = next((c for c in exchange.cards if c.index == card_index), None)
    if card is None:
        raise BadRequest("there is no such card")
    card_state = exchange.card_state(card_index)
    if card_state.outcome is not None:
        raise BadRequest(f"this card was already {card_state.outcome}")
    return exchange, card, card_state


def _send_feedback(state: EhrState, exchange: Exchange, card_state: CardState, item: dict[str, Any]) -> None:
    url = f"{state.cds.service_url(exchange.service_id)}/feedback"
    card_state.feedback = state.cds.send("POST", url, {"feedback": [item]})


def _apply_actions(workspace: Workspace, actions: list[dict[str, Any]]) -> list[str]:
    """Apply a suggestion's actions to the draft orders; the sandbox holds only MedicationRequests."""
    notes = []
    for action in actions:
        kind = action.get("type")
        resource = action.get("resource") if isinstance(action.get("resource"), dict) else None
        target = action.get("resourceId") or (
            action.get("resource") if isinstance(action.get("resource"), str) else None
        )
        if kind == "create" and resource and resource.get("resourceType") == "MedicationRequest":
            draft = {
                **resource,
                "id": resource.get("id") or str(uuid.uuid4()),
                "status": resource.get("status", "draft"),
            }
            workspace.drafts.append(draft)
            notes.append(f"created draft MedicationRequest/{draft['id']}")
        elif kind == "update" and resource and resource.get("resourceType") == "MedicationRequest":
            ids = [d.get("id") for d in workspace.drafts]
            if resource.get("id") in ids:
                workspace.drafts[ids.index(resource.get("id"))] = dict(resource)
                notes.append(f"updated draft MedicationRequest/{resource.get('id')}")
            else:
                notes.append(f"not applied: no draft MedicationRequest/{resource.get('id')} to update")
        elif kind == "delete" and isinstance(target, str) and target.startswith("MedicationRequest/"):
            before = len(workspace.drafts)
            discard_order(workspace, target.split("/", 1)[1])
            notes.append(
                f"removed draft {target}"
                if len(workspace.drafts) < before
                else f"not applied: no draft {target}"
            )
        else:
            what = resource.get("resourceType") if resource else target
            notes.append(
                f"not applied ({kind} of {what}): the sandbox applies MedicationRequest actions to drafts"
            )
    return notes


def accept_suggestions(
    state: EhrState, workspace: Workspace, *, hook_instance: str, card_index: int, chosen: list[int]
) -> None:
    """Accept suggestions (honouring selectionBehavior), apply their actions, send feedback."""
    exchange, card, card_state = _card(workspace, hook_instance, card_index)
    by_index = {s.index: s for s in card.suggestions}
    if not chosen or not set(chosen) <= set(by_index):
        raise BadRequest("choose a suggestion to accept")
    if card.selection_behavior == "at-most-one" and len(chosen) > 1:
        raise BadRequest("this card allows at most one suggestion")
    accepted = [by_index[i] for i in dict.fromkeys(chosen)]
    card_state.outcome = "accepted"
    card_state.accepted = [s.index for s in accepted]
    for suggestion in accepted:
        card_state.notes.extend(_apply_actions(workspace, suggestion.actions))
    with_uuid = [s for s in accepted if s.uuid]
    # CDS Hooks 2.0.1: without a card uuid or a suggestion uuid, the client sends no feedback.
    if card.uuid is None or not with_uuid:
        card_state.notes.append("no feedback sent: the card or its suggestions have no uuid")
        return
    item = {
        "card": card.uuid,
        "outcome": "accepted",
        "acceptedSuggestions": [{"id": s.uuid} for s in with_uuid],
        "outcomeTimestamp": utc_timestamp(),
    }
    _send_feedback(state, exchange, card_state, item)


def override_card(
    state: EhrState,
    workspace: Workspace,
    *,
    hook_instance: str,
    card_index: int,
    reason: int | None,
    comment: str,
) -> None:
    """Dismiss a card, with an override reason and comment when given, and send feedback."""
    exchange, card, card_state = _card(workspace, hook_instance, card_index)
    override: dict[str, Any] = {}
    if reason is not None:
        if not 0 <= reason < len(card.override_reasons):
            raise BadRequest("there is no such override reason")
        override["reason"] = card.override_reasons[reason]
    if comment.strip():
        override["userComment"] = comment.strip()
    card_state.outcome = "overridden"
    if card.uuid is None:
        card_state.notes.append("no feedback sent: the card has no uuid")
        return
    item: dict[str, Any] = {"card": card.uuid, "outcome": "overridden", "outcomeTimestamp": utc_timestamp()}
    if override:
        item["overrideReason"] = override
    _send_feedback(state, exchange, card_state, item)


def with_launch_parameters(url: str, iss: str, launch: str) -> str:
    """The app's launch URL with ``iss`` and ``launch`` added to whatever query it already has."""
    parts = urlsplit(url)
    query = [*parse_qsl(parts.query, keep_blank_values=True), ("iss", iss), ("launch", launch)]
    return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(query), parts.fragment))


def launch_app(
    state: EhrState,
    workspace: Workspace,
    *,
    hook_instance: str,
    card_index: int,
    link_index: int,
    deny_scopes: list[str],
) -> None:
    """Launch a card's SMART link: mint a launch id bound to this chart and open the app pane."""
    exchange = workspace.exchange(hook_instance)
    card = next((c for c in exchange.cards if c.index == card_index), None)
    link = next((lk for lk in card.links if lk.index == link_index), None) if card else None
    if link is None or link.type != "smart" or not link.usable:
        raise BadRequest("there is no such SMART link on this card")
    context = LaunchContext(
        patient=_require_chart(workspace),
        encounter=workspace.encounter_id,
        user=state.settings.user_id,
        app_context=link.app_context,
        deny_scopes=tuple(deny_scopes),
    )
    launch_id = state.store.mint_launch(context, state.settings.launch_ttl)
    workspace.app = AppPane(
        link.label, with_launch_parameters(link.url, state.settings.fhir_base_url, launch_id)
    )
