"""The one module that talks to FHIR servers: reads and searches with paging, under a deadline.

Errors are mapped once, here, to ``FhirClientError`` subclasses that carry the server's
OperationOutcome when it sent one. The bearer token is sent only to the server it belongs to:
paging links that point elsewhere are refused, not followed.
"""

from __future__ import annotations

import functools
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit

import requests
from urllib3.exceptions import LocationParseError
from urllib3.util import parse_url

from fhir_mappings.bundles import loads
from fhir_mappings.observations import items_of

FHIR_JSON = "application/fhir+json"


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


#: Scheme and authority of a URL, as the standard parser delimits them (up to the first / ? #).
_AUTHORITY = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://([^/?#]*)")
#: Characters on which the standard parser and urllib3 split an authority differently.
_UNSAFE_AUTHORITY = re.compile(r"[\\\s\x00-\x1f\x7f@]")


@functools.lru_cache(maxsize=1024)
def request_origin(url: str) -> tuple[str, str, int | None] | None:
    """Scheme, host and port of the request ``requests`` would really send to ``url``, or None.

    Parsed from the prepared URL as urllib3 reads it, not from the text: the standard parser and
    urllib3 disagree about ``https://evil.example\\@fhir.example/`` (urlsplit sees fhir.example,
    the request goes to evil.example). URLs with a backslash, whitespace, control characters or
    credentials have no origin a token may go to. Cached: every call-back checks its URL and the
    base URL, and preparing a request is not free on the hook's path.
    """
    # Only the authority is checked: queries legitimately carry spaces, '|' or FHIR's '\,' escapes.
    authority = _AUTHORITY.match(url)
    if authority is None or _UNSAFE_AUTHORITY.search(authority.group(1)):
        return None
    try:
        parsed = parse_url(requests.Request("GET", url).prepare().url or "")
    except (requests.RequestException, LocationParseError, ValueError):
        return None
    if parsed.auth or not parsed.host or not parsed.scheme:
        return None
    scheme = parsed.scheme.lower()
    return scheme, parsed.host.lower(), parsed.port or {"http": 80, "https": 443}.get(scheme)


def same_origin(a: str, b: str) -> bool:
    """True when requests to ``a`` and ``b`` go to the same server (and neither URL is unsafe)."""
    origin = request_origin(a)
    return origin is not None and origin == request_origin(b)


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
        if not same_origin(url, self.base_url):
            raise FhirRefused(f"refused to follow a link to another server: {urlsplit(url).netloc}")
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise FhirTimeout("the deadline for FHIR call-backs passed")
        headers = {"Accept": FHIR_JSON}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        try:
            response = self.session.get(url, headers=headers, timeout=remaining)
        except requests.Timeout:
            raise FhirTimeout("the FHIR server did not answer within the deadline") from None
        except requests.RequestException as error:
            raise FhirUnreachable(f"the FHIR server could not be reached ({type(error).__name__})") from None
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
