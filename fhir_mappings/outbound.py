"""Where the project's outbound HTTP may go, and the one session policy every outbound call uses.

Every request the project makes on someone else's behalf (FHIR call-backs with the EHR's token,
key sets that decide who is trusted, audit delivery, Bulk Data, the sandbox's proxy) goes through
these rules:

- a URL's origin is the one ``requests`` would really connect to (``request_origin``), not what
  ``urlsplit`` reads: the two disagree on crafted authorities;
- ``https`` unless the matching development switch allows plain http;
- no credentials in the URL; an optional allow-list of hosts (``host`` or ``host:port``);
- redirects are never followed by the session: a 3xx comes back as the response, so a server
  cannot send us, or the token we carry, to another origin. Callers that accept a redirect
  within the same origin follow it themselves after checking it (``FhirClient``).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass

import requests
from urllib3.exceptions import LocationParseError
from urllib3.util import parse_url

#: (scheme, host, port) of a request as urllib3 sends it.
Origin = tuple[str, str, int | None]
#: The port a scheme implies when a URL names none.
_DEFAULT_PORTS = {"http": 80, "https": 443}


class UnsafeDestination(ValueError):
    """A URL the project must not send a request (or a token) to; the message says why."""


#: Scheme and authority of a URL, as the standard parser delimits them (up to the first / ? #).
_AUTHORITY = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://([^/?#]*)")
#: Characters on which the standard parser and urllib3 split an authority differently.
_UNSAFE_AUTHORITY = re.compile(r"[\\\s\x00-\x1f\x7f@]")


@functools.lru_cache(maxsize=1024)
def request_origin(url: str) -> Origin | None:
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
    return scheme, parsed.host.lower(), parsed.port or _DEFAULT_PORTS.get(scheme)


def origin_url(origin: Origin) -> str:
    """An origin written as browsers write it (``https://ehr.example``, a port only when not the default)."""
    scheme, host, port = origin
    if port is None or port == _DEFAULT_PORTS.get(scheme):
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"


def same_origin(a: str, b: str) -> bool:
    """True when requests to ``a`` and ``b`` go to the same server (and neither URL is unsafe)."""
    origin = request_origin(a)
    return origin is not None and origin == request_origin(b)


@dataclass(frozen=True)
class Destinations:
    """The rule for one kind of outbound call: plain http allowed or not, and which hosts."""

    #: What the URL is, for messages ("fhirServer", "the key set URL", "the audit server").
    what: str
    allow_http: bool = False
    #: Hosts (``host`` or ``host:port``, any case) a URL must be on; empty: any host.
    allowed_hosts: tuple[str, ...] = ()
    #: The setting that allows plain http, named in the message when http is refused.
    http_switch: str = "allow_http_fhir"

    def check(self, url: object) -> Origin:
        """The URL's origin when a request may go there; ``UnsafeDestination`` saying why not."""
        if not isinstance(url, str) or not url:
            raise UnsafeDestination(f"{self.what} must be an absolute https URL")
        origin = request_origin(url)
        if origin is None or origin[0] not in ("http", "https"):
            raise UnsafeDestination(
                f"{self.what} must be an absolute http(s) URL without credentials or unusual characters"
            )
        scheme, host, port = origin
        if scheme == "http" and not self.allow_http:
            raise UnsafeDestination(f"{self.what} must use https ({self.http_switch} is off)")
        if self.allowed_hosts and not host_allowed(host, port, self.allowed_hosts):
            raise UnsafeDestination(f"{self.what} is not on this service's list of allowed hosts")
        return origin

    def allows(self, url: object) -> bool:
        try:
            self.check(url)
        except UnsafeDestination:
            return False
        return True


def host_allowed(host: str, port: int | None, allowed: Iterable[str]) -> bool:
    """Whether ``host`` (with ``port``) is on an allow-list of ``host`` or ``host:port`` entries."""
    names = {entry.strip().lower() for entry in allowed}
    return host in names or f"{host}:{port}" in names


class NoRedirectSession(requests.Session):
    """A ``requests`` session for which no response names a redirect target: whatever a caller
    passes as ``allow_redirects``, a 3xx is returned as it is, never followed."""

    def get_redirect_target(self, resp: requests.Response) -> str | None:
        return None


def outbound_session(*, pool_maxsize: int = 16) -> requests.Session:
    """The session for outbound calls: no redirects followed, pooled connections, no retries."""
    session = NoRedirectSession()
    adapter = requests.adapters.HTTPAdapter(pool_connections=8, pool_maxsize=pool_maxsize, max_retries=0)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session
