"""``/auth/authorize`` and ``/auth/token``: the endpoints of the sandbox's authorization server.

The server itself (``sandbox.ehr.oauth``) decides; these views hand it the request, approve as
the sandbox user, and show the patient picker a standalone ``launch/patient`` request needs.
"""

from __future__ import annotations

from authlib.oauth2.rfc6749 import OAuth2Error
from flask import Blueprint, Response, render_template, request

from sandbox.ehr.cors import allow_registered_origin, preflight_response
from sandbox.ehr.display import patient_name
from sandbox.ehr.errors import BadRequest
from sandbox.ehr.state import current_state
from sandbox.ehr.store import LaunchContext

auth_blueprint = Blueprint("auth", __name__)

#: What a browser app may send to the token endpoint.
_CORS_HEADERS = "Authorization, Content-Type"


@auth_blueprint.route("/auth/authorize", methods=["GET", "POST"])
def authorize() -> Response:
    """The authorization endpoint: validate, then approve as the sandbox user (or pick a patient)."""
    state = current_state()
    server = state.oauth
    try:
        grant = server.get_consent_grant(end_user=state.sandbox_user)
    except OAuth2Error as error:
        if error.redirect_uri:
            # The redirect URI was checked against the registration: errors may go back to the app.
            response: Response = server.handle_error_response(None, error)
            return response
        raise BadRequest(
            f"{error.error}: {error.description or 'the authorization request is invalid'}"
        ) from None
    context: LaunchContext = grant.request.smart_context
    if "launch/patient" in grant.request.scope.split() and context.patient is None:
        params = {k: v for k, v in request.values.items() if k != "sandbox_patient"}
        patients = state.patient_choices()
        page = render_template(
            "pick_patient.html",
            params=params,
            patients=patients,
            patient_name=patient_name,
            user=state.sandbox_user,
        )
        return Response(page, mimetype="text/html")
    if context.patient is not None and context.patient == request.values.get("sandbox_patient"):
        state.require_patient(context.patient)  # a standalone pick must name a patient that exists
    approved: Response = server.create_authorization_response(grant_user=state.sandbox_user, grant=grant)
    return approved


# Flask would answer OPTIONS itself, without the CORS headers: the preflight route below does.
@auth_blueprint.route("/auth/token", methods=["POST"], provide_automatic_options=False)
def token() -> Response:
    """The token endpoint (Authlib): code + PKCE verifier (+ client secret) for a token and context."""
    response: Response = current_state().oauth.create_token_response()
    return allow_registered_origin(response, _CORS_HEADERS)


@auth_blueprint.route("/auth/token", methods=["OPTIONS"])
def token_preflight() -> Response:
    return preflight_response("POST", _CORS_HEADERS)
