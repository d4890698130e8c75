"""One HTTP error type for every app of the project, and the one place an error becomes a response.

An error a FHIR client can meet is a FHIR OperationOutcome
(https://hl7.org/fhir/R4/operationoutcome.html) with its status code; an app that answers a
person renders the same error as a page. Either way, never a stack trace.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Self, TypeVar

from flask import Blueprint, Flask, Response
from werkzeug.exceptions import HTTPException

__all__ = [
    "FHIR_JSON",
    "HttpError",
    "first_diagnostics",
    "install_error_handlers",
    "issue_for",
    "operation_outcome",
    "outcome_response",
    "render_outcome",
    "severity_for",
]

FHIR_JSON = "application/fhir+json"

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


def issue_for(status: int) -> str:
    """The OperationOutcome issue type of an HTTP status, for an error that names none itself."""
    return _ISSUE_BY_STATUS.get(status, "processing")


def severity_for(status: int) -> str:
    """``error`` for a refusal or a passing outage (503), ``fatal`` for any other server failure."""
    return "error" if status < 500 or status == 503 else "fatal"


class HttpError(Exception):
    """An error with its HTTP status and OperationOutcome issue type; its text is safe to show anyone.

    Subclasses name their status and issue on the class line:
    ``class NotFound(HttpError, status=404, issue="not-found")``.
    """

    status = 500
    issue = "exception"

    def __init_subclass__(cls, *, status: int | None = None, issue: str | None = None, **rest: Any) -> None:
        super().__init_subclass__(**rest)
        if status is not None:
            cls.status = status
        if issue is not None:
            cls.issue = issue

    def __init__(
        self,
        diagnostics: str,
        *,
        status: int | None = None,
        issue: str | None = None,
        expression: Sequence[str] | None = None,
    ) -> None:
        super().__init__(diagnostics)
        self.diagnostics = diagnostics
        self.expression = list(expression or ())
        if status is not None:
            self.status = status
        if issue is not None:
            self.issue = issue

    @classmethod
    def from_http(cls, status: int, text: str) -> Self:
        """This family's error for one of Werkzeug's (an unknown URL, a method not allowed)."""
        return cls(text, status=status, issue=issue_for(status))

    @property
    def log_reason(self) -> str:
        """What the log says of the error: its diagnostics (an app whose text may quote data says less)."""
        return self.diagnostics


def operation_outcome(
    diagnostics: str, issue: str = "exception", *, severity: str = "error", expression: Sequence[str] = ()
) -> dict[str, Any]:
    """A one-issue OperationOutcome."""
    entry: dict[str, Any] = {"severity": severity, "code": issue, "diagnostics": diagnostics}
    if expression:
        entry["expression"] = list(expression)
    return {"resourceType": "OperationOutcome", "issue": [entry]}


def outcome_response(
    status: int, diagnostics: str, issue: str | None = None, expression: Sequence[str] | None = None
) -> Response:
    """An OperationOutcome response; the issue type and severity follow the status unless given."""
    outcome = operation_outcome(
        diagnostics, issue or issue_for(status), severity=severity_for(status), expression=expression or ()
    )
    return Response(json.dumps(outcome), status=status, mimetype=FHIR_JSON)


def render_outcome(error: HttpError) -> Response:
    """The OperationOutcome response of an error."""
    return outcome_response(error.status, error.diagnostics, error.issue, error.expression)


def first_diagnostics(outcome: object) -> str:
    """The diagnostics of an OperationOutcome's first issue, or "" when it has none (any JSON is read)."""
    issues = outcome.get("issue") if isinstance(outcome, Mapping) else None
    first = issues[0] if isinstance(issues, list) and issues else None
    text = first.get("diagnostics") if isinstance(first, Mapping) else None
    return text if isinstance(text, str) else ""


E = TypeVar("E", bound=HttpError)


def install_error_handlers(
    target: Flask | Blueprint,
    family: type[E],
    render: Callable[[E], Response],
    *,
    log: logging.Logger,
    unexpected: Callable[[], E] | None,
) -> None:
    """Render ``family``'s errors, Werkzeug's HTTP errors and, given ``unexpected``, any other exception.

    Without ``unexpected``, Flask's own handling stays: it propagates in testing and is a
    Werkzeug 500 (rendered here) otherwise.
    """

    @target.errorhandler(family)
    def _known(error: E) -> Response:
        # A 5xx is ours or a server's behind us to look into; a 4xx is the caller's.
        level = logging.WARNING if error.status >= 500 else logging.INFO
        reason = error.log_reason
        log.log(
            level,
            "request refused (%s): %s",
            error.status,
            reason,
            extra={"status": error.status, "reason": reason},
        )
        return render(error)

    @target.errorhandler(HTTPException)
    def _http_error(error: HTTPException) -> Response:
        status = error.code or 500
        response = render(family.from_http(status, error.description or error.name))
        allow = error.get_response().headers.get("Allow") if status == 405 else None
        if allow:
            # RFC 9110, 15.5.6: a 405 names the methods the resource does allow.
            response.headers["Allow"] = allow
        return response

    if unexpected is not None:

        @target.errorhandler(Exception)
        def _unexpected(error: Exception) -> Response:
            # The trace goes to the log only; the client learns nothing about our internals.
            log.exception("unexpected error", exc_info=error)
            return render(unexpected())
