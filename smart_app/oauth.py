"""SMART App Launch 2.2 as a confidential client: discovery, PKCE, the authorization request, the
token request, and what the granted scopes allow.

Spec: https://hl7.org/fhir/smart-app-launch/STU2.2/app-launch.html (steps 3 to 5) and
https://hl7.org/fhir/smart-app-launch/STU2.2/scopes-and-launch-context.html. Plain functions over
plain data: the views keep the state in the session store between the steps.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import jwt
import requests

from fhir_mappings.outbound import Destinations
from smart_app.errors import DiscoveryFailed, TokenRequestFailed

#: v2 permissions in their defined order; v1 suffixes map onto them (SMART 2.2, "permission-v1").
PERMISSIONS = "cruds"
_V1 = {"read": "rs", "write": "cud", "*": "cruds"}
_RESOURCE_SCOPE = re.compile(r"^(patient|user|system)/([A-Za-z]+|\*)\.([a-z*]+)(\?.*)?$")


@dataclass(frozen=True, slots=True)
class SmartConfiguration:
    """What the app uses of ``{iss}/.well-known/smart-configuration``."""

    authorization_endpoint: str
    token_endpoint: str
    issuer: str | None


def discover(iss: str, session: requests.Session, timeout: float, *, allow_http: bool) -> SmartConfiguration:
    """Read the EHR's SMART configuration (SMART 2.2, step 3: "Retrieve .well-known/smart-configuration")."""
    url = iss.rstrip("/") + "/.well-known/smart-configuration"
    try:
        response = session.get(url, headers={"Accept": "application/json"}, timeout=timeout)
    except requests.RequestException as error:
        raise DiscoveryFailed(f"The EHR at {iss} could not be reached ({type(error).__name__}).") from None
    if response.status_code != 200:
        raise DiscoveryFailed(f"The EHR answered {response.status_code} to the SMART configuration request.")
    try:
        document = response.json()
    except ValueError:
        document = None
    if not isinstance(document, Mapping):
        raise DiscoveryFailed("The EHR's SMART configuration is not a JSON object.")
    authorize, token = document.get("authorization_endpoint"), document.get("token_endpoint")
    # The code, the verifier and the client secret go to these: https (or the development switch).
    endpoints = Destinations("the EHR's SMART endpoints", allow_http=allow_http)
    if not endpoints.allows(authorize) or not endpoints.allows(token):
        raise DiscoveryFailed(
            "The EHR's SMART configuration lacks an https authorization_endpoint or token_endpoint."
        )
    methods = document.get("code_challenge_methods_supported")
    if isinstance(methods, list) and "S256" not in methods:
        # SMART 2.2: servers SHALL support S256. Without it the code could be stolen in transit.
        raise DiscoveryFailed("The EHR does not offer PKCE with S256, which SMART App Launch 2.2 requires.")
    issuer = document.get("issuer")
    return SmartConfiguration(
        authorization_endpoint=str(authorize),
        token_endpoint=str(token),
        issuer=issuer if isinstance(issuer, str) else None,
    )


def pkce_pair() -> tuple[str, str]:
    """A fresh RFC 7636 code verifier (86 unreserved characters) and its S256 challenge."""
    verifier = secrets.token_urlsafe(64)
    return verifier, s256(verifier)


def s256(verifier: str) -> str:
    """BASE64URL(SHA256(verifier)) without padding (RFC 7636, section 4.2)."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def authorization_url(endpoint: str, params: Mapping[str, str]) -> str:
    """The authorization endpoint with the request's parameters added to any query it already has."""
    parts = urlsplit(endpoint)
    query = parse_qsl(parts.query, keep_blank_values=True) + list(params.items())
    return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(query), ""))


@dataclass(frozen=True, slots=True)
class TokenResponse:
    """The token response, read defensively (SMART 2.2, step 5, and the launch context parameters)."""

    access_token: str = field(repr=False)
    expires_in: int | None
    scope: str
    patient: str | None
    encounter: str | None
    need_patient_banner: bool
    app_context: str | None
    fhir_context: tuple[dict[str, Any], ...]
    id_token: str | None = field(repr=False)
    #: Granted with ``online_access`` or ``offline_access``: trades for a new access token.
    refresh_token: str | None = field(default=None, repr=False)
    smart_style_url: str | None = None


