"""The sandbox's SMART App Launch 2.2 authorization server, through the Flask test client."""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl

import jwt
import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from tests.sandbox.conftest import (
    SMART_REDIRECT,
    TEST_BASE,
    authorize_query,
    mint_launch,
    pkce_pair,
    redirect_params,
    state_of,
)

SECRET = "ichis-smart-sandbox-secret"  # noqa: S105 - the sandbox's documented default
PUBLIC_APP = {
    "client_id": "public-app",
    "type": "public",
    "redirect_uris": ["http://127.0.0.1:8500/callback"],
    "scopes": ["launch", "patient/*.rs"],
}


def basic(client_id: str = "ichis-smart", secret: str = SECRET) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()}


def get_code(client: FlaskClient, **overrides: Any) -> tuple[str, str]:
    """Run an EHR launch's authorization step; the code and the PKCE verifier."""
    verifier, challenge = pkce_pair()
    overrides.setdefault("launch", mint_launch(client))
    response = client.get(f"/auth/authorize?{authorize_query(code_challenge=challenge, **overrides)}")
    assert response.status_code == 302, response.text
    params = redirect_params(response.headers["Location"])
    assert "code" in params, params
    return params["code"], verifier


def exchange(client: FlaskClient, code: str, verifier: str | None) -> TestResponse:
    """The confidential ichis-smart client's token request (HTTP Basic)."""
    data = {"grant_type": "authorization_code", "code": code, "redirect_uri": SMART_REDIRECT}
    if verifier is not None:
        data["code_verifier"] = verifier
    return client.post("/auth/token", data=data, headers=basic())


def test_smart_configuration_names_the_endpoints_s256_and_the_capabilities(client: FlaskClient) -> None:
    """The discovery document lists the endpoints, S256 only, and the SMART capabilities offered."""
    config = client.get("/fhir/.well-known/smart-configuration").json
    assert config["authorization_endpoint"] == f"{TEST_BASE}/auth/authorize"
    assert config["token_endpoint"] == f"{TEST_BASE}/auth/token"
    assert config["jwks_uri"] == f"{TEST_BASE}/.well-known/jwks.json"
    assert config["code_challenge_methods_supported"] == ["S256"]
    assert config["grant_types_supported"] == ["authorization_code", "refresh_token"]
    assert {"online_access", "offline_access"} <= set(config["scopes_supported"])
    assert config["response_types_supported"] == ["code"]
    expected = {
        "launch-ehr",
        "client-confidential-symmetric",
        "client-public",
        "context-ehr-patient",
        "permission-v2",
        "permission-online",
        "permission-offline",
    }
    assert expected <= set(config["capabilities"])


def test_an_ehr_launch_redirects_back_with_a_code_and_the_exact_state(client: FlaskClient) -> None:
    """Approval by the sandbox user sends the browser to the registered redirect URI with code and state."""
    _, challenge = pkce_pair()
    query = authorize_query(launch=mint_launch(client), code_challenge=challenge, state="a b+c/=")
    response = client.get(f"/auth/authorize?{query}")
    assert response.status_code == 302
    assert response.headers["Location"].startswith(SMART_REDIRECT + "?")
    params = redirect_params(response.headers["Location"])
    assert params["state"] == "a b+c/="
    assert len(params["code"]) >= 32


def test_the_token_response_carries_scope_and_the_launch_context(client: FlaskClient) -> None:
    """The token response has the token, its lifetime, the granted scope and the SMART launch context."""
    launch = mint_launch(
        client,
        patient="pat-9",
        encounter="enc-4",
        appContext='{"order":"MedicationRequest/m1"}',
        fhirContext=[{"reference": "MedicationRequest/m1"}],
    )
    code, verifier = get_code(client, launch=launch)
    response = exchange(client, code, verifier)
    assert response.status_code == 200, response.text
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["Pragma"] == "no-cache"
    token = response.json
    assert token["token_type"] == "Bearer"  # noqa: S105 - the OAuth token type, not a password
    assert token["expires_in"] == 3600
    assert token["scope"] == "launch openid fhirUser patient/Patient.rs patient/Observation.rs"
    assert token["patient"] == "pat-9"
    assert token["encounter"] == "enc-4"
    assert token["appContext"] == '{"order":"MedicationRequest/m1"}'
    assert token["fhirContext"] == [{"reference": "MedicationRequest/m1"}]
    assert token["need_patient_banner"] is True
    assert token["smart_style_url"] == f"{TEST_BASE}/smart-style.json"
    assert client.get("/smart-style.json").status_code == 200


