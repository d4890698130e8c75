"""The EHR's FHIR endpoint: an authenticating proxy to a real HAPI server, read through the test client."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable

import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests.sandbox.conftest import (
    SMART_REDIRECT,
    TEST_BASE,
    authorize_query,
    mint_launch,
    pkce_pair,
    redirect_params,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def proxy(make_ehr: Callable[..., Flask], hapi: str) -> FlaskClient:
    return make_ehr(fhir_upstream=hapi).test_client()


def token_for(client: FlaskClient, patient: str = "ehr-test-a", scope: str = "launch patient/*.rs") -> str:
    """A token of the ichis-smart client, through the real authorize and token endpoints."""
    verifier, challenge = pkce_pair()
    query = authorize_query(
        launch=mint_launch(client, patient=patient), code_challenge=challenge, scope=scope
    )
    code = redirect_params(client.get(f"/auth/authorize?{query}").headers["Location"])["code"]
    secret = base64.b64encode(b"ichis-smart:ichis-smart-sandbox-secret").decode()
    response = client.post(
        "/auth/token",
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": SMART_REDIRECT,
            "code_verifier": verifier,
        },
        headers={"Authorization": f"Basic {secret}"},
    )
    token: str = response.json["access_token"]
    return token


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.mark.parametrize("header", [None, "Bearer not-a-token-we-issued", "Basic aWNoaXM6eA=="])
def test_without_a_valid_bearer_token_the_answer_is_401_with_an_operation_outcome(
    proxy: FlaskClient, header: str | None
) -> None:
    """No token, an unknown one, or another scheme: 401, WWW-Authenticate, and an OperationOutcome."""
    response = proxy.get("/fhir/Patient/ehr-test-a", headers={"Authorization": header} if header else {})
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert response.mimetype == "application/fhir+json"
    assert response.json["resourceType"] == "OperationOutcome"


def test_a_token_reads_its_patient_through_the_proxy(proxy: FlaskClient) -> None:
    """The token's own patient comes back as HAPI stored it."""
    response = proxy.get("/fhir/Patient/ehr-test-a", headers=bearer(token_for(proxy)))
    assert response.status_code == 200
    assert response.json["name"][0]["family"] == "Alpha"


@pytest.mark.parametrize(
    "path",
    [
        "/fhir/Patient/ehr-test-b",
        "/fhir/Observation/ehr-b-neut",
        "/fhir/Observation?patient=ehr-test-b",
        "/fhir/Observation?code=751-8",
        "/fhir/Patient",
    ],
)
def test_a_token_for_one_patient_cannot_read_another(proxy: FlaskClient, path: str) -> None:
    """Another patient's record, or a search not pinned to the token's patient, is 403."""
    response = proxy.get(path, headers=bearer(token_for(proxy)))
    assert response.status_code == 403
    assert response.json["resourceType"] == "OperationOutcome"


def test_a_token_without_a_types_scope_cannot_read_it(proxy: FlaskClient) -> None:
    """patient/Patient.rs alone does not reach Observations."""
    token = token_for(proxy, scope="launch patient/Patient.rs")
    assert proxy.get("/fhir/Observation?patient=ehr-test-a", headers=bearer(token)).status_code == 403


def test_bundle_links_point_back_through_the_proxy_and_paging_works(proxy: FlaskClient) -> None:
    """fullUrls and paging links name the proxy, and following the next link pages through it."""
    headers = bearer(token_for(proxy))
    first = proxy.get("/fhir/Observation?patient=ehr-test-a&_count=2&_sort=-date", headers=headers)
    assert first.status_code == 200
    assert "127.0.0.1" not in first.text  # nothing of HAPI's own address leaks
    assert all(e["fullUrl"].startswith(f"{TEST_BASE}/fhir/Observation/") for e in first.json["entry"])
    next_url = next(link["url"] for link in first.json["link"] if link["relation"] == "next")
    assert next_url.startswith(f"{TEST_BASE}/fhir")
    second = proxy.get(next_url.removeprefix(TEST_BASE), headers=headers)
    assert second.status_code == 200
    ids = [e["resource"]["id"] for page in (first, second) for e in page.json["entry"]]
    assert sorted(ids) == ["ehr-a-ig", "ehr-a-neut", "ehr-a-neut-old", "ehr-a-panel"]


def test_the_paging_link_still_needs_the_token(proxy: FlaskClient) -> None:
    """A paging link is a proxy URL like any other: without the token it is 401."""
    first = proxy.get("/fhir/Observation?patient=ehr-test-a&_count=1", headers=bearer(token_for(proxy)))
    next_url = next(link["url"] for link in first.json["link"] if link["relation"] == "next")
    assert proxy.get(next_url.removeprefix(TEST_BASE)).status_code == 401


def test_the_capability_statement_is_public_and_names_the_oauth_endpoints(proxy: FlaskClient) -> None:
    """metadata needs no token and says the server is SMART-protected, with this EHR's endpoints."""
    response = proxy.get("/fhir/metadata")
    assert response.status_code == 200
    security = response.json["rest"][0]["security"]
    uris = {e["url"]: e["valueUri"] for e in security["extension"][0]["extension"]}
    assert uris == {"authorize": f"{TEST_BASE}/auth/authorize", "token": f"{TEST_BASE}/auth/token"}
    assert "127.0.0.1" not in response.text


def test_writes_are_refused_as_not_supported(proxy: FlaskClient) -> None:
    """The sandbox's FHIR endpoint is read-only: a create is 405 with an OperationOutcome."""
    body = json.dumps({"resourceType": "Patient"})
    response = proxy.post("/fhir/Patient", data=body, headers=bearer(token_for(proxy)))
    assert response.status_code == 405
    assert response.json["issue"][0]["code"] == "not-supported"


def test_the_tokens_the_proxy_received_are_listed_for_tests(proxy: FlaskClient) -> None:
    """With testing on, /_testing/fhir-requests lists each request with its token and client."""
    token = token_for(proxy)
    proxy.get("/fhir/Patient/ehr-test-a", headers=bearer(token))
    proxy.get("/fhir/Patient/ehr-test-a")
    log = proxy.get("/_testing/fhir-requests").json
    assert [(e["path"], e["token"], e["client_id"], e["status"]) for e in log[-2:]] == [
        ("Patient/ehr-test-a", token, "ichis-smart", 200),
        ("Patient/ehr-test-a", None, None, 401),
    ]


def test_the_testing_endpoints_are_off_unless_testing_is_on(
    make_ehr: Callable[..., Flask], hapi: str
) -> None:
    """Without the testing setting the request log and the launch minting do not exist."""
    client = make_ehr(fhir_upstream=hapi, testing=False).test_client()
    assert client.get("/_testing/fhir-requests").status_code == 404
    assert client.post("/_testing/launch", json={"patient": "ehr-test-a"}).status_code == 404
