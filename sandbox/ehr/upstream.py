"""The HAPI FHIR server behind the sandbox EHR: the EHR's own, trusted, server-side access to it.

The EHR is a separate system from the CDS service and meets it only at the CDS Hooks and SMART
specs, so it keeps its own small client here instead of sharing ``fhir_mappings.client``; its
session is the project's outbound one (``fhir_mappings.outbound``: no redirect is followed).
JSON is read with plain floats: the EHR shows and forwards values, it never computes with them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import requests

from fhir_mappings.outbound import outbound_session
from plumbing.errors import FHIR_JSON
from sandbox.ehr.errors import BadRequest, UpstreamError

_FHIR_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")


def fhir_id(value: str) -> str:
    """A FHIR logical id (R4 ``id`` datatype), or BadRequest: ids end up in URLs sent to HAPI."""
    if not _FHIR_ID.fullmatch(value):
        raise BadRequest(f"{value!r} is not a FHIR id")
    return value


@dataclass(frozen=True)
class UpstreamResponse:
    status: int
    body: Any  # parsed JSON, or None when the body was empty or not JSON


def rewrite_urls(value: Any, upstream_base: str, public_base: str) -> Any:
    """``value`` with every string that starts with HAPI's base URL moved to the proxy's.

    Bundle links, ``fullUrl`` and references all pass through here, so a paging link followed
    by a client comes back through the proxy (and its token check), never straight to HAPI.
    """
    if isinstance(value, str):
        if value == upstream_base or value.startswith((upstream_base + "/", upstream_base + "?")):
            return public_base + value[len(upstream_base) :]
        return value
    if isinstance(value, list):
        return [rewrite_urls(v, upstream_base, public_base) for v in value]
    if isinstance(value, Mapping):
        return {k: rewrite_urls(v, upstream_base, public_base) for k, v in value.items()}
    return value


class Upstream:
    """Requests to one HAPI base URL with one connection pool."""

    def __init__(self, base_url: str, timeout: float) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.session = outbound_session()

    def url(self, relative: str) -> str:
        relative = relative.lstrip("/")
        return f"{self.base_url}/{relative}" if relative else self.base_url

    def request(
        self,
        method: str,
        relative: str,
        *,
        query: str | bytes = "",
        body: bytes | None = None,
        content_type: str | None = None,
    ) -> UpstreamResponse:
        """One request to HAPI; a transport failure is an UpstreamError, an HTTP error is returned."""
        url = self.url(relative)
        if query:
            url = f"{url}?{query.decode() if isinstance(query, bytes) else query}"
        headers = {"Accept": FHIR_JSON}
        if content_type:
            headers["Content-Type"] = content_type
        try:
            response = self.session.request(method, url, data=body, headers=headers, timeout=self.timeout)
        except requests.RequestException as error:
            raise UpstreamError(
                f"the FHIR server behind the sandbox is unreachable ({type(error).__name__})"
            ) from None
        try:
            parsed = response.json() if response.content else None
        except ValueError:
            parsed = None
        return UpstreamResponse(status=response.status_code, body=parsed)

    def get_json(self, relative: str, query: str = "") -> dict[str, Any]:
        """A GET the EHR needs to succeed (its own page data); any failure is an UpstreamError."""
        response = self.request("GET", relative, query=query)
        if response.status >= 400 or not isinstance(response.body, dict):
            raise UpstreamError(f"the FHIR server answered {response.status} to GET {relative}")
        return response.body

    def search(self, relative: str, query: str = "") -> list[dict[str, Any]]:
        """The resources of the first page of a search (the page shows the newest; that is enough)."""
        bundle = self.get_json(relative, query)
        return [
            e["resource"]
            for e in bundle.get("entry") or []
            if isinstance(e, dict) and isinstance(e.get("resource"), dict)
        ]