def test_the_id_token_is_rs256_from_the_published_keys_and_names_the_fhir_user(client: FlaskClient) -> None:
    """With openid and fhirUser granted, an RS256 id token verifies against the JWKS and carries fhirUser."""
    code, verifier = get_code(client)
    id_token = exchange(client, code, verifier).json["id_token"]
    keys = jwt.PyJWKSet.from_dict(client.get("/.well-known/jwks.json").json)
    kid = jwt.get_unverified_header(id_token)["kid"]
    key = next(k for k in keys.keys if k.key_id == kid)
    claims = jwt.decode(id_token, key, algorithms=["RS256"], audience="ichis-smart", issuer=TEST_BASE)
    assert claims["fhirUser"] == f"{TEST_BASE}/fhir/Practitioner/ichis-sandbox-clinician"
    assert claims["sub"] == "Practitioner/ichis-sandbox-clinician"
    assert client.get("/.well-known/openid-configuration").json["issuer"] == TEST_BASE


@pytest.mark.parametrize(
    ("pkce", "reason"),
    [
        ({"code_challenge": None, "code_challenge_method": None}, "PKCE is required"),
        ({"code_challenge": None}, "PKCE is required"),
        ({"code_challenge_method": "plain"}, "plain is not supported"),
        ({"code_challenge_method": None}, "must be S256"),
    ],
)
def test_authorization_without_s256_pkce_is_refused_back_to_the_app(
    client: FlaskClient, pkce: dict[str, Any], reason: str
) -> None:
    """No challenge, or any method but S256, comes back to the app as invalid_request with its state."""
    _, challenge = pkce_pair()
    query = authorize_query(launch=mint_launch(client), **{"code_challenge": challenge, **pkce})
    response = client.get(f"/auth/authorize?{query}")
    assert response.status_code == 302
    params = redirect_params(response.headers["Location"])
    assert params["error"] == "invalid_request"
    assert reason in params["error_description"]
    assert params["state"] == "state-7f3a"
    assert "code" not in params


@pytest.mark.parametrize(
    "redirect_uri",
    [
        "http://evil.example/callback",
        SMART_REDIRECT + "/",
        SMART_REDIRECT + "?next=http://evil.example",
        SMART_REDIRECT.replace("8000", "8001"),
        SMART_REDIRECT.upper(),
        None,
    ],
)
def test_a_redirect_uri_that_is_not_registered_exactly_gets_an_error_page(
    client: FlaskClient, redirect_uri: str | None
) -> None:
    """Anything but the exact registered redirect URI ends on the EHR's error page, never a redirect."""
    _, challenge = pkce_pair()
    query = authorize_query(launch=mint_launch(client), code_challenge=challenge, redirect_uri=redirect_uri)
    response = client.get(f"/auth/authorize?{query}")
    assert response.status_code == 400
    assert "Location" not in response.headers
    assert 'data-testid="error-page"' in response.text


def test_an_unknown_client_gets_an_error_page(client: FlaskClient) -> None:
    """A client id nobody registered ends on the error page, whatever redirect URI it names."""
    response = client.get(f"/auth/authorize?{authorize_query(client_id='stranger', code_challenge='x' * 43)}")
    assert response.status_code == 400
    assert "Location" not in response.headers
    assert "invalid_client" in response.text


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"aud": "http://elsewhere.example/fhir"}, "aud must be"),
        ({"aud": None}, "aud is required"),
        ({"launch": None}, "needs the launch parameter"),
        ({"launch": "never-minted"}, "unknown or has expired"),
    ],
)
def test_a_wrong_aud_or_launch_is_refused_back_to_the_app(
    client: FlaskClient, overrides: dict[str, Any], reason: str
) -> None:
    """SMART's aud and launch rules are checked, and the refusal goes back to the app with its state."""
    _, challenge = pkce_pair()
    params: dict[str, Any] = {"launch": mint_launch(client), "code_challenge": challenge, **overrides}
    response = client.get(f"/auth/authorize?{authorize_query(**params)}")
    assert response.status_code == 302
    answer = redirect_params(response.headers["Location"])
    assert answer["error"] == "invalid_request"
    assert reason in answer["error_description"]
    assert answer["state"] == "state-7f3a"


