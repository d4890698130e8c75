"""Client authentication by JWT (CDS Hooks 2.0.1 "Trusting CDS Clients"): the negative matrix."""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from flask import Flask
from flask.testing import FlaskClient

from fhir_mappings.bundles import dumps
from fhir_mappings.config import ConfigurationError
from sandbox.hapi_server import free_port
from tests.http.conftest import hook_body

ISS = "https://ehr.example/sandbox"
SERVICE_URL = "https://cds.example/cds-services/ichis-prognosis"
EC_KEY = ec.generate_private_key(ec.SECP384R1())
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
OTHER_EC_KEY = ec.generate_private_key(ec.SECP384R1())


def jwk(private_key: Any, kid: str, alg: str) -> dict[str, Any]:
    public = private_key.public_key()
    algorithm = jwt.algorithms.ECAlgorithm if alg.startswith("ES") else jwt.algorithms.RSAAlgorithm
    key: dict[str, Any] = json.loads(algorithm.to_jwk(public))
    key.update({"kid": kid, "alg": alg, "use": "sig"})
    return key


JWKS = {"keys": [jwk(EC_KEY, "ec-1", "ES384"), jwk(RSA_KEY, "rsa-1", "RS384")]}


def token(
    *,
    key: Any = EC_KEY,
    alg: str = "ES384",
    kid: str | None = "ec-1",
    headers: dict[str, Any] | None = None,
    drop: tuple[str, ...] = (),
    **claims: Any,
) -> str:
    now = int(time.time())
    body: dict[str, Any] = {
        "iss": ISS,
        "aud": SERVICE_URL,
        "iat": now,
        "exp": now + 300,
        "jti": str(uuid.uuid4()),
    }
    body.update(claims)
    for name in drop:
        body.pop(name)
    header = {"typ": "JWT", **({"kid": kid} if kid else {}), **(headers or {})}
    return jwt.encode(body, key, algorithm=alg, headers=header)


@pytest.fixture
def secured(make_app: Callable[..., Flask]) -> FlaskClient:
    return make_app(auth_mode="jwt", trusted_issuers=[{"iss": ISS, "jwks": JWKS}]).test_client()


def call(
    client: FlaskClient,
    bearer: str | None,
    path: str = "/cds-services/ichis-prognosis",
    *,
    scheme: str = "Bearer",
    host: str | None = None,
) -> Any:
    headers = {}
    if bearer is not None:
        # A value that already names a scheme ("Basic ...") is sent as it is.
        headers["Authorization"] = bearer if " " in bearer else f"{scheme} {bearer}"
    if host is not None:
        headers["Host"] = host
    return client.post(
        path, data=dumps(hook_body("ichis-demo-0")), content_type="application/json", headers=headers
    )


def _hs256_with_public_key() -> str:
    """The classic algorithm-confusion attack: HMAC keyed with the server's public key bytes."""
    pem = EC_KEY.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = json.dumps({"alg": "HS256", "typ": "JWT", "kid": "ec-1"}).encode()
    now = int(time.time())
    payload = json.dumps({"iss": ISS, "aud": SERVICE_URL, "iat": now, "exp": now + 300, "jti": "x"}).encode()
    import base64
    import hashlib
    import hmac

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    signing_input = f"{b64(header)}.{b64(payload)}"
    signature = hmac.new(pem, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(signature)}"


def _alg_none() -> str:
    now = int(time.time())
    return jwt.encode(
        {"iss": ISS, "aud": SERVICE_URL, "iat": now, "exp": now + 300, "jti": "n"},
        None,
        algorithm="none",
        headers={"kid": "ec-1"},
    )


