"""The EHR as a CDS client: real hook and feedback calls to the stand-in service, HAPI behind the EHR."""

from __future__ import annotations

import html
import re
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import jwt
import pytest
import requests
from flask import Flask
from flask.testing import FlaskClient

from tests.sandbox.conftest import state_of
from tests.sandbox.standin import SERVICE_ID, Recorded, StandIn

pytestmark = pytest.mark.integration

Stack = Callable[..., tuple[Flask, str, StandIn]]


def open_chart(client: FlaskClient, patient: str = "ehr-test-a") -> None:
    assert client.post("/chart", data={"patient": patient}).status_code == 303


def order(
    client: FlaskClient,
    action: str = "draft",
    medication: str = "pembrolizumab-product",
    prefetch: bool = True,
) -> None:
    data = {"action": action, "medication": medication}
    if prefetch:
        data["prefetch"] = "on"
    response = client.post("/orders", data=data)
    assert response.status_code == 303, response.text


def verify_jwt(call: Recorded, ehr_url: str, audience: str) -> dict[str, Any]:
    """The call's JWT checked as a service would: the EHR's JWKS over HTTP, aud = the URL called."""
    token = (call.authorization or "").removeprefix("Bearer ")
    header = jwt.get_unverified_header(token)
    assert header["jku"] == f"{ehr_url}/.well-known/jwks.json"
    keys = jwt.PyJWKSet.from_dict(requests.get(header["jku"], timeout=10).json())
    key = next(k for k in keys.keys if k.key_id == header["kid"])
    claims: dict[str, Any] = jwt.decode(token, key, algorithms=["ES384"], issuer=ehr_url, audience=audience)
    return claims


def shown_card(standin: StandIn) -> dict[str, str]:
    """The last card the stand-in sent: the form fields that name it, its uuid and suggestion uuid."""
    card = standin.cards[-1]
    return {
        "exchange": standin.hook_calls()[-1].body["hookInstance"],
        "uuid": card["uuid"],
        "suggestion": card["suggestions"][0]["uuid"],
    }


def test_a_draft_fires_order_select_with_a_signed_jwt_context_token_and_prefetch(stack: Stack) -> None:
    """Drafting pembrolizumab fires order-select as CDS Hooks 2.0.1 defines the request."""
    app, url, standin = stack()
    client = app.test_client()
    open_chart(client)
    order(client)
    assert [(c.method, c.path) for c in standin.calls] == [
        ("GET", "/cds-services"),
        ("POST", f"/cds-services/{SERVICE_ID}"),
    ]
    discovery, call = standin.calls
    for recorded in (discovery, call):
        claims = verify_jwt(recorded, url, standin.base_url + recorded.path)
        assert set(claims) >= {"iss", "aud", "exp", "iat", "jti"}
    body = call.body
    assert body["hook"] == "order-select"
    assert uuid.UUID(body["hookInstance"])
    assert body["fhirServer"] == f"{url}/fhir"
    authorization = body["fhirAuthorization"]
    assert authorization["token_type"] == "Bearer"  # noqa: S105 - the OAuth token type
    assert authorization["expires_in"] == 300
    assert authorization["subject"] == "ichis-cds"
    assert authorization["patient"] == "ehr-test-a"
    assert (
        authorization["scope"]
        == "patient/Patient.rs patient/Observation.rs patient/Condition.rs patient/MedicationRequest.rs"
    )
    context = body["context"]
    assert context["userId"] == "Practitioner/ichis-sandbox-clinician"
    assert context["patientId"] == "ehr-test-a"
    assert context["encounterId"] == "ehr-test-a-visit"
    draft = context["draftOrders"]["entry"][0]["resource"]
    assert context["selections"] == [f"MedicationRequest/{draft['id']}"]
    assert (draft["status"], draft["intent"]) == ("draft", "order")
    assert draft["medicationCodeableConcept"]["coding"][0]["code"] == "1657750"
    prefetch = body["prefetch"]
    assert prefetch["patient"]["id"] == "ehr-test-a"
    assert len(prefetch["labs"]["entry"]) == 4
    assert prefetch["labs"]["entry"][0]["fullUrl"].startswith(f"{url}/fhir/Observation/")
    assert (
        prefetch["encounter"]["resourceType"] == "OperationOutcome"
    )  # Encounter is not in the service's scope


def test_discovery_is_fetched_once_and_every_call_has_its_own_hook_instance(stack: Stack) -> None:
    """Two selections and a signature: one discovery, three hook calls, three hookInstances."""
    app, _, standin = stack()
    client = app.test_client()
    open_chart(client)
    order(client)
    draft_id = standin.hook_calls()[0].body["context"]["selections"][0].split("/")[1]
    order(client, action=f"select:{draft_id}")
    order(client, action="sign")
    assert [c.method for c in standin.calls].count("GET") == 1
    bodies = [c.body for c in standin.hook_calls()]
    assert [b["hook"] for b in bodies] == ["order-select", "order-select", "order-sign"]
    assert len({b["hookInstance"] for b in bodies}) == 3
    assert "selections" not in bodies[2]["context"]
    assert bodies[2]["context"]["draftOrders"]["entry"][0]["resource"]["id"] == draft_id


