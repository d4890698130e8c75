"""FHIR Bulk Data ``$export`` client: kick-off, polling that honours Retry-After, download, clean-up.

Spec: https://hl7.org/fhir/uv/bulkdata/export.html (kick-off with ``Prefer: respond-async`` -> 202 and
``Content-Location``; poll the status URL: 202 with ``Retry-After`` and ``X-Progress`` while running,
200 with the manifest when done; download each ``output[].url``; DELETE the status URL afterwards).
Optional SMART Backend Services authorization (https://hl7.org/fhir/smart-app-launch/backend-services.html):
a JWT client assertion signed with the client's private key is exchanged for an access token.
"""

from __future__ import annotations

import contextlib
import json
import re
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import jwt
import requests

from cohort.errors import CohortConfigError, CohortServerError
from cohort.plan import RESOURCE_TYPES
from fhir_mappings.outbound import same_origin

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
#: SMART v2 scopes to read what the extraction reads.
DEFAULT_SCOPE = " ".join(f"system/{t}.rs" for t in RESOURCE_TYPES)
_CHUNK = 1 << 20


@dataclass(frozen=True)
class BackendAuth:
    """A registered backend client: its id, private key (PEM) and key id; token URL if not discovered."""

    client_id: str
    private_key_pem: bytes
    key_id: str
    algorithm: str = "RS384"
    scope: str = DEFAULT_SCOPE
    token_url: str | None = None
    jku: str | None = None


def client_assertion(auth: BackendAuth, token_url: str, now: datetime, jti: str | None = None) -> str:
    """The signed JWT a backend client presents to the token endpoint (valid five minutes)."""
    if auth.algorithm not in ("RS384", "ES384"):
        raise CohortConfigError("--auth-alg: SMART Backend Services uses RS384 or ES384")
    headers: dict[str, Any] = {"kid": auth.key_id, "typ": "JWT"}
    if auth.jku:
        headers["jku"] = auth.jku
    claims = {
        "iss": auth.client_id,
        "sub": auth.client_id,
        "aud": token_url,
        "iat": int(now.timestamp()),
        "exp": int((now + timedelta(minutes=5)).timestamp()),
        "jti": jti or uuid.uuid4().hex,
    }
    try:
        return jwt.encode(claims, auth.private_key_pem, algorithm=auth.algorithm, headers=headers)
    except (ValueError, TypeError, jwt.PyJWTError) as error:
        raise CohortConfigError(f"cannot sign the client assertion with the private key: {error}") from None


@dataclass
class _Token:
    value: str
    expires: float