def test_authorization_also_accepts_a_form_post(client: FlaskClient) -> None:
    """The authorize endpoint takes POSTed forms too (SMART's authorize-post capability)."""
    _, challenge = pkce_pair()
    form = parse_qsl(authorize_query(launch=mint_launch(client), code_challenge=challenge))
    response = client.post("/auth/authorize", data=dict(form))
    assert response.status_code == 302
    assert "code" in redirect_params(response.headers["Location"])


def test_a_code_works_once_and_its_reuse_revokes_the_token(client: FlaskClient) -> None:
    """A second exchange of the same code fails, and the token from the first stops working."""
    code, verifier = get_code(client)
    first = exchange(client, code, verifier)
    assert first.status_code == 200
    second = exchange(client, code, verifier)
    assert second.status_code == 400
    assert second.json["error"] == "invalid_grant"
    answer = client.get(
        "/fhir/Patient/pat-1", headers={"Authorization": f"Bearer {first.json['access_token']}"}
    )
    assert answer.status_code == 401


def test_a_code_expires_after_the_code_lifetime(ehr: Flask, client: FlaskClient) -> None:
    """A code presented after its 60 seconds is refused as invalid_grant."""
    code, verifier = get_code(client)
    store = state_of(ehr).store
    issued = store.clock()
    store.clock = lambda: issued + 61
    response = exchange(client, code, verifier)
    assert response.status_code == 400
    assert response.json["error"] == "invalid_grant"


@pytest.mark.parametrize("verifier", [None, "a-wrong-verifier-that-is-long-enough-to-be-a-valid-one-0123"])
def test_the_code_exchange_needs_the_matching_pkce_verifier(
    client: FlaskClient, verifier: str | None
) -> None:
    """Without the verifier, or with another one, a confidential client gets no token either."""
    code, _ = get_code(client)
    response = exchange(client, code, verifier)
    assert response.status_code == 400
    assert response.json["error"] in ("invalid_request", "invalid_grant")


@pytest.mark.parametrize(
    "credentials",
    [
        {},
        {"client_id": "ichis-smart", "client_secret": SECRET},  # client_secret_post is not offered
        {"headers": basic(secret="wrong")},  # noqa: S106 - a deliberately wrong test secret
    ],
)
def test_a_confidential_client_must_authenticate_with_http_basic(
    client: FlaskClient, credentials: dict[str, Any]
) -> None:
    """The confidential client's code is useless without its secret in an Authorization: Basic header."""
    code, verifier = get_code(client)
    headers = credentials.pop("headers", {})
    data = {"grant_type": "authorization_code", "code": code, "redirect_uri": SMART_REDIRECT}
    data |= {"code_verifier": verifier, **credentials}
    response = client.post("/auth/token", data=data, headers=headers)
    assert response.status_code in (400, 401)
    assert response.json["error"] == "invalid_client"


def test_a_public_client_exchanges_its_code_with_pkce_alone(make_ehr: Callable[..., Flask]) -> None:
    """A public client sends client_id and the verifier, no secret, and gets its token."""
    client = make_ehr(clients=[PUBLIC_APP]).test_client()
    verifier, challenge = pkce_pair()
    redirect = PUBLIC_APP["redirect_uris"][0]
    query = authorize_query(
        client_id="public-app",
        redirect_uri=redirect,
        scope="launch patient/Observation.rs",
        launch=mint_launch(client),
        code_challenge=challenge,
    )
    code = redirect_params(client.get(f"/auth/authorize?{query}").headers["Location"])["code"]
    data = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": redirect,
        "client_id": "public-app",
    }
    assert client.post("/auth/token", data=data).status_code == 400  # no verifier: no token
    code = redirect_params(client.get(f"/auth/authorize?{query}").headers["Location"])["code"]
    response = client.post("/auth/token", data={**data, "code": code, "code_verifier": verifier})
    assert response.status_code == 200, response.text
    assert response.json["scope"] == "launch patient/Observation.rs"


