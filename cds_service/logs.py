"""Structured logs: one JSON object per line, with the request's id, hookInstance, iss and jti.

Only whitelisted fields leave a record: a token, a JWT, a lab value or a patient name can only
reach the log by being put in a message, and no message of ours carries them.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from flask import Flask, Response, g, has_request_context, request

#: Extra fields a record may carry into the log line.
FIELDS = (
    "request_id", "hookInstance", "iss", "jti", "tenant", "service", "method", "path", "status",
    "duration_ms", "reason", "prefetched", "fetched", "stored", "duplicates", "cards",
    # Resources left out under the subject rule: ids only, never a value.
    "other_patient", "no_subject",
)  # fmt: skip


class RequestContextFilter(logging.Filter):
    """Adds the current request's id, hookInstance and caller to every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        if has_request_context():
            record.request_id = getattr(g, "request_id", None)
            record.hookInstance = getattr(g, "hook_instance", None)
            caller = getattr(g, "caller", None)
            if caller is not None:
                record.iss, record.jti, record.tenant = caller.iss, caller.jti, caller.tenant
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                line[name] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def configure_logging(level: str = "INFO") -> None:
    """JSON lines on stderr for our loggers (called by ``ichis serve``, not by the app factory)."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RequestContextFilter())
    for name in ("ichis", "gunicorn.error"):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(level)
        logger.propagate = False
    # Everything else (Flask's own app logger, libraries) also leaves JSON lines, warnings and up,
    # so no plain-text traceback lands between them.
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)


def install_request_logging(app: Flask) -> None:
    """A request id on every request (honouring X-Request-ID) and one line per request."""
    log = logging.getLogger("ichis.http")

    @app.before_request
    def _start() -> None:
        supplied = request.headers.get("X-Request-ID", "")
        g.request_id = supplied if 0 < len(supplied) <= 64 and supplied.isprintable() else str(uuid.uuid4())
        g.started = time.perf_counter()

    @app.after_request
    def _finish(response: Response) -> Response:
        response.headers["X-Request-ID"] = g.get("request_id", "")
        started = g.get("started")
        duration = round((time.perf_counter() - started) * 1000, 2) if started else None
        log.info(
            "request",
            extra={
                "method": request.method,
                "path": request.path,
                "status": response.status_code,
                "duration_ms": duration,
            },
        )
        return response
