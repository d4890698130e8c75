"""What the service builds once and every request uses, as one typed object.

``create_app`` builds a ``Service`` and keeps it in ``app.extensions`` under one key; code reads
it back through ``service_of(app)`` or ``current()``, never through string keys and casts.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import requests
from flask import Flask, current_app
from prometheus_client import CollectorRegistry

from cds_service.audit import AuditDeliverer, AuditSpool
from cds_service.auth import Authenticator
from cds_service.settings import Runtime
from cds_service.store import Store

_KEY = "ichis.service"


@dataclass(frozen=True)
class Service:
    """The service's parts: settings and tables, the clock, stores, pools and the authenticator."""

    runtime: Runtime
    #: The time of a call (the order time) and of feedback; injected so tests can fix it.
    clock: Callable[[], datetime]
    store: Store
    #: FHIR call-backs and key sets: one pool per worker that never follows a redirect.
    http: requests.Session
    spool: AuditSpool
    deliverer: AuditDeliverer
    metrics: CollectorRegistry
    #: None when authentication is off (development).
    authenticator: Authenticator | None


def attach(app: Flask, service: Service) -> None:
    app.extensions[_KEY] = service


def service_of(app: Flask) -> Service:
    """The service built for ``app`` by ``cds_service.create_app``."""
    found = app.extensions.get(_KEY)
    if not isinstance(found, Service):
        raise LookupError("this Flask app was not built by cds_service.create_app")
    return found


def current() -> Service:
    """The service of the app handling the current request."""
    return service_of(current_app)
