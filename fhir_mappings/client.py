"""The one module that talks to FHIR servers: reads and searches with paging, side by side, under a deadline.

Errors are mapped once, here, to ``FhirClientError`` subclasses that carry the server's
OperationOutcome when it sent one. The bearer token is sent only to the server it belongs to:
paging links and redirects that point elsewhere are refused, not followed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urljoin, urlsplit

import requests

from fhir_mappings.bundles import loads
from fhir_mappings.outbound import request_origin, same_origin
from fhir_mappings.resources import items_of

__all__ = ["FhirClient", "FhirClientError", "Gathered", "next_link", "request_origin", "same_origin"]

FHIR_JSON = "application/fhir+json"
#: Redirects followed within the server's own origin before the answer counts as a failure.
MAX_REDIRECTS = 5


class FhirClientError(Exception):
    """A FHIR request that did not give us the data; ``detail`` is safe to show a client."""

    def __init__(
        self, detail: str, status: int | None = None, outcome: Mapping[str, Any] | None = None
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.status = status
        self.outcome = outcome


class FhirTimeout(FhirClientError):
    """The deadline passed before the server answered."""


class FhirUnreachable(FhirClientError):
    """No connection, or the server failed (5xx)."""


class FhirRefused(FhirClientError):
    """The server refused the token or the query (401, 403, other 4xx)."""


@dataclass
class Gathered:
    """What requests run side by side brought back: each key's resource, or why it did not come."""

    values: dict[str, dict[str, Any]] = field(default_factory=dict)
    failures: dict[str, FhirClientError] = field(default_factory=dict)


@dataclass
class FhirClient:
    """Requests against one FHIR base URL with one token, all within one deadline."""

    base_url: str
    token: str | None
    session: requests.Session
    deadline: float  # time.monotonic() value after which no request starts or waits
    max_pages: int = 10

    def _url(self, relative: str) -> str:
        base = self.base_url if self.base_url.endswith("/") else self.base_url + "/"
        return urljoin(base, relative.lstrip("/"))

    def get(self, url_or_path: str) -> Any:
        """One GET; the JSON body with exact decimals."""
        absolute = url_or_path.startswith(("http://", "https://"))  # queries may contain "://" too
        url = url_or_path if absolute else self._url(url_or_path)
        headers = {"Accept": FHIR_JSON}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        for _ in range(MAX_REDIRECTS + 1):
            response = self._send(url, headers)
            if not response.is_redirect:
                return self._body(response)
            # Followed here, not by requests: only within the server's origin, with the token.
            url = urljoin(url, response.headers.get("Location", ""))
            if not same_origin(url, self.base_url):
                raise FhirRefused(
                    f"the FHIR server redirected to another server ({urlsplit(url).netloc}); not followed",
                    response.status_code,
                )
        raise FhirRefused(f"the FHIR server redirected more than {MAX_REDIRECTS} times")

    def _send(self, url: str, headers: Mapping[str, str]) -> requests.Response:
        if not same_origin(url, self.base_url):
            raise FhirRefused(f"refused to follow a link to another server: {urlsplit(url).netloc}")
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise FhirTimeout("the deadline for FHIR call-backs passed")
        try:
            return self.session.get(url, headers=headers, timeout=remaining, allow_redirects=False)
        except requests.Timeout:
            raise FhirTimeout("the FHIR server did not answer within the deadline") from None
        except requests.RequestException as error:
            raise FhirUnreachable(f"the FHIR server could not be reached ({type(error).__name__})") from None

    @staticmethod
    def _body(response: requests.Response) -> Any:
        body: Any = None
        try:
            body = loads(response.content) if response.content else None
        except ValueError:
            body = None
        if response.status_code >= 400:
            outcome = (
                body if isinstance(body, Mapping) and body.get("resourceType") == "OperationOutcome" else None
            )
            kind = FhirUnreachable if response.status_code >= 500 else FhirRefused
            raise kind(f"the FHIR server answered {response.status_code}", response.status_code, outcome)
        if not isinstance(body, Mapping) or not isinstance(body.get("resourceType"), str):
            raise FhirUnreachable("the FHIR server answered with something that is not a FHIR resource")
        return body

    def follow_pages(self, bundle: Mapping[str, Any]) -> dict[str, Any]:
        """A searchset with every page's entries, following ``next`` links on this server."""
        entries = list(_entries(bundle))
        pages = 1
        current: Mapping[str, Any] = bundle
        while (next_url := next_link(current)) is not None:
            if pages >= self.max_pages:
                raise FhirRefused(f"more than {self.max_pages} pages of results; narrow the query")
            current = self.get(next_url)
            if current.get("resourceType") != "Bundle":
                raise FhirUnreachable("a paging link returned something that is not a Bundle")
            entries.extend(_entries(current))
            pages += 1
        merged = {key: value for key, value in bundle.items() if key not in ("entry", "link")}
        merged["entry"] = entries
        return merged

    def search(self, query: str) -> dict[str, Any]:
        """A search or read; searches come back with all pages merged."""
        body = self.get(query)
        if body.get("resourceType") == "Bundle":
            return self.follow_pages(body)
        return dict(body)

    def gather(
        self,
        searches: Mapping[str, str | Mapping[str, Any]],
        *,
        # Told each key and the seconds it took (the service's call-back latency metric).
        timing: Callable[[str, float], None] | None = None,
    ) -> Gathered:
        """Each key's search (a query, or a first page to follow) run side by side within the one deadline."""

        def run(key: str, search: str | Mapping[str, Any]) -> dict[str, Any]:
            started = time.perf_counter()
            try:
                return self.search(search) if isinstance(search, str) else self.follow_pages(search)
            finally:
                if timing is not None:
                    timing(key, time.perf_counter() - started)

        gathered = Gathered()
        if not searches:
            return gathered
        with ThreadPoolExecutor(max_workers=len(searches)) as pool:
            futures = {key: pool.submit(run, key, search) for key, search in searches.items()}
            for key, future in futures.items():
                # Kept per key: one refused search must not hide what the others found.
                try:
                    gathered.values[key] = future.result()
                except FhirClientError as failure:
                    gathered.failures[key] = failure
        return gathered


def _entries(bundle: Mapping[str, Any]) -> list[Any]:
    """A page's entries; a page whose ``entry`` is not an array (or null) is malformed, not empty."""
    entries = bundle.get("entry")
    if entries is not None and not isinstance(entries, list):
        raise FhirUnreachable("the FHIR server sent a page whose Bundle.entry is not an array")
    return items_of(bundle, "entry")


def next_link(bundle: Mapping[str, Any]) -> str | None:
    for link in items_of(bundle, "link"):
        if isinstance(link, Mapping) and link.get("relation") == "next" and isinstance(link.get("url"), str):
            url: str = link["url"]
            return url
    return None