NEGATIVE = {
    "no token": lambda: None,
    "malformed token": lambda: "not.a.jwt",
    "bad signature": lambda: token(key=OTHER_EC_KEY),
    "unknown kid": lambda: token(kid="ec-9"),
    "alg none": _alg_none,
    "HS256 signed with the public key": _hs256_with_public_key,
    "wrong aud": lambda: token(aud="https://cds.example/cds-services/other"),
    "expired": lambda: token(iat=int(time.time()) - 1000, exp=int(time.time()) - 600),
    "iat in the future": lambda: token(iat=int(time.time()) + 600, exp=int(time.time()) + 900),
    "missing jti": lambda: token(drop=("jti",)),
    "untrusted iss": lambda: token(iss="https://evil.example"),
    "jku not on the allow-list, kid not in the configured key set": lambda: token(
        kid="evil-1", headers={"jku": "https://evil.example/jwks.json"}
    ),
    "missing exp": lambda: token(drop=("exp",)),
    "no kid": lambda: token(kid=None),
    # NumericDate (RFC 7519 section 2) is a JSON number; PyJWT alone would read these strings.
    "exp as a string": lambda: token(exp=str(int(time.time()) + 300)),
    "iat as a string": lambda: token(iat=str(int(time.time()))),
    "nbf as a string": lambda: token(nbf=str(int(time.time()))),
    "exp as a boolean": lambda: token(exp=True),
    "exp not finite": lambda: token(exp=float("inf")),
    # CDS Hooks: short-lived tokens (5 minutes recommended); max_token_lifetime_seconds is 300.
    "exp ten years ahead": lambda: token(exp=int(time.time()) + 10 * 365 * 86400),
    "a lifetime over the maximum": lambda: token(exp=int(time.time()) + 301),
    "an old iat to stretch the lifetime": lambda: token(
        iat=int(time.time()) - 3000, exp=int(time.time()) + 200
    ),
    "nbf in the future": lambda: token(nbf=int(time.time()) + 600),
    "aud of another host": lambda: token(aud="https://attacker.example/cds-services/ichis-prognosis"),
    "aud of this path on http": lambda: token(aud="http://cds.example/cds-services/ichis-prognosis"),
    "aud as a list without this service": lambda: token(aud=["https://other.example/cds-services/x"]),
    "Basic instead of Bearer": lambda: "Basic " + token(),
    "a critical extension": lambda: token(headers={"crit": ["exp-x"], "exp-x": 1}),
    "an unencoded payload (b64)": lambda: token(headers={"b64": False, "crit": ["b64"]}),
    "padding in a segment": lambda: token() + "=",
    "a character outside base64url": lambda: token().replace(".", ".!", 1),
    "an ES384 token under an RSA key id": lambda: token(kid="rsa-1"),
    "RS384 signature claimed as PS384": lambda: _relabelled(
        token(key=RSA_KEY, alg="RS384", kid="rsa-1"), "PS384"
    ),
    "iss of a trusted issuer under another's key": lambda: token(iss="https://other-ehr.example"),
    "aud as a number": lambda: token(aud=5),
}


def _relabelled(signed: str, alg: str) -> str:
    """The token with another alg in its header and the original signature."""
    import base64

    header, payload, signature = signed.split(".")
    decoded = json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))
    decoded["alg"] = alg
    encoded = base64.urlsafe_b64encode(json.dumps(decoded).encode()).rstrip(b"=").decode()
    return f"{encoded}.{payload}.{signature}"


@pytest.mark.parametrize("case", list(NEGATIVE))
def test_each_bad_token_gets_a_bare_401(secured: FlaskClient, case: str) -> None:
    response = call(secured, NEGATIVE[case]())
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert response.get_json()["issue"][0]["diagnostics"] == "The request could not be authenticated."


def test_a_replayed_jti_is_refused(secured: FlaskClient) -> None:
    once = token()
    assert call(secured, once).status_code == 200
    assert call(secured, once).status_code == 401


@pytest.mark.parametrize(
    ("key", "alg", "kid"),
    [
        (EC_KEY, "ES384", "ec-1"),
        (RSA_KEY, "RS384", "rsa-1"),
        (RSA_KEY, "PS384", "rsa-1"),
        (RSA_KEY, "RS256", "rsa-1"),
    ],
)
def test_valid_es384_rs384_and_ps384_tokens_are_accepted(
    secured: FlaskClient, key: Any, alg: str, kid: str
) -> None:
    response = call(secured, token(key=key, alg=alg, kid=kid))
    assert response.status_code == 200
    assert response.get_json()["cards"]


def test_the_reason_goes_to_the_log_not_to_the_caller(
    secured: FlaskClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="ichis.auth")
    response = call(secured, token(aud="https://elsewhere.example"))
    assert "audience" not in response.get_data(as_text=True).lower()
    assert any("InvalidAudienceError" in getattr(r, "reason", "") for r in caplog.records)