def test_a_scope_the_client_is_not_registered_for_is_not_granted(client: FlaskClient) -> None:
    """The grant is the registered subset: patient/*.cruds asked, patient/*.rs granted, system/ dropped."""
    code, verifier = get_code(client, scope="launch patient/*.cruds system/*.rs user/Practitioner.rs")
    assert exchange(client, code, verifier).json["scope"] == "launch patient/*.rs user/Practitioner.rs"


def test_a_scope_denied_by_the_setting_is_left_out_of_the_grant(make_ehr: Callable[..., Flask]) -> None:
    """With deny_scopes set, the app's denied-scope path can be tested: that scope is not granted."""
    client = make_ehr(deny_scopes="patient/Observation.rs").test_client()
    code, verifier = get_code(client)
    assert exchange(client, code, verifier).json["scope"] == "launch openid fhirUser patient/Patient.rs"


def test_a_scope_denied_on_the_launch_is_left_out_of_that_grant_only(client: FlaskClient) -> None:
    """A launch minted with deny_scopes denies them for that launch; the next launch gets them."""
    code, verifier = get_code(client, launch=mint_launch(client, deny_scopes=["patient/Observation.rs"]))
    assert "patient/Observation.rs" not in exchange(client, code, verifier).json["scope"].split()
    code, verifier = get_code(client)
    assert "patient/Observation.rs" in exchange(client, code, verifier).json["scope"].split()


def test_a_request_whose_every_scope_is_refused_gets_invalid_scope(client: FlaskClient) -> None:
    """Nothing grantable is an invalid_scope answer, not an empty token."""
    _, challenge = pkce_pair()
    query = authorize_query(launch=mint_launch(client), code_challenge=challenge, scope="system/*.cruds")
    answer = redirect_params(client.get(f"/auth/authorize?{query}").headers["Location"])
    assert answer["error"] == "invalid_scope"


def test_access_tokens_expire(make_ehr: Callable[..., Flask]) -> None:
    """After access_token_ttl seconds the FHIR endpoint answers 401 to the token."""
    app = make_ehr(access_token_ttl=5)
    client = app.test_client()
    code, verifier = get_code(client)
    token = exchange(client, code, verifier).json
    assert token["expires_in"] == 5
    store = state_of(app).store
    issued = store.clock()
    store.clock = lambda: issued + 6
    response = client.get("/fhir/Patient/pat-1", headers={"Authorization": f"Bearer {token['access_token']}"})
    assert response.status_code == 401
    assert response.json["resourceType"] == "OperationOutcome"


def test_the_token_endpoint_tells_registered_browser_origins_they_may_read_it(client: FlaskClient) -> None:
    """CORS on the token endpoint is for registered origins only (SMART 2.2)."""
    ok = client.options("/auth/token", headers={"Origin": "http://127.0.0.1:8000"})
    other = client.options("/auth/token", headers={"Origin": "http://evil.example"})
    assert ok.headers["Access-Control-Allow-Origin"] == "http://127.0.0.1:8000"
    assert "Access-Control-Allow-Origin" not in other.headers


@pytest.mark.integration
def test_a_standalone_launch_lets_the_sandbox_user_pick_the_patient(
    make_ehr: Callable[..., Flask], hapi: str
) -> None:
    """launch/patient without a launch id shows a patient picker; the pick becomes the token's patient."""
    client = make_ehr(fhir_upstream=hapi).test_client()
    verifier, challenge = pkce_pair()
    query = authorize_query(launch=None, scope="launch/patient patient/Patient.rs", code_challenge=challenge)
    picker = client.get(f"/auth/authorize?{query}")
    assert picker.status_code == 200
    assert 'data-testid="standalone-patient-picker"' in picker.text
    assert 'value="ehr-test-b"' in picker.text
    chosen = client.post("/auth/authorize", data={**dict(parse_qsl(query)), "sandbox_patient": "ehr-test-b"})
    code = redirect_params(chosen.headers["Location"])["code"]
    token = exchange(client, code, verifier).json
    assert token["patient"] == "ehr-test-b"
    assert "encounter" not in token
    unknown = client.post("/auth/authorize", data={**dict(parse_qsl(query)), "sandbox_patient": "nobody-1"})
    assert unknown.status_code == 400