@dataclass(frozen=True)
class TokenClient:
    """The app as a confidential client of one EHR's token endpoint (client_secret_basic)."""

    endpoint: str
    client_id: str
    client_secret: str = field(repr=False)
    session: requests.Session
    timeout: float

    def redeem(self, *, code: str, verifier: str, redirect_uri: str, requested_scope: str) -> TokenResponse:
        """Trade the code and the PKCE verifier for a token (SMART 2.2, step 5)."""
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect_uri,
            "code_verifier": verifier,
        }
        return self._call(form, requested_scope)

    def refresh(self, *, refresh_token: str, granted_scope: str) -> TokenResponse:
        """A new access token for a refresh token (SMART 2.2, "Refresh access token"; RFC 6749, 6).

        No ``scope`` is sent, so the grant stays as it was; an answer without ``scope`` means that.
        """
        return self._call({"grant_type": "refresh_token", "refresh_token": refresh_token}, granted_scope)

    def _call(self, form: Mapping[str, str], requested_scope: str) -> TokenResponse:
        """POST the form; the response read, or TokenRequestFailed saying what went wrong."""
        # RFC 6749, 2.3.1: id and secret are form-encoded before they go into the Basic header.
        auth = (quote(self.client_id, safe=""), quote(self.client_secret, safe=""))
        try:
            response = self.session.post(
                self.endpoint,
                data=dict(form),
                auth=auth,
                headers={"Accept": "application/json"},
                timeout=self.timeout,
                # The secret and the code must not follow a redirect to another server.
                allow_redirects=False,
            )
        except requests.RequestException as error:
            raise TokenRequestFailed(
                f"The EHR's token endpoint could not be reached ({type(error).__name__})."
            ) from None
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.status_code != 200 or not isinstance(body, Mapping):
            reason = (
                body.get("error")
                if isinstance(body, Mapping) and isinstance(body.get("error"), str)
                else None
            )
            raise TokenRequestFailed(
                f"The EHR refused the token request (HTTP {response.status_code}"
                + (f", {_short_code(reason)}" if reason else "")
                + ").",
                answered=response.status_code,
            )
        return parse_token_response(body, requested_scope)


def _short_code(reason: str) -> str:
    """An OAuth error code as shown on a page: codes are short ASCII words (RFC 6749, 5.2)."""
    return reason if len(reason) <= 60 and reason.isascii() and reason.isprintable() else "an error"


def parse_token_response(body: Mapping[str, Any], requested_scope: str) -> TokenResponse:
    token = body.get("access_token")
    if not isinstance(token, str) or not token:
        raise TokenRequestFailed("The EHR's token response has no access_token.")
    if str(body.get("token_type", "")).lower() != "bearer":
        raise TokenRequestFailed("The EHR's token response is not a Bearer token.")
    scope = body.get("scope")
    fhir_context = body.get("fhirContext")
    banner = body.get("need_patient_banner")
    return TokenResponse(
        access_token=token,
        expires_in=_seconds(body.get("expires_in")),
        # RFC 6749, 5.1: an absent scope means the one requested was granted as asked.
        scope=scope if isinstance(scope, str) else requested_scope,
        patient=_text(body.get("patient")),
        encounter=_text(body.get("encounter")),
        # Absent: show the banner. Leaving out who the patient is needs the EHR to say so.
        need_patient_banner=banner is not False,
        app_context=_app_context(body.get("appContext")),
        fhir_context=tuple(c for c in fhir_context if isinstance(c, dict))
        if isinstance(fhir_context, list)
        else (),
        id_token=_text(body.get("id_token")),
        refresh_token=_text(body.get("refresh_token")),
        smart_style_url=_text(body.get("smart_style_url")),
    )


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _seconds(value: Any) -> int | None:
    """``expires_in`` as a whole number of seconds; some servers send it as a string."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return int(value)
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return None


def _app_context(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping):
        return json.dumps(value)  # some EHRs send the card's JSON already parsed
    return None


def id_token_user(id_token: str | None, *, client_id: str, issuer: str | None) -> str | None:
    """The ``fhirUser`` of the id token, or None when there is none or its claims do not hold.

    OpenID Connect Core 1.0, 3.1.3.7 item 6: an id token received directly from the token endpoint
    over TLS may be validated by TLS server validation instead of its signature, which is how a
    confidential client receives it. The claims are still checked: audience, issuer, expiry.
    """
    if not id_token:
        return None
    try:
        claims = jwt.decode(
            id_token,
            options={
                "verify_signature": False,
                "verify_aud": True,
                "verify_exp": True,
                "verify_iss": bool(issuer),
            },
            audience=client_id,
            issuer=issuer,
            leeway=60,
        )
    except jwt.PyJWTError:
        return None
    user = claims.get("fhirUser")
    return user if isinstance(user, str) else None


@dataclass(frozen=True, slots=True)
class ResourceScope:
    """One granted resource scope, v1 suffixes translated to v2 permissions."""

    context: str
    resource_type: str
    permissions: str
    query: str | None


def parse_scope(scope: str) -> ResourceScope | None:
    match = _RESOURCE_SCOPE.match(scope)
    if not match:
        return None
    context, resource_type, suffix, query = match.groups()
    permissions = _V1.get(suffix, suffix)
    if not permissions or permissions != "".join(p for p in PERMISSIONS if p in permissions):
        return None
    return ResourceScope(context, resource_type, permissions, query[1:] if query else None)


@dataclass(frozen=True, slots=True)
class Grants:
    """What the granted scope string lets the app do (SMART 2.2: "examine the granted scopes")."""

    scopes: tuple[str, ...]

    @classmethod
    def of(cls, scope: str) -> Grants:
        return cls(tuple(scope.split()))

    def allows(self, resource_type: str, permission: str) -> bool:
        """Whether a patient- or user-level scope without a search restriction covers this.

        Restricted scopes (``patient/Observation.rs?category=...``) are not used: the app reads
        whole types, and a query it did not ask for could hide the very result that sets a point.
        """
        for scope in map(parse_scope, self.scopes):
            if scope is None or scope.query is not None or scope.context == "system":
                continue
            if scope.resource_type in ("*", resource_type) and permission in scope.permissions:
                return True
        return False

    def has(self, scope: str) -> bool:
        return scope in self.scopes
