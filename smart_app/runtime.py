"""What ``install_smart_app`` builds once and every request of the SMART app shares, typed.

The app gets what it needs of the CDS service (its runtime, connection pool, clock and audit
spool) handed to it at installation, not by looking up string keys; ``smart_runtime(app)`` is the
one place that reads the app's runtime back.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

import requests

from fhir_mappings.config import MappingConfig
from fhir_mappings.scope import DiagnosisTable
from plumbing.wiring import Slot
from smart_app.session import CookieCodec, SessionStore
from smart_app.settings import SmartSettings


class ServiceSettings(Protocol):
    """What the app reads of the CDS service's settings (cds_service.settings.Settings)."""

    @property
    def public_base_url(self) -> str: ...
    @property
    def data_dir(self) -> Path: ...
    @property
    def allow_http_fhir(self) -> bool: ...
    @property
    def max_fhir_pages(self) -> int: ...
    @property
    def audit_fhir_url(self) -> str: ...
    @property
    def fhir_allowed_hosts(self) -> tuple[str, ...]: ...


class ServiceRuntime(Protocol):
    """What the app reads of the service's runtime (handed to ``install_smart_app``)."""

    @property
    def settings(self) -> ServiceSettings: ...
    @property
    def mapping(self) -> MappingConfig: ...
    @property
    def diagnoses(self) -> DiagnosisTable: ...


class Spool(Protocol):
    """What the app uses of ``cds_service.audit.AuditSpool``: the service's durable audit spool."""

    def put(self, resource: Mapping[str, Any], target: str) -> None: ...


@dataclass(frozen=True)
class SmartRuntime:
    """What ``install_smart_app`` builds once and every request shares."""

    settings: SmartSettings
    store: SessionStore
    codec: CookieCodec
    http: requests.Session
    allow_http: bool
    frame_ancestors: tuple[str, ...]
    #: The service's runtime (settings, mapping and diagnosis tables) and its one clock.
    service: ServiceRuntime
    clock: Callable[[], datetime]

    spool: Spool


_SLOT = Slot("ichis.smart", SmartRuntime, "the SMART app is not installed on this Flask app")
attach = _SLOT.attach
#: The SMART app's runtime on an app (installed by ``install_smart_app``).
smart_runtime = _SLOT.of