def test_feedback_needs_a_token_too(secured: FlaskClient) -> None:
    response = secured.post("/cds-services/ichis-prognosis/feedback", json={"feedback": []})
    assert response.status_code == 401
    url = "https://cds.example/cds-services/ichis-prognosis/feedback"
    ok = secured.post(
        "/cds-services/ichis-prognosis/feedback",
        json={"feedback": []},
        headers={"Authorization": f"Bearer {token(aud=url)}"},
    )
    assert ok.status_code == 200


def test_discovery_is_open_unless_configured(make_app: Callable[..., Flask]) -> None:
    issuers = [{"iss": ISS, "jwks": JWKS}]
    assert (
        make_app(auth_mode="jwt", trusted_issuers=issuers).test_client().get("/cds-services").status_code
        == 200
    )
    closed = make_app(auth_mode="jwt", trusted_issuers=issuers, auth_discovery=True).test_client()
    assert closed.get("/cds-services").status_code == 401
    bearer = token(aud="https://cds.example/cds-services")
    assert closed.get("/cds-services", headers={"Authorization": f"Bearer {bearer}"}).status_code == 200


def test_authentication_needs_a_public_base_url_for_the_audience(make_app: Callable[..., Flask]) -> None:
    """Without it the audience would follow the request's Host header, which the caller writes."""
    with pytest.raises(ConfigurationError, match="public_base_url is required"):
        make_app(auth_mode="jwt", trusted_issuers=[{"iss": ISS, "jwks": JWKS}], public_base_url="")


def test_the_host_header_does_not_change_the_audience(secured: FlaskClient) -> None:
    """A token minted for another host is refused even when the request names that host."""
    other = token(aud="https://attacker.example/cds-services/ichis-prognosis")
    assert call(secured, other, host="attacker.example").status_code == 401
    assert call(secured, token(), host="attacker.example").status_code == 200


@pytest.mark.parametrize("scheme", ["bearer", "BEARER", "BeArEr"])
def test_the_bearer_scheme_is_matched_in_any_case(secured: FlaskClient, scheme: str) -> None:
    """RFC 6750 with RFC 7235: authentication scheme names are case-insensitive."""
    assert call(secured, token(), scheme=scheme).status_code == 200


def test_a_token_of_exactly_the_maximum_lifetime_is_accepted(secured: FlaskClient) -> None:
    now = int(time.time())
    assert call(secured, token(iat=now, exp=now + 300)).status_code == 200


def test_a_longer_maximum_lifetime_can_be_configured(make_app: Callable[..., Flask]) -> None:
    client = make_app(
        auth_mode="jwt", trusted_issuers=[{"iss": ISS, "jwks": JWKS}], max_token_lifetime_seconds=3600
    ).test_client()
    assert call(client, token(exp=int(time.time()) + 3000)).status_code == 200


def test_an_unlisted_jku_falls_back_to_the_configured_key_set_holding_the_kid(secured: FlaskClient) -> None:
    """The official CDS Hooks sandbox always sends its own jku; the registered key still decides."""
    sandbox_jku = {"jku": "https://sandbox.cds-hooks.org/.well-known/jwks.json"}
    assert call(secured, token(headers=sandbox_jku)).status_code == 200
    assert call(secured, token(key=OTHER_EC_KEY, headers=sandbox_jku)).status_code == 401


# --- key sets fetched over HTTP: caching, one rate-limited refresh, jku allow-list ----------------


class _KeyServer:
    """A real HTTP server publishing a JWK Set, as an EHR does; it counts the fetches. With
    ``redirect_to`` set it answers every fetch with a redirect there instead."""

    def __init__(self) -> None:
        self.document: dict[str, Any] = {"keys": [jwk(EC_KEY, "ec-1", "ES384")]}
        self.fetches = 0
        self.redirect_to: str | None = None
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.fetches += 1
                if outer.redirect_to:
                    self.send_response(302)
                    self.send_header("Location", outer.redirect_to)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = json.dumps(outer.document).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/jwks.json"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def key_server() -> Iterator[_KeyServer]:
    server = _KeyServer()
    yield server
    server.server.shutdown()
    server.server.server_close()


@pytest.fixture
def other_key_server() -> Iterator[_KeyServer]:
    """A second server on loopback: where a redirect would take the key set fetch."""
    server = _KeyServer()
    yield server
    server.server.shutdown()
    server.server.server_close()


