"""The service's one exception family, and the single place it becomes an HTTP response.

Every error a client sees is a FHIR OperationOutcome
(https://hl7.org/fhir/R4/operationoutcome.html) with a status code: never a stack trace. The
type and the handler are the project's shared ones (``plumbing.errors``).
"""

from __future__ import annotations

import logging

from flask import Flask

from plumbing import errors
from plumbing.errors import HttpError, outcome_response

__all__ = [
    "BadRequest",
    "CdsError",
    "DataUnavailable",
    "UnknownService",
    "UnsupportedMediaType",
    "install_error_handlers",
    "outcome_response",
]

log = logging.getLogger("ichis.cds")


class CdsError(HttpError):
    """An error with the HTTP status and OperationOutcome issue it maps to."""


class BadRequest(CdsError, status=400, issue="invalid"):
    """The request body is not a valid CDS Hooks request (400)."""


class UnknownService(CdsError, status=404, issue="not-found"):
    """No CDS service has the id in the URL (404)."""


class DataUnavailable(CdsError, status=412, issue="incomplete"):
    """Data the service needs is neither prefetched nor retrievable (412, CDS Hooks 2.0.1)."""


class UnsupportedMediaType(CdsError, status=415, issue="not-supported"):
    """The body is not sent as JSON (415)."""


def install_error_handlers(app: Flask) -> None:
    """Map our errors, Werkzeug's HTTP errors and anything unexpected to OperationOutcomes."""
    errors.install_error_handlers(
        app,
        CdsError,
        errors.render_outcome,
        log=log,
        unexpected=lambda: CdsError("The service failed to process the request; it has been logged."),
    )