def test_without_prefetch_the_service_reads_through_the_proxy_with_its_token_which_is_then_revoked(
    stack: Stack,
) -> None:
    """Prefetch off: no prefetch; the service reads through the proxy with its token, which then dies."""
    app, url, standin = stack()
    client = app.test_client()
    open_chart(client)
    order(client, prefetch=False)
    body = standin.hook_calls()[0].body
    assert "prefetch" not in body
    fetched = standin.fetched[0]
    assert fetched["status"] == 200
    assert len(fetched["body"]["entry"]) == 4
    log = client.get("/_testing/fhir-requests").json
    assert [(e["token"], e["client_id"], e["status"]) for e in log] == [(fetched["token"], "ichis-cds", 200)]
    again = requests.get(
        f"{url}/fhir/Patient/ehr-test-a", headers={"Authorization": f"Bearer {fetched['token']}"}, timeout=10
    )
    assert again.status_code == 401


def test_a_refusal_from_the_service_is_shown_with_its_status_and_operation_outcome(stack: Stack) -> None:
    """A 412 and its OperationOutcome are on the page for the integration engineer."""
    app, _, standin = stack()
    standin.hook_status = 412
    client = app.test_client()
    open_chart(client)
    order(client)
    page = client.get("/").text
    assert re.search(r'data-testid="http-status" data-status="412"', page)
    assert "stand-in refuses: no labs" in page


def test_accepting_a_suggestion_sends_accepted_feedback(stack: Stack) -> None:
    """Accept: feedback names card and suggestion, outcome accepted, a UTC time, a JWT for /feedback."""
    app, url, standin = stack()
    client = app.test_client()
    open_chart(client)
    order(client)
    card = shown_card(standin)
    response = client.post(
        "/cards/accept", data={"exchange": card["exchange"], "card": "0", "suggestion": "0"}
    )
    assert response.status_code == 303
    (call,) = standin.feedback_calls()
    item = call.body["feedback"][0]
    assert item["card"] == card["uuid"]
    assert item["outcome"] == "accepted"
    assert item["acceptedSuggestions"] == [{"id": card["suggestion"]}]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", item["outcomeTimestamp"])
    verify_jwt(call, url, f"{standin.base_url}/cds-services/{SERVICE_ID}/feedback")
    assert 'data-testid="feedback-status" data-status="200"' in client.get("/").text


def test_overriding_with_a_reason_and_comment_sends_overridden_feedback(stack: Stack) -> None:
    """Override: outcome overridden with the chosen reason's Coding and the clinician's comment."""
    app, _, standin = stack()
    client = app.test_client()
    open_chart(client)
    order(client)
    card = shown_card(standin)
    data = {"exchange": card["exchange"], "card": "0", "reason": "1", "comment": "discussed at tumour board"}
    assert client.post("/cards/override", data=data).status_code == 303
    item = standin.feedback_calls()[0].body["feedback"][0]
    assert item["outcome"] == "overridden"
    assert item["overrideReason"] == {
        "reason": {
            "system": "http://example.org/override-reason",
            "code": "trial",
            "display": "Patient in a clinical trial",
        },
        "userComment": "discussed at tumour board",
    }
    again = client.post("/cards/override", data=data)
    assert again.status_code == 400  # a card is overridden once


def test_a_drug_that_is_not_a_checkpoint_inhibitor_gets_no_card(stack: Stack) -> None:
    """Carboplatin: the service answers with no cards, and the page says so."""
    app, _, _ = stack()
    client = app.test_client()
    open_chart(client)
    order(client, medication="carboplatin")
    page = client.get("/").text
    assert 'data-testid="no-cards"' in page
    assert 'data-testid="card"' not in page


def test_a_smart_link_mints_a_launch_bound_to_the_chart_and_opens_the_app_pane(stack: Stack) -> None:
    """The app pane opens {link.url}?iss={ehr}/fhir&launch=..., a launch carrying the card's appContext."""
    app, url, standin = stack()
    client = app.test_client()
    open_chart(client)
    order(client)
    card = shown_card(standin)
    response = client.post("/cards/launch", data={"exchange": card["exchange"], "card": "0", "link": "0"})
    assert response.status_code == 303
    src = re.search(r'<iframe src="([^"]+)"', client.get("/").text)
    assert src is not None
    launch_url = urlsplit(html.unescape(src.group(1)))
    assert f"{launch_url.scheme}://{launch_url.netloc}{launch_url.path}" == f"{standin.base_url}/smart/launch"
    params = dict(parse_qsl(launch_url.query))
    assert params["iss"] == f"{url}/fhir"
    context = state_of(app).store.launch(params["launch"])
    assert context is not None
    assert (context.patient, context.encounter) == ("ehr-test-a", "ehr-test-a-visit")
    assert context.app_context == standin.cards[-1]["links"][0]["appContext"]
