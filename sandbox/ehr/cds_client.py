"""The EHR as a CDS client: discovery, hook calls and feedback, each with a signed JWT.

CDS Hooks 2.0.1, "Trusting CDS Clients": every call, discovery included, carries
``Authorization: Bearer <JWT>`` whose ``aud`` is the exact URL called. Each call is recorded with
its status and body, so the page can show an integration engineer what went over the wire.
Tokens and JWTs are never logged; the page shows a JWT's decoded header and claims, not the JWT.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import requests
from joserfc import jws

from fhir_mappings.outbound import outbound_session
from sandbox.ehr.keys import SigningKeys
from sandbox.ehr.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class HttpRecord:
    """One request to the CDS service and what came back."""

    method: str
    url: str
    request_body: Any = None
    status: int | None = None
    response_body: Any = None  # parsed JSON, when the body was JSON
    response_text: str | None = None  # the raw body, when it was not
    error: str | None = None  # transport failure: no HTTP status at all
    elapsed_ms: int = 0
    jwt_header: dict[str, Any] = field(default_factory=dict)
    jwt_claims: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    @property
    def operation_outcome(self) -> dict[str, Any] | None:
        body = self.response_body
        if isinstance(body, dict) and body.get("resourceType") == "OperationOutcome":
            return body
        return None

    def pretty_request(self) -> str:
        return (
            json.dumps(self.request_body, indent=2, ensure_ascii=False)
            if self.request_body is not None
            else ""
        )

    def pretty_response(self) -> str:
        if self.response_body is not None:
            return json.dumps(self.response_body, indent=2, ensure_ascii=False)
        return self.response_text or ""


@dataclass
class Discovery:
    services: list[dict[str, Any]]
    record: HttpRecord


def redacted(body: dict[str, Any]) -> dict[str, Any]:
    """A hook request as the page may show it: the FHIR access token replaced by a note."""
    shown = dict(body)
    authorization = shown.get("fhirAuthorization")
    if isinstance(authorization, dict) and "access_token" in authorization:
        shown["fhirAuthorization"] = {**authorization, "access_token": "(redacted)"}
    return shown


class CdsClient:
    """Calls to one CDS service base URL, signed with the EHR's keys; discovery is cached."""

    def __init__(self, settings: Settings, keys: SigningKeys) -> None:
        self.settings = settings
        self.keys = keys
        # The project's outbound session: a redirect from the service is never followed.
        self.session = outbound_session()
        self._lock = threading.Lock()
        self._discovery: Discovery | None = None

    @property
    def discovery_url(self) -> str:
        return f"{self.settings.cds_base_url}/cds-services"

    def service_url(self, service_id: str) -> str:
        return f"{self.discovery_url}/{service_id}"

    def _jwt(self, audience: str) -> str:
        settings = self.settings
        return self.keys.client_jwt(
            issuer=settings.issuer,
            audience=audience,
            alg=settings.jwt_alg,
            jku=settings.jwks_url if settings.jwt_jku else None,
            tenant=settings.tenant,
        )

    def send(self, method: str, url: str, body: Any = None, shown_body: Any = None) -> HttpRecord:
        """One authenticated request; failures become part of the record, never an exception."""
        token = self._jwt(url)
        compact = jws.extract_compact(token.encode())
        record = HttpRecord(
            method=method,
            url=url,
            request_body=body if shown_body is None else shown_body,
            jwt_header=dict(compact.protected),
            jwt_claims=json.loads(compact.payload),
        )
        headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
        started = time.monotonic()
        try:
            response = self.session.request(
                method, url, json=body, headers=headers, timeout=self.settings.http_timeout
            )
        except requests.RequestException as error:
            record.error = f"no response from the CDS service ({type(error).__name__})"
            log.info("%s %s: %s", method, url, record.error)
            return record
        finally:
            record.elapsed_ms = int((time.monotonic() - started) * 1000)
        record.status = response.status_code
        try:
            record.response_body = response.json() if response.content else None
        except ValueError:
            record.response_text = response.text[:20000]
        log.info("%s %s -> %s in %d ms", method, url, response.status_code, record.elapsed_ms)
        return record

    def discover(self, refresh: bool = False) -> Discovery:
        """The service's discovery document; a successful answer is kept until ``refresh``."""
        with self._lock:
            if self._discovery is not None and self._discovery.record.ok and not refresh:
                return self._discovery
        record = self.send("GET", self.discovery_url)
        body = record.response_body
        services: list[dict[str, Any]] = []
        if record.ok and isinstance(body, dict) and isinstance(body.get("services"), list):
            services = [s for s in body["services"] if isinstance(s, dict) and isinstance(s.get("id"), str)]
        discovery = Discovery(services, record)
        with self._lock:
            self._discovery = discovery
        return discovery

    def cached_discovery(self) -> Discovery | None:
        with self._lock:
            return self._discovery
