"""The EHR's CDS Hooks client JWTs verify, with PyJWT, against the JWK Set it publishes."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import jwt
import pytest
from flask import Flask

from sandbox.ehr.keys import SigningKeys
from tests.sandbox.conftest import TEST_BASE, state_of

SERVICE = "http://cds.example/cds-services/ichis-prognosis"


def sign(app: Flask, audience: str = SERVICE) -> str:
    state = state_of(app)
    settings = state.settings
    return state.keys.client_jwt(
        issuer=settings.issuer,
        audience=audience,
        alg=settings.jwt_alg,
        jku=settings.jwks_url if settings.jwt_jku else None,
        tenant=settings.tenant,
    )


def published_key(app: Flask, token: str) -> jwt.PyJWK:
    jwks = jwt.PyJWKSet.from_dict(app.test_client().get("/.well-known/jwks.json").json)
    kid = jwt.get_unverified_header(token)["kid"]
    return next(key for key in jwks.keys if key.key_id == kid)


@pytest.mark.parametrize("alg", ["ES384", "RS384"])
def test_the_client_jwt_verifies_against_the_published_jwks(make_ehr: Callable[..., Flask], alg: str) -> None:
    """An ES384 (default) or RS384 JWT verifies with the published key its kid names."""
    app = make_ehr(jwt_alg=alg)
    token = sign(app)
    header = jwt.get_unverified_header(token)
    assert header["alg"] == alg
    assert header["typ"] == "JWT"
    assert header["jku"] == f"{TEST_BASE}/.well-known/jwks.json"
    claims = jwt.decode(
        token,
        published_key(app, token),
        algorithms=[alg],
        audience=SERVICE,
        issuer=TEST_BASE,
        options={"require": ["iss", "aud", "exp", "iat", "jti"]},
    )
    assert claims["exp"] - claims["iat"] == 300
    assert abs(claims["iat"] - time.time()) < 5


def test_the_audience_is_exactly_the_url_called_and_a_wrong_one_fails(ehr: Flask) -> None:
    """aud is the endpoint URL itself; a service checking for its own URL rejects a JWT for another."""
    token = sign(ehr, audience=f"{SERVICE}/feedback")
    key = published_key(ehr, token)
    assert (
        jwt.decode(token, key, algorithms=["ES384"], audience=f"{SERVICE}/feedback")["aud"]
        == f"{SERVICE}/feedback"
    )
    with pytest.raises(jwt.InvalidAudienceError):
        jwt.decode(token, key, algorithms=["ES384"], audience=SERVICE)


def test_every_jwt_has_its_own_jti(ehr: Flask) -> None:
    """Each call gets a fresh jti, so a service can refuse a replayed JWT."""
    ids = {jwt.decode(sign(ehr), options={"verify_signature": False})["jti"] for _ in range(5)}
    assert len(ids) == 5


def test_tenant_is_sent_and_jku_can_be_left_out(make_ehr: Callable[..., Flask]) -> None:
    """The optional tenant claim appears when set; jku disappears with jwt_jku off."""
    app = make_ehr(tenant="hospital-7", jwt_jku="false")
    token = sign(app)
    assert "jku" not in jwt.get_unverified_header(token)
    assert jwt.decode(token, options={"verify_signature": False})["tenant"] == "hospital-7"


def test_the_keys_are_generated_once_and_kept_private_in_the_data_dir(tmp_path: Path) -> None:
    """A restart signs with the same keys (same kid), read from files only their owner can read."""
    first = SigningKeys(tmp_path)
    second = SigningKeys(tmp_path)
    assert first.ec.kid == second.ec.kid
    assert first.rsa.kid == second.rsa.kid
    assert first.id_token.kid == second.id_token.kid
    for path in (tmp_path / "keys").iterdir():
        assert path.stat().st_mode & 0o077 == 0, path


def test_the_jwks_publishes_public_keys_only(ehr: Flask) -> None:
    """The JWK Set has a P-384 key for ES384 and RSA keys for RS384 and RS256, and no private parts."""
    keys = ehr.test_client().get("/.well-known/jwks.json").json["keys"]
    expected = [("EC", "P-384", "ES384"), ("RSA", None, "RS384"), ("RSA", None, "RS256")]
    assert expected == [(k["kty"], k.get("crv"), k.get("alg")) for k in keys]
    assert all("d" not in k and "p" not in k for k in keys)
    assert len({k["kid"] for k in keys}) == 3
