"""The EHR simulator page and its forms: each form posts, the workspace changes, the page reloads.

No JavaScript is needed: every action is a plain HTML form (post, redirect, get), which keeps the
page easy to drive from a browser test and easy to read for someone debugging a service.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from itertools import groupby
from typing import Any

from flask import Blueprint, Response, jsonify, redirect, render_template, request, session, url_for
from werkzeug.wrappers import Response as Redirect

from sandbox.ehr.actions import (
    accept_suggestions,
    discard_order,
    draft_order,
    fire_hook,
    launch_app,
    open_chart,
    override_card,
)
from sandbox.ehr.display import lab_rows, patient_name
from sandbox.ehr.errors import BadRequest, NotFound
from sandbox.ehr.oauth import openid_configuration
from sandbox.ehr.orders import CATALOGUE, order_label
from sandbox.ehr.state import EhrState, current_state
from sandbox.ehr.store import LaunchContext
from sandbox.ehr.upstream import fhir_id
from sandbox.ehr.workspace import Workspace

pages_blueprint = Blueprint("pages", __name__)

# The EHR's SMART styling (SMART App Launch 2.2, "SMART App Styling"): the same colours as the page.
SMART_STYLE = {
    "color_background": "#f7f7f4",
    "color_error": "#9e2d2d",
    "color_highlight": "#1d5fa8",
    "color_modal_backdrop": "#00000066",
    "color_success": "#2f7a3b",
    "color_text": "#1f2328",
    "dim_border_radius": "4px",
    "dim_font_size": "15px",
    "dim_spacing_size": "16px",
    "font_family_body": "system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif",
    "font_family_heading": "system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif",
}


def _workspace(state: EhrState) -> Workspace:
    workspace = state.workspaces.get_or_create(session.get("workspace"))
    session["workspace"] = workspace.id
    return workspace


@contextmanager
def _desk() -> Iterator[tuple[EhrState, Workspace]]:
    """The EHR and this browser's workspace, held for one action (a double click waits its turn)."""
    state = current_state()
    workspace = _workspace(state)
    with workspace.lock:
        yield state, workspace


def _back() -> Redirect:
    return redirect(url_for("pages.page"), code=303)


def _int(name: str) -> int:
    try:
        return int(request.form[name])
    except (KeyError, ValueError):
        raise BadRequest(f"the form field {name} is missing or not a number") from None


def _card() -> tuple[str, int]:
    """Which card a card form acts on: its hook call (``hookInstance``) and its index there."""
    return request.form.get("exchange", ""), _int("card")


@pages_blueprint.get("/")
def page() -> str:
    """The EHR: patient picker, chart with labs, orders, the hook exchanges and their cards."""
    state = current_state()
    workspace = _workspace(state)
    labs = []
    if workspace.patient_id:
        labs = lab_rows(
            state.upstream.search("Observation", f"patient={workspace.patient_id}&_sort=-date&_count=100")
        )
        if state.cds.cached_discovery() is None:
            state.cds.discover()  # discovery first, once; the refresh button fetches it again
    catalogue = [(group, list(entries)) for group, entries in groupby(CATALOGUE, key=lambda e: e.group)]
    return render_template(
        "ehr.html",
        settings=state.settings,
        user=state.sandbox_user,
        patients=state.patient_choices(),
        workspace=workspace,
        patient_label=patient_name(workspace.patient),
        labs=labs,
        catalogue=catalogue,
        discovery=state.cds.cached_discovery(),
        order_label=order_label,
        patient_name=patient_name,
    )


@pages_blueprint.post("/chart")
def chart() -> Redirect:
    with _desk() as (state, workspace):
        open_chart(state, workspace, request.form.get("patient", ""))
    return _back()


@pages_blueprint.post("/orders")
def orders() -> Redirect:
    """The order panel's one form: draft (which also selects), select, discard or sign."""
    action = request.form.get("action", "")
    with _desk() as (state, workspace):
        workspace.prefetch = request.form.get("prefetch") == "on"
        if action == "draft":
            draft = draft_order(state, workspace, request.form.get("medication", ""))
            # Choosing a drug from the catalogue is the selection: order-select fires at once.
            fire_hook(state, workspace, "order-select", [draft["id"]])
        elif action.startswith("select:"):
            fire_hook(state, workspace, "order-select", [action.removeprefix("select:")])
        elif action.startswith("discard:"):
            discard_order(workspace, action.removeprefix("discard:"))
        elif action == "sign":
            fire_hook(state, workspace, "order-sign", [])
        elif action != "prefetch":
            raise BadRequest(f"unknown order action {action!r}")
    return _back()