@pytest.fixture
def dev_app(make_app: Callable[..., Flask]) -> Callable[..., Flask]:
    """Apps allowed to fetch key sets over http: the loopback key servers speak plain http."""
    return lambda **settings: make_app(auth_mode="jwt", allow_http_jwks=True, **settings)


@pytest.mark.parametrize("where", ["jwks_url", "jku_allow"])
def test_a_key_set_over_plain_http_is_refused_at_start(
    make_app: Callable[..., Flask], key_server: _KeyServer, where: str
) -> None:
    """Anyone on the path could replace keys fetched over http: https unless allow_http_jwks."""
    issuer: dict[str, Any] = {"iss": ISS, "jwks": JWKS}
    issuer[where] = key_server.url if where == "jwks_url" else [key_server.url]
    with pytest.raises(ConfigurationError, match="allow_http_jwks"):
        make_app(auth_mode="jwt", trusted_issuers=[issuer])
    assert key_server.fetches == 0


def test_a_key_set_redirect_is_not_followed(
    dev_app: Callable[..., Flask], key_server: _KeyServer, other_key_server: _KeyServer
) -> None:
    key_server.redirect_to = other_key_server.url
    client = dev_app(trusted_issuers=[{"iss": ISS, "jwks_url": key_server.url}]).test_client()
    assert call(client, token()).status_code == 401
    assert (key_server.fetches, other_key_server.fetches) == (1, 0)


def test_an_unlisted_jku_is_never_fetched(dev_app: Callable[..., Flask], key_server: _KeyServer) -> None:
    client = dev_app(trusted_issuers=[{"iss": ISS, "jwks": {"keys": []}}]).test_client()
    assert call(client, token(headers={"jku": key_server.url})).status_code == 401
    assert key_server.fetches == 0


def test_a_key_set_url_is_fetched_once_and_cached(
    dev_app: Callable[..., Flask], key_server: _KeyServer
) -> None:
    client = dev_app(trusted_issuers=[{"iss": ISS, "jwks_url": key_server.url}]).test_client()
    assert call(client, token()).status_code == 200
    assert call(client, token()).status_code == 200
    assert key_server.fetches == 1


def test_an_unknown_kid_causes_one_rate_limited_refresh(
    dev_app: Callable[..., Flask], key_server: _KeyServer
) -> None:
    client = dev_app(trusted_issuers=[{"iss": ISS, "jwks_url": key_server.url}]).test_client()
    assert call(client, token()).status_code == 200
    for _ in range(5):
        assert call(client, token(kid="ec-unknown")).status_code == 401
    assert key_server.fetches == 1  # the first fetch was moments ago: no refresh within the limit


def test_a_rotated_key_is_found_by_the_refresh(dev_app: Callable[..., Flask], key_server: _KeyServer) -> None:
    client = dev_app(
        jwks_min_refresh_seconds=0,
        trusted_issuers=[{"iss": ISS, "jwks_url": key_server.url}],
    ).test_client()
    assert call(client, token()).status_code == 200
    key_server.document["keys"].append(jwk(RSA_KEY, "rsa-2", "RS384"))
    assert call(client, token(key=RSA_KEY, alg="RS384", kid="rsa-2")).status_code == 200
    assert key_server.fetches == 2


def test_a_jku_on_the_allow_list_is_used(dev_app: Callable[..., Flask], key_server: _KeyServer) -> None:
    issuers = [{"iss": ISS, "jwks": {"keys": []}, "jku_allow": [key_server.url]}]
    client = dev_app(trusted_issuers=issuers).test_client()
    assert call(client, token(headers={"jku": key_server.url})).status_code == 200


def test_an_unreachable_replay_store_refuses_calls_with_a_503_not_a_500(
    make_app: Callable[..., Flask],
) -> None:
    """Freshness cannot be checked, so nothing is let in; the answer says so without internals."""
    dead = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    client = make_app(
        auth_mode="jwt", trusted_issuers=[{"iss": ISS, "jwks": JWKS}], replay_store=dead
    ).test_client()
    reply = call(client, token())
    assert reply.status_code == 503
    assert reply.get_json()["resourceType"] == "OperationOutcome"
