"""The sandbox EHR's one exception family, and how it is rendered where it happens.

Under ``/fhir`` an error is a FHIR OperationOutcome (that is what a FHIR client expects to parse);
at the token endpoint and under ``/_testing`` it is a JSON object; everywhere else (the
authorization endpoint included) it is an HTML page for the person at the browser. No stack trace
or token ever reaches a response. The type and the handler are the project's shared ones
(``plumbing.errors``).
"""

from __future__ import annotations

import logging
from typing import Self

from flask import Flask, Response, jsonify, render_template, request

from fhir_mappings.config import ConfigurationError
from plumbing.errors import FHIR_JSON, HttpError, install_error_handlers, operation_outcome

log = logging.getLogger(__name__)


class SandboxError(HttpError):
    """Something the sandbox EHR refuses or cannot do; ``diagnostics`` is safe to show anyone."""

    @classmethod
    def from_http(cls, status: int, text: str) -> Self:
        """Werkzeug's errors as the sandbox has always typed them: not found, or invalid."""
        return cls(text, status=status, issue="not-found" if status == 404 else "invalid")


class SettingsError(SandboxError, ConfigurationError, issue="invalid"):
    """A setting is missing or malformed; raised at start-up, before any request. It is the
    project's ConfigurationError, which the settings reader raises for an unknown name."""


class BadRequest(SandboxError, status=400, issue="invalid"):
    """The request itself is malformed or refers to something that does not exist."""


class NotFound(SandboxError, status=404, issue="not-found"):
    """The thing asked for does not exist (or is switched off, like the testing endpoints)."""


class Unauthenticated(SandboxError, status=401, issue="login"):
    """No bearer token, or one this sandbox did not issue or that has expired or been revoked."""


class Forbidden(SandboxError, status=403, issue="forbidden"):
    """A valid token that does not permit this interaction (scope or patient compartment)."""


class NotSupported(SandboxError, status=405, issue="not-supported"):
    """An interaction the sandbox's FHIR endpoint does not offer (writes, operations)."""


class UpstreamError(SandboxError, status=502, issue="transient"):
    """The HAPI FHIR server behind the sandbox could not be reached or answered nonsense."""


def _respond(error: SandboxError) -> Response:
    path = request.path
    if path == "/fhir" or path.startswith("/fhir/"):
        # Severity "error" whatever the status: the sandbox's outcomes have always said so.
        response = jsonify(operation_outcome(error.diagnostics, error.issue))
        response.mimetype = FHIR_JSON
        if error.status == 401:
            # RFC 6750 section 3: a resource server names the scheme it wants.
            response.headers["WWW-Authenticate"] = 'Bearer realm="ichis-sandbox", error="invalid_token"'
    elif path.startswith(("/auth/token", "/_testing/", "/.well-known/")):
        response = jsonify({"error": error.issue, "error_description": error.diagnostics})
    else:
        page = render_template("error.html", status=error.status, detail=error.diagnostics)
        response = Response(page, mimetype="text/html")
    response.status_code = error.status
    return response


def register_error_handlers(app: Flask) -> None:
    """Turn every SandboxError (and Werkzeug's own HTTP errors) into a response, in one place."""
    # No handler for other exceptions: under test a sandbox bug then fails the test with its trace
    # (Flask propagates it); served, Flask logs it and its 500 is rendered here.
    install_error_handlers(app, SandboxError, _respond, log=log, unexpected=None)
