"""What the service builds once and every request uses, as one typed object.

``create_app`` builds a ``Service`` and keeps it in ``app.extensions`` under one key; code reads
it back through ``service_of(app)`` or ``current()``, never through string keys and casts.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import requests
from flask import current_app
from prometheus_client import CollectorRegistry

from cds_service.audit import AuditDeliverer, AuditSpool
from cds_service.auth import Authenticator
from cds_service.settings import Runtime
from cds_service.store import Store
from plumbing.wiring import Slot


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


_SLOT = Slot("ichis.service", Service, "this Flask app was not built by cds_service.create_app")
attach = _SLOT.attach
#: The service built for an app by ``cds_service.create_app``.
service_of = _SLOT.of


def current() -> Service:
    """The service of the app handling the current request."""
    return service_of(current_app)