@dataclass
class BulkClient:
    """Runs one export against a FHIR base URL and writes its NDJSON files into a folder."""

    base_url: str
    auth: BackendAuth | None = None
    session: requests.Session = field(default_factory=requests.Session)
    timeout: float = 60.0
    max_wait: float = 3600.0
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic
    _token: _Token | None = None

    def __post_init__(self) -> None:
        self.base_url = self.base_url.rstrip("/")

    # Authorization ------------------------------------------------------------------------------

    def _token_url(self) -> str:
        if self.auth is None:
            raise CohortConfigError("no SMART Backend Services client is configured")
        if self.auth.token_url:
            return self.auth.token_url
        response = self._send("GET", f"{self.base_url}/.well-known/smart-configuration", authorize=False)
        endpoint = _json(response).get("token_endpoint")
        if not isinstance(endpoint, str):
            raise CohortServerError(
                "the server's smart-configuration has no token_endpoint; pass --token-url"
            )
        return endpoint

    def access_token(self) -> str | None:
        """A current access token (fetched again a minute before it expires), or None without auth."""
        if self.auth is None:
            return None
        if self._token and self._token.expires - 60 > self.clock():
            return self._token.value
        url = self._token_url()
        assertion = client_assertion(self.auth, url, datetime.now(UTC))
        form = {
            "grant_type": "client_credentials",
            "scope": self.auth.scope,
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": assertion,
        }
        response = self._send("POST", url, authorize=False, data=form, headers={"Accept": "application/json"})
        body = _json(response)
        token = body.get("access_token")
        if not isinstance(token, str):
            raise CohortServerError(f"the token endpoint {url} answered without an access_token")
        expires_in = body.get("expires_in", 300)
        self._token = _Token(token, self.clock() + float(expires_in if isinstance(expires_in, int) else 300))
        return token

    # HTTP ---------------------------------------------------------------------------------------

    def _send(self, method: str, url: str, *, authorize: bool = True, **kwargs: Any) -> requests.Response:
        headers = dict(kwargs.pop("headers", {}) or {})
        if authorize and self.auth is not None:
            # Status and file URLs come from the server's answers; the token it granted goes back
            # to that server only (a manifest may point anywhere).
            if not same_origin(url, self.base_url):
                raise CohortServerError(
                    f"{method} {url}: not sending the access token to another server than {self.base_url}"
                )
            if token := self.access_token():
                headers["Authorization"] = f"Bearer {token}"
        try:
            response = self.session.request(method, url, headers=headers, timeout=self.timeout, **kwargs)
        except requests.RequestException as error:
            raise CohortServerError(f"{method} {url} failed: {type(error).__name__}: {error}") from None
        if response.status_code >= 400:
            raise CohortServerError(f"{method} {url} -> HTTP {response.status_code}{_outcome(response)}")
        return response

    # Export -------------------------------------------------------------------------------------

    def kick_off(
        self, types: Sequence[str] = RESOURCE_TYPES, group: str | None = None, since: str | None = None
    ) -> str:
        """Start an export (system level, or of a Group) and return the status URL."""
        url = f"{self.base_url}/Group/{group}/$export" if group else f"{self.base_url}/$export"
        params = {"_type": ",".join(types), "_outputFormat": "application/fhir+ndjson"}
        if since:
            params["_since"] = since
        headers = {"Accept": "application/fhir+json", "Prefer": "respond-async"}
        response = self._send("GET", url, params=params, headers=headers)
        location = response.headers.get("Content-Location")
        if response.status_code != 202 or not location:
            raise CohortServerError(
                f"$export kick-off at {url} answered HTTP {response.status_code} without Content-Location "
                "(does the server support Bulk Data export?)"
            )
        return location

    def wait(self, status_url: str, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
        """Poll the status URL until the manifest is ready, waiting as long as ``Retry-After`` asks."""
        deadline = self.clock() + self.max_wait
        while True:
            response = self._send("GET", status_url, headers={"Accept": "application/json"})
            if response.status_code == 200:
                manifest = _json(response)
                if not isinstance(manifest.get("output"), list):
                    raise CohortServerError("the export manifest has no output list")
                return manifest
            if response.status_code != 202:
                raise CohortServerError(
                    f"export status answered HTTP {response.status_code}{_outcome(response)}"
                )
            if progress and response.headers.get("X-Progress"):
                progress(response.headers["X-Progress"])
            delay = retry_after(response.headers.get("Retry-After"), datetime.now(UTC))
            if self.clock() + delay > deadline:
                raise CohortServerError(
                    f"the export was not ready within {self.max_wait:.0f} s; try again later"
                )
            self.sleep(delay)

    def download(
        self, manifest: dict[str, Any], folder: Path, progress: Callable[[int], None] | None = None
    ) -> list[Path]:
        """Stream each output file of the manifest to ``folder/<Type>.<n>.ndjson``."""
        folder.mkdir(parents=True, exist_ok=True)
        paths = []
        authorize = bool(manifest.get("requiresAccessToken", False))
        errors = manifest.get("error") or []
        for number, item in enumerate(manifest["output"]):
            kind, url = (item.get("type"), item.get("url")) if isinstance(item, dict) else (None, None)
            if not isinstance(kind, str) or not isinstance(url, str):
                raise CohortServerError(f"manifest output {number} lacks type or url")
            # The type names the file: a resource type name only, never a path.
            if not _RESOURCE_TYPE.fullmatch(kind):
                problem = f"has a type that is no resource type: {kind[:80]!r}"
                raise CohortServerError(f"manifest output {number} {problem}")
            path = folder / f"{kind}.{number:03d}.ndjson"
            response = self._send(
                "GET", url, authorize=authorize, headers={"Accept": "application/fhir+ndjson"}, stream=True
            )
            with path.open("wb") as handle:
                for chunk in response.iter_content(_CHUNK):
                    handle.write(chunk)
                    if progress:
                        progress(len(chunk))
            paths.append(path)
        if errors:
            (folder / "export-errors.json").write_text(json.dumps(errors, indent=2), encoding="utf-8")
        return paths

    def delete(self, status_url: str) -> None:
        """Tell the server the files may go (best effort: a failure here loses nothing)."""
        with contextlib.suppress(CohortServerError):
            self._send("DELETE", status_url)

    def export(
        self,
        folder: Path,
        types: Sequence[str] = RESOURCE_TYPES,
        group: str | None = None,
        on_status: Callable[[str], None] | None = None,
        on_bytes: Callable[[int], None] | None = None,
    ) -> list[Path]:
        """Kick off, wait, download and clean up; the NDJSON files written."""
        status = self.kick_off(types, group)
        manifest = self.wait(status, on_status)
        paths = self.download(manifest, folder, on_bytes)
        self.delete(status)
        return paths


def retry_after(value: str | None, now: datetime, default: float = 2.0, ceiling: float = 120.0) -> float:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date), bounded."""
    if not value:
        return default
    value = value.strip()
    if value.isdigit():
        seconds = float(value)
    else:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return default
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - now).total_seconds()
    return min(max(seconds, 0.5), ceiling)


def _json(response: requests.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        raise CohortServerError(f"{response.url} did not answer JSON") from None
    if not isinstance(body, dict):
        raise CohortServerError(f"{response.url} answered JSON that is not an object")
    return body


#: A FHIR resource type name (https://hl7.org/fhir/R4/resourcelist.html): letters only.
_RESOURCE_TYPE = re.compile(r"[A-Z][A-Za-z]{0,63}")


def _outcome(response: requests.Response) -> str:
    """The first diagnostics of an OperationOutcome body, for the one-line error."""
    try:
        body = response.json()
    except ValueError:
        return ""
    if isinstance(body, dict):
        issues = body.get("issue")
        for issue in issues if isinstance(issues, list) else ():
            if isinstance(issue, dict) and isinstance(issue.get("diagnostics"), str):
                return f": {issue['diagnostics'][:300]}"
        if isinstance(body.get("error_description"), str):
            return f": {body['error_description'][:300]}"
    return ""
