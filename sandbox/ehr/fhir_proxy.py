"""``{ehr}/fhir``: the EHR's FHIR endpoint, an authenticating, read-only reverse proxy to HAPI.

Every request needs a bearer token issued by the sandbox's authorization server (401 with an
OperationOutcome otherwise). The token's scopes and patient decide what it may read
(``sandbox.ehr.access``); HAPI's absolute URLs in the answer are moved to this endpoint, so
paging links come back through the proxy. ``metadata`` and ``.well-known/smart-configuration``
are public, as SMART App Launch 2.2 requires of discovery.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qs

from flask import Blueprint, Response, jsonify, request

from plumbing.errors import FHIR_JSON
from sandbox.ehr.access import Access, check_request, filter_response, interaction_of
from sandbox.ehr.cors import allow_registered_origin, preflight_response
from sandbox.ehr.errors import SandboxError, Unauthenticated, UpstreamError
from sandbox.ehr.oauth import smart_configuration
from sandbox.ehr.state import FhirLogEntry, current_state
from sandbox.ehr.store import TokenRecord
from sandbox.ehr.upstream import Upstream, rewrite_urls

fhir_blueprint = Blueprint("fhir", __name__, url_prefix="/fhir")


def _fhir_json(body: Any, status: int = 200) -> Response:
    return Response(json.dumps(body), status=status, mimetype=FHIR_JSON)


def _public(response: Response) -> Response:
    # SMART 2.2, CORS: discovery endpoints are readable from any origin.
    response.headers["Access-Control-Allow-Origin"] = "*"
    return response


@fhir_blueprint.get("/.well-known/smart-configuration")
def smart_config() -> Response:
    return _public(jsonify(smart_configuration(current_state().settings)))


@fhir_blueprint.get("/metadata")
def metadata() -> Response:
    """HAPI's CapabilityStatement, pointing at this endpoint and saying it is SMART-protected."""
    state = current_state()
    upstream = state.upstream.request("GET", "metadata", query=request.query_string)
    body = upstream.body
    if upstream.status != 200 or not isinstance(body, dict):
        raise UpstreamError(f"the FHIR server answered {upstream.status} to GET metadata")
    body = rewrite_urls(body, state.upstream.base_url, state.settings.fhir_base_url)
    base = state.settings.public_base_url
    security = {
        "service": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
                        "code": "SMART-on-FHIR",
                    }
                ]
            }
        ],
        "extension": [
            {
                "url": "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris",
                "extension": [
                    {"url": "authorize", "valueUri": f"{base}/auth/authorize"},
                    {"url": "token", "valueUri": f"{base}/auth/token"},
                ],
            }
        ],
    }
    for rest in body.get("rest") or []:
        if isinstance(rest, dict):
            rest["security"] = security
    return _public(_fhir_json(body))


def _bearer_token() -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


def _authenticate(token: str | None) -> TokenRecord:
    if token is None:
        raise Unauthenticated("a bearer token from the sandbox's authorization server is required")
    record = current_state().store.token(token)
    if record is None:
        raise Unauthenticated("the bearer token is unknown, expired or revoked")
    return record


#: What a browser app may send to the FHIR endpoint.
_FHIR_HEADERS = "Authorization, Content-Type, Accept"


@fhir_blueprint.route("", defaults={"path": ""}, methods=["OPTIONS"])
@fhir_blueprint.route("/<path:path>", methods=["OPTIONS"])
def preflight(path: str) -> Response:
    return preflight_response("GET, POST", _FHIR_HEADERS)


_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]


# provide_automatic_options=False: preflight() answers OPTIONS, with the CORS headers.
@fhir_blueprint.route("", defaults={"path": ""}, methods=_METHODS, provide_automatic_options=False)
@fhir_blueprint.route("/<path:path>", methods=_METHODS, provide_automatic_options=False)
def proxy(path: str) -> Response:
    """Authenticate, check scope and compartment, forward to HAPI, filter and rewrite the answer."""
    state = current_state()
    token = _bearer_token()
    record: TokenRecord | None = None
    status = 500
    try:
        record = _authenticate(token)
        response = _forward(state.upstream, record, path)
        status = response.status_code
        return allow_registered_origin(response, _FHIR_HEADERS)
    except SandboxError as error:
        status = error.status
        raise
    finally:
        state.log_fhir_request(
            FhirLogEntry(
                method=request.method,
                path=path,
                query=request.query_string.decode(errors="replace"),
                token=token,
                client_id=record.client_id if record else None,
                status=status,
            )
        )


def _forward(upstream: Upstream, record: TokenRecord, path: str) -> Response:
    state = current_state()
    segments = [s for s in path.split("/") if s]
    params = parse_qs(request.query_string.decode(errors="replace"), keep_blank_values=True)
    body: bytes | None = None
    content_type = None
    if request.method == "POST":
        form = request.get_data()
        for name, values in parse_qs(form.decode(errors="replace"), keep_blank_values=True).items():
            params.setdefault(name, []).extend(values)
        body, content_type = form, "application/x-www-form-urlencoded"
    access = Access.from_scope(record.scope, record.patient)
    interaction = interaction_of(request.method, segments, params)
    check_request(access, interaction, params)
    answer = upstream.request(
        request.method, path, query=request.query_string, body=body, content_type=content_type
    )
    result = answer.body
    if answer.status < 400:
        result = filter_response(access, result)
    result = rewrite_urls(result, state.upstream.base_url, state.settings.fhir_base_url)
    if result is None:
        return Response(status=answer.status)
    return _fhir_json(result, answer.status)
