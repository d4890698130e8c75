"""The OAuth pieces: PKCE, the authorization URL, granted scopes, the token response, the id token."""

from __future__ import annotations

import json
import re
import time
from typing import Any

import jwt
import pytest
import requests
from flask import Flask, jsonify

from smart_app.context import parse_app_context
from smart_app.errors import DiscoveryFailed, TokenRequestFailed
from smart_app.oauth import (
    Grants,
    authorization_url,
    discover,
    id_token_user,
    parse_token_response,
    pkce_pair,
    s256,
)
from tests.sandbox.standin import Served


def test_the_s256_challenge_matches_rfc_7636_appendix_b() -> None:
    """The known answer from RFC 7636, Appendix B."""
    assert (
        s256("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk") == "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
    )


def test_each_verifier_is_fresh_and_within_the_rfc_7636_alphabet_and_length() -> None:
    """Verifiers are 43 to 128 unreserved characters and never repeat."""
    (first, challenge), (second, _) = pkce_pair(), pkce_pair()
    assert first != second
    assert re.fullmatch(r"[A-Za-z0-9\-._~]{43,128}", first)
    assert challenge == s256(first)


def test_the_authorization_url_keeps_a_query_the_endpoint_already_has() -> None:
    """An endpoint such as ``/authorize?tenant=x`` keeps its own parameters."""
    url = authorization_url(
        "https://ehr.example/authorize?tenant=x", {"state": "a b", "aud": "https://e/fhir"}
    )
    assert url == "https://ehr.example/authorize?tenant=x&state=a+b&aud=https%3A%2F%2Fe%2Ffhir"


@pytest.mark.parametrize(
    ("scope", "resource_type", "permission", "allowed"),
    [
        ("patient/Observation.rs", "Observation", "s", True),
        ("patient/Observation.r", "Observation", "s", False),
        ("patient/*.rs", "Condition", "s", True),
        ("patient/Patient.read", "Patient", "r", True),  # v1 scopes keep working
        ("user/Observation.rs", "Observation", "s", True),
        ("patient/Observation.rs?category=laboratory", "Observation", "s", False),
        ("system/Observation.rs", "Observation", "s", False),
        ("launch openid fhirUser", "Observation", "s", False),
        ("patient/Observation.cruds", "Observation", "r", True),
        ("patient/Observation.sr", "Observation", "s", False),  # out of order: not a v2 scope
    ],
)
def test_granted_scopes_decide_what_is_read(
    scope: str, resource_type: str, permission: str, allowed: bool
) -> None:
    """Only unrestricted patient or user scopes that cover the interaction allow it."""
    assert Grants.of(scope).allows(resource_type, permission) is allowed


def test_a_token_response_without_scope_grants_what_was_asked() -> None:
    """RFC 6749, 5.1: an absent scope means the request was granted as asked."""
    token = parse_token_response(
        {"access_token": "t", "token_type": "Bearer", "patient": "p1"}, "launch patient/Observation.rs"
    )
    assert token.scope == "launch patient/Observation.rs"
    assert token.need_patient_banner is True
    assert token.expires_in is None


@pytest.mark.parametrize(("sent", "seconds"), [(3600, 3600), ("300", 300), ("soon", None), (True, None)])
def test_the_token_lifetime_is_read_as_whole_seconds(sent: Any, seconds: int | None) -> None:
    """expires_in as a number or a numeric string; anything else leaves the lifetime unknown."""
    body = {"access_token": "t", "token_type": "Bearer", "expires_in": sent}
    assert parse_token_response(body, "launch").expires_in == seconds


def test_an_app_context_sent_as_an_object_is_read_as_json() -> None:
    """Some EHRs hand back the card's appContext already parsed."""
    token = parse_token_response(
        {"access_token": "t", "token_type": "bearer", "appContext": {"patientId": "p1"}}, "launch"
    )
    assert parse_app_context(token.app_context).patient_id == "p1"


@pytest.mark.parametrize(
    "body",
    [
        {"token_type": "Bearer"},
        {"access_token": "t", "token_type": "mac"},
        {"access_token": "", "token_type": "Bearer"},
    ],
)
def test_a_token_response_without_a_bearer_token_is_refused(body: dict[str, Any]) -> None:
    """No usable bearer token, no launch."""
    with pytest.raises(TokenRequestFailed):
        parse_token_response(body, "launch")


def _id_token(**claims: Any) -> str:
    base = {"iss": "https://ehr.example", "aud": "ichis-smart", "exp": int(time.time()) + 300}
    return jwt.encode({**base, **claims}, "not-checked-here-" * 4, algorithm="HS256")


@pytest.mark.parametrize(
    ("claims", "user"),
    [
        ({"fhirUser": "Practitioner/1"}, "Practitioner/1"),
        ({"fhirUser": "Practitioner/1", "aud": "another-app"}, None),
        ({"fhirUser": "Practitioner/1", "iss": "https://elsewhere.example"}, None),
        ({"fhirUser": "Practitioner/1", "exp": int(time.time()) - 3600}, None),
        ({}, None),
    ],
)
def test_the_user_comes_from_an_id_token_whose_claims_hold(claims: dict[str, Any], user: str | None) -> None:
    """Audience, issuer and expiry are checked (OIDC Core 3.1.3.7); the signature is TLS's job here."""
    assert id_token_user(_id_token(**claims), client_id="ichis-smart", issuer="https://ehr.example") == user


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (None, (None, None, (), None, False)),
        (
            json.dumps(
                {
                    "hookInstance": "h",
                    "patientId": "p",
                    "orders": ["MedicationRequest/1"],
                    "at": "2026-11-29T10:00:00+09:00",
                }
            ),
            ("h", "p", ("MedicationRequest/1",), "2026-11-29T10:00:00+09:00", False),
        ),
        (json.dumps({"at": "2026-11-29T10:00:00"}), (None, None, (), None, True)),
        (json.dumps({"at": "0001-01-01T00:00:00+14:00"}), (None, None, (), None, True)),
        (json.dumps({"at": "9999-12-31T23:59:59-05:00"}), (None, None, (), None, True)),
        ("not json", (None, None, (), None, True)),
    ],
)
def test_the_cards_app_context_is_read_defensively(raw: str | None, expected: tuple[Any, ...]) -> None:
    """Malformed parts are dropped (an order time without offset included), never guessed."""
    context = parse_app_context(raw)
    at = context.at.isoformat() if context.at else None
    noted = context.note is not None
    assert (context.hook_instance, context.patient_id, context.orders, at, noted) == expected


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"authorization_endpoint": "https://e/a", "token_endpoint": "http://e/t"}, "https"),
        # The code would go to evil.example, whatever urlsplit makes of the address.
        ({"authorization_endpoint": "https://evil.example\\@e/a", "token_endpoint": "https://e/t"}, "https"),
        (
            {
                "authorization_endpoint": "https://e/a",
                "token_endpoint": "https://e/t",
                "code_challenge_methods_supported": ["plain"],
            },
            "S256",
        ),
        (["not", "an", "object"], "not a JSON object"),
    ],
)
def test_a_discovery_document_the_app_cannot_trust_is_refused(document: Any, message: str) -> None:
    """Plain-http endpoints and servers without PKCE S256 end the launch before anything is sent."""
    stub = Flask("discovery")
    stub.get("/fhir/.well-known/smart-configuration")(lambda: jsonify(document))
    served = Served().mount(stub)
    try:
        with pytest.raises(DiscoveryFailed, match=message), requests.Session() as session:
            discover(f"{served.url}/fhir", session, 5, allow_http=False)
    finally:
        served.stop()
