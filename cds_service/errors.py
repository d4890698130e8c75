"""The service's one exception family, and the single place it becomes an HTTP response.

Every error a client sees is a FHIR OperationOutcome
(https://hl7.org/fhir/R4/operationoutcome.html) with a status code: never a stack trace.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from flask import Flask, Response
from werkzeug.exceptions import HTTPException

log = logging.getLogger("ichis.cds")

#: https://hl7.org/fhir/R4/valueset-issue-type.html codes by HTTP status, for generic errors.
_ISSUE_BY_STATUS = {
    400: "invalid",
    401: "login",
    403: "forbidden",
    404: "not-found",
    405: "not-supported",
    409: "conflict",
    412: "incomplete",
    413: "too-costly",
    415: "not-supported",
    422: "processing",
    429: "throttled",
    500: "exception",
    503: "transient",
}


class CdsError(Exception):
    """An error with the HTTP status and OperationOutcome issue it maps to."""

    status = 500
    issue = "exception"

    def __init__(self, diagnostics: str, *, expression: list[str] | None = None) -> None:
        super().__init__(diagnostics)
        self.diagnostics = diagnostics
        self.expression = expression or []


class BadRequest(CdsError):
    """The request body is not a valid CDS Hooks request (400)."""

    status = 400
    issue = "invalid"


class UnknownService(CdsError):
    status = 404
    issue = "not-found"


class DataUnavailable(CdsError):
    """Data the service needs is neither prefetched nor retrievable (412, CDS Hooks 2.0.1)."""

    status = 412
    issue = "incomplete"


class UnsupportedMediaType(CdsError):
    status = 415
    issue = "not-supported"


def operation_outcome(
    status: int, diagnostics: str, issue: str | None = None, expression: list[str] | None = None
) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "severity": "error" if status < 500 or status == 503 else "fatal",
        "code": issue or _ISSUE_BY_STATUS.get(status, "processing"),
        "diagnostics": diagnostics,
    }
    if expression:
        entry["expression"] = expression
    return {"resourceType": "OperationOutcome", "issue": [entry]}


def outcome_response(
    status: int, diagnostics: str, issue: str | None = None, expression: list[str] | None = None
) -> Response:
    body = json.dumps(operation_outcome(status, diagnostics, issue, expression))
    return Response(body, status=status, mimetype="application/fhir+json")


def install_error_handlers(app: Flask) -> None:
    """Map our errors, Werkzeug's HTTP errors and anything unexpected to OperationOutcomes."""

    @app.errorhandler(CdsError)
    def _cds_error(error: CdsError) -> Response:
        log.info("request refused", extra={"status": error.status, "reason": error.diagnostics})
        return outcome_response(error.status, error.diagnostics, error.issue, error.expression)

    @app.errorhandler(HTTPException)
    def _http_error(error: HTTPException) -> Response:
        status = error.code or 500
        response = outcome_response(status, error.description or error.name)
        if status == 405 and error.get_response().headers.get("Allow"):
            response.headers["Allow"] = error.get_response().headers["Allow"]
        return response

    @app.errorhandler(Exception)
    def _unexpected(error: Exception) -> Response:
        # The trace goes to the log only; the client learns nothing about our internals.
        log.exception("unexpected error", exc_info=error)
        return outcome_response(500, "The service failed to process the request; it has been logged.")
