"""CORS for the browser apps registered with the sandbox (SMART App Launch 2.2, "CORS").

The token endpoint and the FHIR endpoint are read by apps running in a browser on another
origin; they may, when that origin is one a registered redirect URI names.
"""

from __future__ import annotations

from flask import Response, request

from sandbox.ehr.state import current_state


def allow_registered_origin(response: Response, allow_headers: str) -> Response:
    """``response`` readable from the request's origin when a registered app runs there."""
    origin = request.headers.get("Origin")
    if origin and current_state().is_registered_origin(origin):
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Access-Control-Allow-Headers"] = allow_headers
        response.headers["Vary"] = "Origin"
    return response


def preflight_response(methods: str, allow_headers: str) -> Response:
    """The answer to a CORS preflight (``OPTIONS``) for an endpoint that takes ``methods``."""
    response = Response(status=204)
    response.headers["Access-Control-Allow-Methods"] = methods
    return allow_registered_origin(response, allow_headers)
