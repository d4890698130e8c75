"""Authentication of CDS clients by the JWT they send (CDS Hooks 2.0.1, "Trusting CDS Clients").

https://cds-hooks.hl7.org/2.0/#trusting-cds-clients: the client signs a short-lived JWT with its
private key; we check it against the key set of an issuer the hospital registered. Rules:

- only asymmetric algorithms (ES*, RS*, PS*); never ``none``, never HMAC;
- ``kid`` picks the key; key sets are cached, and an unknown ``kid`` triggers one refresh, at most
  once per ``jwks_min_refresh_seconds`` per issuer (a flood of bad kids cannot hammer the EHR);
- key sets are fetched over https only (``allow_http_jwks`` is the development switch), never
  through a redirect;
- a ``jku`` header on the issuer's allow-list is followed; an unlisted ``jku`` is never fetched:
  the issuer's configured key set is used when it holds the ``kid`` (the official CDS Hooks sandbox
  always sends its own ``jku``), else the token is refused;
- ``aud`` must equal the exact URL that was called, built from ``public_base_url``; ``exp``,
  ``iat`` (and ``nbf`` when sent) must be JSON numbers (NumericDate, RFC 7519 section 2) and are
  checked with a small clock skew; a token may live at most ``max_token_lifetime_seconds``;
  ``jti`` is required and refused when seen before (replay cache shared by workers).

Every failure raises ``AuthenticationFailed``; the caller gets a bare 401, the log gets the reason.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import math
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import jwt
import requests
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from fhir_mappings.outbound import Destinations, UnsafeDestination
from plumbing.sqlite import Connections

log = logging.getLogger("ichis.auth")

#: Longest token read at all (a JWT of ours is about 400 characters; 1 MB tokens were sent).
_MAX_TOKEN = 16_384
#: Asymmetric JWS algorithms we accept (RFC 7518); the spec recommends ES384 and RS384.
ALGORITHMS = ("ES256", "ES384", "ES512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512")


class AuthenticationFailed(Exception):
    """Why a request was not authenticated: for the log, never for the caller."""


class ReplayStoreUnavailable(Exception):
    """The jti store cannot be read or written: freshness cannot be checked, so no call is let in."""


@dataclass(frozen=True)
class TrustedIssuer:
    """A CDS client a hospital registered: its ``iss`` and where its public keys are."""

    iss: str
    jwks_url: str | None = None
    jwks: Mapping[str, Any] | None = None
    jku_allow: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.jwks_url and not self.jwks:
            raise ValueError(f"trusted issuer {self.iss}: give jwks_url or an inline jwks")


def parse_issuers(raw: Any) -> list[TrustedIssuer]:
    """Issuers from configuration: a list of {iss, jwks_url | jwks, jku_allow}."""
    if raw is None:
        return []
    if isinstance(raw, str):
        raw = json.loads(raw)
    if not isinstance(raw, list):
        raise ValueError("trusted_issuers must be a list of {iss, jwks_url or jwks, jku_allow}")
    issuers = []
    for item in raw:
        if not isinstance(item, Mapping) or not isinstance(item.get("iss"), str):
            raise ValueError("each trusted issuer needs an 'iss' string")
        jwks = item.get("jwks")
        if isinstance(jwks, str):
            jwks = json.loads(jwks)
        issuers.append(
            TrustedIssuer(
                iss=item["iss"],
                jwks_url=item.get("jwks_url"),
                jwks=jwks,
                jku_allow=tuple(item.get("jku_allow", ())),
            )
        )
    return issuers


@dataclass
class _KeySet:
    keys: dict[str, jwt.PyJWK]
    fetched_at: float
    last_refresh_attempt: float


@dataclass
class KeySetCache:
    """Public keys by (key set URL, kid), fetched on demand and refreshed on an unknown kid."""

    session: requests.Session
    #: Where key sets may be fetched from (https unless the development switch allows http).
    destinations: Destinations = field(default_factory=lambda: Destinations("a key set URL"))
    ttl_seconds: float = 3600.0
    min_refresh_seconds: float = 60.0
    timeout_seconds: float = 2.0
    clock: Callable[[], float] = time.monotonic
    _sets: dict[str, _KeySet] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @staticmethod
    def _parse(document: Any, where: str) -> dict[str, jwt.PyJWK]:
        if not isinstance(document, Mapping) or not isinstance(document.get("keys"), list):
            raise AuthenticationFailed(f"{where} is not a JWK Set")
        keys: dict[str, jwt.PyJWK] = {}
        for raw in document["keys"]:
            if not isinstance(raw, Mapping) or raw.get("kty") == "oct":
                continue  # symmetric keys are never trusted
            try:
                key = jwt.PyJWK(dict(raw))
            except (jwt.exceptions.PyJWKError, jwt.exceptions.InvalidKeyError):
                continue
            if key.key_id:
                keys[key.key_id] = key
        return keys

    def _fetch(self, url: str) -> dict[str, jwt.PyJWK]:
        try:
            self.destinations.check(url)
        except UnsafeDestination as error:
            raise AuthenticationFailed(f"key set {url} not fetched: {error}") from None
        try:
            response = self.session.get(
                url,
                timeout=self.timeout_seconds,
                headers={"Accept": "application/json"},
                allow_redirects=False,
            )
            if response.is_redirect:
                raise AuthenticationFailed(f"key set {url} answered with a redirect, which is not followed")
            response.raise_for_status()
            document = response.json()
        except (requests.RequestException, ValueError) as error:
            raise AuthenticationFailed(f"cannot fetch key set {url}: {type(error).__name__}") from None
        return self._parse(document, url)

    def key(self, url: str, kid: str) -> jwt.PyJWK:
        now = self.clock()
        with self._lock:
            entry = self._sets.get(url)
            stale = entry is None or now - entry.fetched_at > self.ttl_seconds
            may_refresh = entry is None or now - entry.last_refresh_attempt >= self.min_refresh_seconds
            if entry is not None and kid in entry.keys and not stale:
                return entry.keys[kid]
            if not may_refresh:
                if entry is not None and kid in entry.keys:
                    return entry.keys[kid]
                raise AuthenticationFailed(f"unknown kid {kid!r} for {url} (refresh rate-limited)")
            if entry is not None:
                entry.last_refresh_attempt = now
            keys = self._fetch(url)
            self._sets[url] = _KeySet(keys, now, now)
            if kid not in keys:
                raise AuthenticationFailed(f"unknown kid {kid!r} for {url}")
            return keys[kid]

    def ensure_loaded(self, url: str) -> None:
        """Fetch a key set that is not cached yet (readiness checks); raises AuthenticationFailed."""
        now = self.clock()
        with self._lock:
            entry = self._sets.get(url)
            if entry is not None and now - entry.fetched_at <= self.ttl_seconds:
                return
            if entry is not None and now - entry.last_refresh_attempt < self.min_refresh_seconds:
                return
            if entry is not None:
                entry.last_refresh_attempt = now
            keys = self._fetch(url)
            self._sets[url] = _KeySet(keys, now, now)

    def loaded(self) -> list[str]:
        with self._lock:
            return list(self._sets)


class ReplayCache(Protocol):
    def first_use(self, iss: str, jti: str, expires_at: float) -> bool:
        """Record a jti; False if it was seen before (a replay)."""
        ...


class SqliteReplayCache:
    """A jti cache in a SQLite file that every gunicorn worker opens: no extra server to run, and
    the primary key makes "first use" atomic across processes."""

    def __init__(self, path: Path, clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self.clock = clock
        self._connections = Connections(path)
        self._connections.get().execute(
            "CREATE TABLE IF NOT EXISTS seen_jti "
            "(iss TEXT, jti TEXT, expires_at REAL, PRIMARY KEY (iss, jti))"
        )
        self._inserts = 0

    def first_use(self, iss: str, jti: str, expires_at: float) -> bool:
        db = self._connections.get()
        self._inserts += 1
        if self._inserts % 500 == 1:
            db.execute("DELETE FROM seen_jti WHERE expires_at < ?", (self.clock(),))
        try:
            db.execute("INSERT INTO seen_jti VALUES (?, ?, ?)", (iss, jti, expires_at))
        except sqlite3.IntegrityError:
            return False
        except sqlite3.Error as error:
            raise ReplayStoreUnavailable(f"the jti store failed: {type(error).__name__}") from None
        return True


class RedisReplayCache:
    """A jti cache in Redis (``SET NX`` with expiry), for deployments that run several hosts."""

    def __init__(self, url: str, clock: Callable[[], float] = time.time) -> None:
        import redis  # noqa: PLC0415 - optional dependency, imported only when configured

        self.client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        self._errors: tuple[type[Exception], ...] = (redis.RedisError,)
        self.clock = clock

    def first_use(self, iss: str, jti: str, expires_at: float) -> bool:
        ttl = max(int(expires_at - self.clock()) + 1, 1)
        try:
            return bool(self.client.set(f"ichis:jti:{iss}:{jti}", b"1", nx=True, ex=ttl))
        except self._errors as error:
            raise ReplayStoreUnavailable(f"the jti store failed: {type(error).__name__}") from None


@dataclass(frozen=True)
class Caller:
    """Who called, once authenticated (for logs and audit)."""

    iss: str
    jti: str
    tenant: str | None
    kid: str


@dataclass
class Authenticator:
    issuers: Mapping[str, TrustedIssuer]
    keys: KeySetCache
    replay: ReplayCache
    clock_skew_seconds: float = 60.0
    max_lifetime_seconds: float = 300.0
    clock: Callable[[], float] = time.time
    _inline: dict[str, dict[str, jwt.PyJWK]] = field(default_factory=dict)

    def _inline_keys(self, issuer: TrustedIssuer) -> dict[str, jwt.PyJWK]:
        """An issuer's configured key set, parsed once."""
        cached = self._inline.get(issuer.iss)
        if cached is None:
            cached = self._inline[issuer.iss] = KeySetCache._parse(
                issuer.jwks, f"inline key set of {issuer.iss}"
            )
        return cached

    def _configured_key(self, issuer: TrustedIssuer, kid: str) -> jwt.PyJWK:
        """The key ``kid`` from the issuer's configured key set (inline, else its jwks_url)."""
        if issuer.jwks is not None:
            keys = self._inline_keys(issuer)
            if kid not in keys:
                raise AuthenticationFailed(f"unknown kid {kid!r} in the inline key set of {issuer.iss}")
            return keys[kid]
        if issuer.jwks_url is None:
            raise AuthenticationFailed(f"no key set for {issuer.iss}")
        return self.keys.key(issuer.jwks_url, kid)

    def _signing_key(self, header: Mapping[str, Any], issuer: TrustedIssuer) -> jwt.PyJWK:
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise AuthenticationFailed("the JWT header has no kid")
        jku = header.get("jku")
        if jku is not None and jku in issuer.jku_allow:
            return self.keys.key(jku, kid)
        if jku is not None:
            # Never fetched: a jku the hospital did not list is a URL the caller chose. The key
            # the hospital registered for this issuer is still good if it holds the kid.
            try:
                return self._configured_key(issuer, kid)
            except AuthenticationFailed as error:
                raise AuthenticationFailed(
                    f"jku {jku!r} is not on the allow-list of {issuer.iss}, and {error}"
                ) from None
        return self._configured_key(issuer, kid)

    def authenticate(self, authorization: str | None, audience: str) -> Caller:
        scheme, _, token = (authorization or "").strip().partition(" ")
        # RFC 6750 section 2.1 with RFC 7235: the scheme name is case-insensitive.
        if scheme.lower() != "bearer" or not token.strip():
            raise AuthenticationFailed("no Bearer token")
        token = token.strip()
        header, claims = _unverified_parts(token)
        _check_numeric_dates(claims)
        alg = header.get("alg")
        if alg not in ALGORITHMS:
            raise AuthenticationFailed(f"algorithm {alg!r} is not accepted")
        iss = claims.get("iss")
        issuer = self.issuers.get(iss) if isinstance(iss, str) else None
        if issuer is None:
            raise AuthenticationFailed(f"untrusted issuer {iss!r}")
        key = self._signing_key(header, issuer)
        if key.algorithm_name is not None and key.algorithm_name != alg and key.key_type in ("EC",):
            # An EC key fixes its curve, hence its algorithm: P-384 signs ES384 only.
            raise AuthenticationFailed(f"algorithm {alg} does not match the key {header.get('kid')!r}")
        _verify_signature(token, key, alg)
        _check_claims(claims, issuer.iss, audience, self.clock(), self.clock_skew_seconds)
        verified = claims
        now = self.clock()
        iat, exp = verified["iat"], verified["exp"]
        if iat > now + self.clock_skew_seconds:
            raise AuthenticationFailed("iat is in the future")
        longest = self.max_lifetime_seconds
        if exp - iat > longest or exp > now + longest + self.clock_skew_seconds:
            raise AuthenticationFailed(
                f"the token lives longer than {self.max_lifetime_seconds:g} s (max_token_lifetime_seconds)"
            )
        jti = verified["jti"]
        if not isinstance(jti, str) or not jti:
            raise AuthenticationFailed("jti must be a non-empty string")
        if not self.replay.first_use(issuer.iss, jti, float(verified["exp"]) + self.clock_skew_seconds):
            raise AuthenticationFailed(f"jti {jti!r} was already used")
        tenant = verified.get("tenant")
        return Caller(issuer.iss, jti, tenant if isinstance(tenant, str) else None, str(header["kid"]))