# --- refresh tokens ----------------------------------------------------------------------------

RENEWABLE = "launch openid fhirUser patient/Patient.rs online_access"


def refresh(client: FlaskClient, refresh_token: str, headers: dict[str, str] | None = None) -> TestResponse:
    data = {"grant_type": "refresh_token", "refresh_token": refresh_token}
    return client.post("/auth/token", data=data, headers=basic() if headers is None else headers)


def renewable_token(client: FlaskClient, **launch: Any) -> dict[str, Any]:
    code, verifier = get_code(client, scope=RENEWABLE, launch=mint_launch(client, **launch))
    token: dict[str, Any] = exchange(client, code, verifier).json
    return token


@pytest.mark.parametrize(
    ("scope", "refreshable"),
    [
        ("launch patient/Patient.rs online_access", True),
        ("launch patient/Patient.rs offline_access", True),
        ("launch patient/Patient.rs", False),
    ],
)
def test_a_refresh_token_comes_with_online_or_offline_access_only(
    client: FlaskClient, scope: str, refreshable: bool
) -> None:
    """Asking for online_access or offline_access (and only that) brings a refresh token."""
    code, verifier = get_code(client, scope=scope)
    token = exchange(client, code, verifier).json
    assert token["scope"] == scope
    assert ("refresh_token" in token) is refreshable


def test_a_refresh_token_renews_the_same_grant_and_works_once(ehr: Flask, client: FlaskClient) -> None:
    """The refresh answer brings a new access token for the same patient and scope, and the next
    refresh token; the one presented is spent."""
    first = renewable_token(client, patient="pat-9")
    renewed = refresh(client, first["refresh_token"])
    assert renewed.status_code == 200, renewed.text
    token = renewed.json
    assert token["access_token"] != first["access_token"]
    assert token["scope"] == RENEWABLE
    assert token["expires_in"] == 3600
    assert token["refresh_token"] != first["refresh_token"]
    record = state_of(ehr).store.token(token["access_token"])
    assert record is not None
    assert (record.patient, record.user, record.scope) == (
        "pat-9",
        "Practitioner/ichis-sandbox-clinician",
        RENEWABLE,
    )
    spent = refresh(client, first["refresh_token"])
    assert (spent.status_code, spent.json["error"]) == (400, "invalid_grant")
    assert refresh(client, token["refresh_token"]).status_code == 200


@pytest.mark.parametrize(
    ("headers", "error"),
    [
        ({}, "invalid_client"),
        (basic(secret="wrong"), "invalid_client"),  # noqa: S106 - a deliberately wrong test secret
    ],
)
def test_a_refresh_needs_the_clients_own_secret(
    client: FlaskClient, headers: dict[str, str], error: str
) -> None:
    """A refresh token alone, or with a wrong secret, renews nothing."""
    token = renewable_token(client)
    answer = refresh(client, token["refresh_token"], headers=headers)
    assert answer.status_code in (400, 401)
    assert answer.json["error"] == error


def test_a_denied_online_access_brings_no_refresh_token(client: FlaskClient) -> None:
    """The launch options can refuse online_access: the app then gets no way to renew."""
    token = renewable_token(client, deny_scopes=["online_access"])
    assert "online_access" not in token["scope"].split()
    assert "refresh_token" not in token


def test_a_reused_code_revokes_the_refresh_token_it_gave(client: FlaskClient) -> None:
    """RFC 6749, 4.1.2: a code presented twice revokes what it was exchanged for, refresh tokens too."""
    code, verifier = get_code(client, scope=RENEWABLE)
    token = exchange(client, code, verifier).json
    assert exchange(client, code, verifier).status_code == 400
    assert refresh(client, token["refresh_token"]).json["error"] == "invalid_grant"


def test_an_online_refresh_token_lasts_a_working_day(ehr: Flask, client: FlaskClient) -> None:
    """After twelve hours an online_access refresh token is refused as invalid_grant."""
    token = renewable_token(client)
    store = state_of(ehr).store
    issued = store.clock()
    store.clock = lambda: issued + 12 * 3600 + 1
    assert refresh(client, token["refresh_token"]).json["error"] == "invalid_grant"
