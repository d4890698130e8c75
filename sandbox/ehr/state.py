"""Everything one sandbox EHR holds while it runs, reachable from any view as ``current_state()``."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from flask import current_app

from fhir_mappings.outbound import Origin, request_origin
from sandbox.ehr.cds_client import CdsClient
from sandbox.ehr.errors import BadRequest
from sandbox.ehr.keys import SigningKeys
from sandbox.ehr.oauth import SandboxUser, SmartAuthorizationServer
from sandbox.ehr.settings import Settings
from sandbox.ehr.store import Store
from sandbox.ehr.upstream import Upstream, fhir_id
from sandbox.ehr.workspace import Workspaces

EXTENSION = "ichis_sandbox_ehr"
FHIR_LOG_LIMIT = 1000


@dataclass
class FhirLogEntry:
    """One request the FHIR proxy received (kept only with the ``testing`` setting on)."""

    method: str
    path: str
    query: str
    token: str | None = field(repr=False)
    client_id: str | None
    status: int


class EhrState:
    """Settings, keys, stores and clients of one sandbox EHR app."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.keys = SigningKeys(settings.data_dir)
        self.store = Store()
        self.upstream = Upstream(settings.fhir_upstream, settings.http_timeout)
        self.cds = CdsClient(settings, self.keys)
        self.sandbox_user = SandboxUser(settings.user_id, settings.user_name)
        self.workspaces = Workspaces()
        self.oauth = SmartAuthorizationServer(settings, self.store, self.keys, self.sandbox_user)
        self._log_lock = threading.Lock()
        self._fhir_log: list[FhirLogEntry] = []
        #: Where the registered apps run: their redirect URIs' origins, read as requests reads them.
        self.registered_origins: frozenset[Origin] = frozenset(
            origin
            for client in settings.clients
            for origin in map(request_origin, client.redirect_uris)
            if origin is not None
        )

    def is_registered_origin(self, origin: str) -> bool:
        """Whether a browser's ``Origin`` header names the origin of a registered app."""
        return request_origin(origin) in self.registered_origins

    def log_fhir_request(self, entry: FhirLogEntry) -> None:
        if not self.settings.testing:
            return
        with self._log_lock:
            self._fhir_log.append(entry)
            del self._fhir_log[:-FHIR_LOG_LIMIT]

    def fhir_log(self) -> list[FhirLogEntry]:
        with self._log_lock:
            return list(self._fhir_log)

    def clear_fhir_log(self) -> None:
        with self._log_lock:
            self._fhir_log.clear()

    def patient_choices(self) -> list[dict[str, Any]]:
        """The patients on the FHIR server, for the pickers (the first 200 is plenty for a sandbox)."""
        return self.upstream.search("Patient", "_count=200&_sort=family,given")

    def require_patient(self, patient_id: str) -> dict[str, Any]:
        """The Patient resource, or BadRequest when the id is malformed or names nobody."""
        response = self.upstream.request("GET", f"Patient/{fhir_id(patient_id)}")
        if response.status != 200 or not isinstance(response.body, dict):
            raise BadRequest(f"there is no Patient/{patient_id} on the FHIR server")
        return response.body


def current_state() -> EhrState:
    state: EhrState = current_app.extensions[EXTENSION]
    return state