#: JWS ``alg`` -> hash, and for ES* the curve the key must be on (RFC 7518 section 3).
_HASHES: dict[str, hashes.HashAlgorithm] = {
    "256": hashes.SHA256(),
    "384": hashes.SHA384(),
    "512": hashes.SHA512(),
}
_CURVES = {"ES256": "secp256r1", "ES384": "secp384r1", "ES512": "secp521r1"}
#: A compact JWS: three base64url segments (RFC 7515 section 7.1), nothing else.
_COMPACT = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")


def _b64url(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def _verify_signature(token: str, key: jwt.PyJWK, alg: str) -> None:
    """Check the JWS signature with the key object directly (RFC 7515, RFC 7518 section 3).

    PyJWT would decode the token again and re-check the header; the header and claims were
    decoded once already, and the checks it would make are made here and in ``_check_claims``.
    """
    signing_input, _, encoded = token.rpartition(".")
    signature = _b64url(encoded)
    digest = _HASHES[alg[2:]]
    public = key.key
    try:
        if alg.startswith("ES"):
            if not isinstance(public, ec.EllipticCurvePublicKey) or public.curve.name != _CURVES[alg]:
                raise AuthenticationFailed(f"algorithm {alg} does not match the key's type or curve")
            size = (public.curve.key_size + 7) // 8
            if len(signature) != 2 * size:
                raise AuthenticationFailed("the ECDSA signature has the wrong length")
            r, s = int.from_bytes(signature[:size], "big"), int.from_bytes(signature[size:], "big")
            public.verify(encode_dss_signature(r, s), signing_input.encode(), ec.ECDSA(digest))
        else:
            if not isinstance(public, rsa.RSAPublicKey):
                raise AuthenticationFailed(f"algorithm {alg} needs an RSA key")
            pad: padding.AsymmetricPadding = (
                padding.PKCS1v15()
                if alg.startswith("RS")
                else padding.PSS(mgf=padding.MGF1(digest), salt_length=digest.digest_size)
            )
            public.verify(signature, signing_input.encode(), pad, digest)
    except InvalidSignature:
        raise AuthenticationFailed("JWT rejected: the signature does not verify") from None


def _check_claims(claims: Mapping[str, Any], iss: str, audience: str, now: float, leeway: float) -> None:
    """The registered claims PyJWT checks (RFC 7519 section 4.1), with the same leeway rules."""
    for name in ("exp", "iat", "jti", "iss", "aud"):
        if name not in claims:
            raise AuthenticationFailed(f"JWT rejected: the {name} claim is missing")
    if claims["iss"] != iss:
        raise AuthenticationFailed("JWT rejected: iss does not match")
    aud = claims["aud"]
    audiences = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else None
    if audiences is None or not all(isinstance(a, str) for a in audiences) or audience not in audiences:
        raise AuthenticationFailed("JWT rejected: InvalidAudienceError: the audience is not this service")
    if claims["exp"] <= now - leeway:
        raise AuthenticationFailed("JWT rejected: the token has expired")
    if "nbf" in claims and claims["nbf"] > now + leeway:
        raise AuthenticationFailed("JWT rejected: the token is not yet valid (nbf)")


def _check_numeric_dates(claims: Mapping[str, Any]) -> None:
    """``exp``, ``iat`` and ``nbf`` are NumericDate values: JSON numbers (RFC 7519 section 2).
    PyJWT would read ``"exp": "9999999999"`` as a number; a string is refused here first."""
    for name in ("exp", "iat", "nbf"):
        value = claims.get(name)
        if name in claims and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise AuthenticationFailed(f"{name} must be a number (NumericDate), not {type(value).__name__}")
        if isinstance(value, float) and not math.isfinite(value):
            raise AuthenticationFailed(f"{name} must be a finite number")


def _unverified_parts(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Header and claims before verification, only to choose the issuer and key. Decoded once
    here with the C base64 and json modules; the signature check then decodes the token again."""
    if len(token) > _MAX_TOKEN or not _COMPACT.fullmatch(token):
        raise AuthenticationFailed("malformed JWT")
    parts = token.split(".")
    try:
        header, claims = (
            json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))) for part in parts[:2]
        )
    except (ValueError, binascii.Error):
        raise AuthenticationFailed("malformed JWT") from None
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise AuthenticationFailed("malformed JWT")
    # No JWS extension is supported: a critical one we do not understand must be refused (RFC
    # 7515 section 4.1.11), and an unencoded payload (RFC 7797 "b64") is never accepted.
    if "crit" in header or "b64" in header:
        raise AuthenticationFailed("the JWT uses a JWS extension (crit, b64) this service does not support")
    return header, claims


def build_authenticator(
    issuers: Sequence[TrustedIssuer],
    *,
    session: requests.Session,
    replay: ReplayCache,
    clock_skew_seconds: float,
    jwks_min_refresh_seconds: float,
    max_lifetime_seconds: float,
    key_set_destinations: Destinations,
) -> Authenticator:
    return Authenticator(
        issuers={i.iss: i for i in issuers},
        keys=KeySetCache(session, key_set_destinations, min_refresh_seconds=jwks_min_refresh_seconds),
        replay=replay,
        clock_skew_seconds=clock_skew_seconds,
        max_lifetime_seconds=max_lifetime_seconds,
    )