@pages_blueprint.post("/cards/accept")
def accept() -> Redirect:
    hook, card = _card()
    chosen = [int(v) for v in request.form.getlist("suggestion") if v.isdigit()]
    with _desk() as (state, workspace):
        accept_suggestions(state, workspace, hook_instance=hook, card_index=card, chosen=chosen)
    return _back()


@pages_blueprint.post("/cards/override")
def override() -> Redirect:
    hook, card = _card()
    reason_field = request.form.get("reason", "")
    reason = int(reason_field) if reason_field.isdigit() else None
    comment = request.form.get("comment", "")
    with _desk() as (state, workspace):
        override_card(state, workspace, hook_instance=hook, card_index=card, reason=reason, comment=comment)
    return _back()


@pages_blueprint.post("/cards/launch")
def launch() -> Redirect:
    hook, card = _card()
    link = _int("link")
    deny = request.form.get("deny_scopes", "").split()
    with _desk() as (state, workspace):
        launch_app(state, workspace, hook_instance=hook, card_index=card, link_index=link, deny_scopes=deny)
    return _back()


@pages_blueprint.post("/app/close")
def close_app() -> Redirect:
    workspace = _workspace(current_state())
    workspace.app = None
    return _back()


@pages_blueprint.post("/discovery/refresh")
def refresh_discovery() -> Redirect:
    current_state().cds.discover(refresh=True)
    return _back()


@pages_blueprint.get("/.well-known/jwks.json")
def jwks() -> Response:
    """The EHR's public keys: CDS Hooks client JWTs and id tokens are verified against these."""
    response = jsonify(current_state().keys.jwks())
    response.headers["Access-Control-Allow-Origin"] = "*"
    return response


@pages_blueprint.get("/.well-known/openid-configuration")
def openid_config() -> Response:
    response = jsonify(openid_configuration(current_state().settings))
    response.headers["Access-Control-Allow-Origin"] = "*"
    return response


@pages_blueprint.get("/smart-style.json")
def smart_style() -> Response:
    response = jsonify(SMART_STYLE)
    response.headers["Access-Control-Allow-Origin"] = "*"
    return response


# Test hooks, on only with the ``testing`` setting: what the proxy saw, and launches without a UI.
testing_blueprint = Blueprint("testing", __name__, url_prefix="/_testing")


@testing_blueprint.before_request
def _only_when_testing() -> None:
    if not current_state().settings.testing:
        raise NotFound("the testing endpoints are off (setting testing)")


@testing_blueprint.get("/fhir-requests")
def fhir_requests() -> Response:
    """Every request the FHIR proxy received, with the bearer token it carried."""
    return jsonify([asdict(entry) for entry in current_state().fhir_log()])


@testing_blueprint.delete("/fhir-requests")
def clear_fhir_requests() -> Response:
    current_state().clear_fhir_log()
    return Response(status=204)


@testing_blueprint.post("/launch")
def mint_launch() -> Response:
    """A launch id as a card link would mint one: JSON {patient, encounter?, appContext?, ...}."""
    state = current_state()
    data: Any = request.get_json(silent=True)
    if not isinstance(data, dict) or not isinstance(data.get("patient"), str):
        raise BadRequest("send a JSON object with at least a patient id")
    fhir_context = data.get("fhirContext") or []
    if not isinstance(fhir_context, list) or not all(isinstance(item, dict) for item in fhir_context):
        raise BadRequest("fhirContext is a list of objects")
    context = LaunchContext(
        patient=fhir_id(data["patient"]),
        encounter=fhir_id(data["encounter"]) if data.get("encounter") else None,
        user=state.settings.user_id,
        app_context=data.get("appContext") if isinstance(data.get("appContext"), str) else None,
        fhir_context=tuple(fhir_context),
        deny_scopes=tuple(str(s) for s in data.get("deny_scopes") or []),
        intent=data.get("intent") if isinstance(data.get("intent"), str) else None,
    )
    launch_id = state.store.mint_launch(context, state.settings.launch_ttl)
    return jsonify({"launch": launch_id, "iss": state.settings.fhir_base_url})
