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


def call(client: FlaskClient, bearer: str | None, path: str = "/cds-services/ichis-prognosis") -> Any:
    headers = {"Authorization": f"Bearer {bearer}"} if bearer is not None else {}
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
    "jku not on the allow-list": lambda: token(headers={"jku": "https://evil.example/jwks.json"}),
    "missing exp": lambda: token(drop=("exp",)),
    "no kid": lambda: token(kid=None),
}


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


@pytest.mark.parametrize(("key", "alg", "kid"), [(EC_KEY, "ES384", "ec-1"), (RSA_KEY, "RS384", "rsa-1")])
def test_valid_es384_and_rs384_tokens_are_accepted(
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


def test_the_audience_without_a_public_base_url_is_the_url_called(make_app: Callable[..., Flask]) -> None:
    client = make_app(
        auth_mode="jwt", trusted_issuers=[{"iss": ISS, "jwks": JWKS}], public_base_url=""
    ).test_client()
    assert call(client, token(aud="http://localhost/cds-services/ichis-prognosis")).status_code == 200


# --- key sets fetched over HTTP: caching, one rate-limited refresh, jku allow-list ----------------


class _KeyServer:
    """A real HTTP server publishing a JWK Set, as an EHR does; it counts the fetches."""

    def __init__(self) -> None:
        self.document: dict[str, Any] = {"keys": [jwk(EC_KEY, "ec-1", "ES384")]}
        self.fetches = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.fetches += 1
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


def test_a_key_set_url_is_fetched_once_and_cached(
    make_app: Callable[..., Flask], key_server: _KeyServer
) -> None:
    client = make_app(
        auth_mode="jwt", trusted_issuers=[{"iss": ISS, "jwks_url": key_server.url}]
    ).test_client()
    assert call(client, token()).status_code == 200
    assert call(client, token()).status_code == 200
    assert key_server.fetches == 1


def test_an_unknown_kid_causes_one_rate_limited_refresh(
    make_app: Callable[..., Flask], key_server: _KeyServer
) -> None:
    client = make_app(
        auth_mode="jwt", trusted_issuers=[{"iss": ISS, "jwks_url": key_server.url}]
    ).test_client()
    assert call(client, token()).status_code == 200
    for _ in range(5):
        assert call(client, token(kid="ec-unknown")).status_code == 401
    assert key_server.fetches == 1  # the first fetch was moments ago: no refresh within the limit


def test_a_rotated_key_is_found_by_the_refresh(
    make_app: Callable[..., Flask], key_server: _KeyServer
) -> None:
    client = make_app(
        auth_mode="jwt",
        jwks_min_refresh_seconds=0,
        trusted_issuers=[{"iss": ISS, "jwks_url": key_server.url}],
    ).test_client()
    assert call(client, token()).status_code == 200
    key_server.document["keys"].append(jwk(RSA_KEY, "rsa-2", "RS384"))
    assert call(client, token(key=RSA_KEY, alg="RS384", kid="rsa-2")).status_code == 200
    assert key_server.fetches == 2


def test_a_jku_on_the_allow_list_is_used(make_app: Callable[..., Flask], key_server: _KeyServer) -> None:
    issuers = [{"iss": ISS, "jwks": {"keys": []}, "jku_allow": [key_server.url]}]
    client = make_app(auth_mode="jwt", trusted_issuers=issuers).test_client()
    assert call(client, token(headers={"jku": key_server.url})).status_code == 200
