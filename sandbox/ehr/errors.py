"""The sandbox EHR's one exception family, and the one place that turns it into HTTP.

Under ``/fhir`` an error is a FHIR OperationOutcome (that is what a FHIR client expects to parse);
at the token endpoint and under ``/_testing`` it is a JSON object; everywhere else (the
authorization endpoint included) it is an HTML page for the person at the browser. No stack trace
or token ever reaches a response.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response, jsonify, render_template, request
from werkzeug.exceptions import HTTPException

from fhir_mappings.config import ConfigurationError

log = logging.getLogger(__name__)


class SandboxError(Exception):
    """Something the sandbox EHR refuses or cannot do; ``detail`` is safe to show anyone."""

    status_code = 500
    code = "exception"  # FHIR issue type (http://hl7.org/fhir/issue-type)

    def __init__(self, detail: str, *, status_code: int | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        if status_code is not None:
            self.status_code = status_code


class SettingsError(SandboxError, ConfigurationError):
    """A setting is missing or malformed; raised at start-up, before any request. It is the
    project's ConfigurationError, which the settings reader raises for an unknown name."""

    code = "invalid"


class BadRequest(SandboxError):
    """The request itself is malformed or refers to something that does not exist."""

    status_code = 400
    code = "invalid"


class NotFound(SandboxError):
    """The thing asked for does not exist (or is switched off, like the testing endpoints)."""

    status_code = 404
    code = "not-found"


class Unauthenticated(SandboxError):
    """No bearer token, or one this sandbox did not issue or that has expired or been revoked."""

    status_code = 401
    code = "login"


class Forbidden(SandboxError):
    """A valid token that does not permit this interaction (scope or patient compartment)."""

    status_code = 403
    code = "forbidden"


class NotSupported(SandboxError):
    """An interaction the sandbox's FHIR endpoint does not offer (writes, operations)."""

    status_code = 405
    code = "not-supported"


class UpstreamError(SandboxError):
    """The HAPI FHIR server behind the sandbox could not be reached or answered nonsense."""

    status_code = 502
    code = "transient"


def operation_outcome(detail: str, code: str = "exception", severity: str = "error") -> dict[str, Any]:
    """A one-issue OperationOutcome (https://hl7.org/fhir/R4/operationoutcome.html)."""
    return {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": severity, "code": code, "diagnostics": detail}],
    }


def _respond(status: int, detail: str, code: str) -> Response:
    path = request.path
    if path == "/fhir" or path.startswith("/fhir/"):
        response = jsonify(operation_outcome(detail, code))
        response.mimetype = "application/fhir+json"
        if status == 401:
            # RFC 6750 section 3: a resource server names the scheme it wants.
            response.headers["WWW-Authenticate"] = 'Bearer realm="ichis-sandbox", error="invalid_token"'
    elif path.startswith(("/auth/token", "/_testing/", "/.well-known/")):
        response = jsonify({"error": code, "error_description": detail})
    else:
        response = Response(render_template("error.html", status=status, detail=detail), mimetype="text/html")
    response.status_code = status
    return response


def register_error_handlers(app: Flask) -> None:
    """Turn every SandboxError (and Werkzeug's own HTTP errors) into a response, in one place."""

    @app.errorhandler(SandboxError)
    def _sandbox_error(error: SandboxError) -> Response:
        if error.status_code >= 500:
            log.warning("%s %s failed: %s", request.method, request.path, error.detail)
        return _respond(error.status_code, error.detail, error.code)

    @app.errorhandler(HTTPException)
    def _http_error(error: HTTPException) -> Response:
        status = error.code or 500
        return _respond(status, error.description or error.name, "not-found" if status == 404 else "invalid")
