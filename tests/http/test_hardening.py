"""Hardening: CORS, input limits, where call-backs may go, and what the logs may contain."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from cds_service.logs import JsonFormatter, RequestContextFilter
from fhir_mappings.bundles import dumps
from tests.http.conftest import hook_body, post_hook, prefetch_for
from tests.http.test_auth import ISS, JWKS, token
from tests.markdown import readable

EHR = "https://ehr.example.org"


# --- CORS ------------------------------------------------------------------------------------------


def test_a_preflight_from_an_allowed_origin_is_answered(make_app: Callable[..., Flask]) -> None:
    client = make_app(cors_origins=[EHR]).test_client()
    response = client.options(
        "/cds-services/ichis-prognosis",
        headers={
            "Origin": EHR,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )
    assert response.status_code == 200
    assert response.headers["Access-Control-Allow-Origin"] == EHR
    assert "POST" in response.headers["Access-Control-Allow-Methods"]
    assert "Authorization" in response.headers["Access-Control-Allow-Headers"]


def test_a_preflight_needs_no_token_even_when_authentication_is_on(make_app: Callable[..., Flask]) -> None:
    client = make_app(
        cors_origins=[EHR], auth_mode="jwt", trusted_issuers=[{"iss": ISS, "jwks": JWKS}]
    ).test_client()
    response = client.options(
        "/cds-services/ichis-prognosis", headers={"Origin": EHR, "Access-Control-Request-Method": "POST"}
    )
    assert response.status_code == 200
    assert response.headers["Access-Control-Allow-Origin"] == EHR


def test_other_origins_get_no_cors_headers(make_app: Callable[..., Flask]) -> None:
    client = make_app(cors_origins=[EHR]).test_client()
    response = client.get("/cds-services", headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in response.headers


def test_a_cors_response_on_a_real_call_carries_the_origin(make_app: Callable[..., Flask]) -> None:
    client = make_app(cors_origins=[EHR]).test_client()
    response = client.post(
        "/cds-services/ichis-prognosis",
        data=dumps(hook_body()),
        content_type="application/json",
        headers={"Origin": EHR},
    )
    assert response.headers["Access-Control-Allow-Origin"] == EHR


# --- input limits ---------------------------------------------------------------------------------


def test_a_body_over_the_size_limit_gets_413_with_an_operation_outcome(
    make_app: Callable[..., Flask],
) -> None:
    client = make_app(max_body_bytes=10_000).test_client()
    response = post_hook(client, hook_body("ichis-demo-2"))
    assert response.status_code == 413
    assert response.get_json()["resourceType"] == "OperationOutcome"


def test_json_nested_deeper_than_the_limit_gets_400(client: FlaskClient) -> None:
    body = hook_body()
    deep: Any = {}
    for _ in range(80):
        deep = {"x": deep}
    body["extension"] = deep
    response = post_hook(client, body)
    assert response.status_code == 400
    assert "nested deeper" in response.get_json()["issue"][0]["diagnostics"]


# --- outbound safety ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("server", "settings", "message"),
    [
        ("http://fhir.example/r4", {}, "must use https"),
        ("ftp://fhir.example/r4", {}, "absolute http(s) URL"),
        ("https://user:pw@fhir.example/r4", {}, "without credentials"),
        ("https://evil.example\\@fhir.example/r4", {"fhir_allowed_hosts": ["fhir.example"]}, "without"),
        (
            "https://169.254.169.254/latest",
            {"fhir_allowed_hosts": ["fhir.example"]},
            "not on this service's list",
        ),
    ],
)
def test_call_backs_go_only_where_allowed(
    make_app: Callable[..., Flask], server: str, settings: dict[str, Any], message: str
) -> None:
    client = make_app(**settings).test_client()
    response = post_hook(client, hook_body(prefetch=None, fhir_server=server, token="opaque"))  # noqa: S106
    assert response.status_code == 400
    assert message in response.get_json()["issue"][0]["diagnostics"]


# --- logs -----------------------------------------------------------------------------------------


@pytest.fixture
def captured_logs() -> Iterator[io.StringIO]:
    """Our JSON log lines, as ``ichis serve`` writes them."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RequestContextFilter())
    root = logging.getLogger("ichis")
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield stream
    root.removeHandler(handler)
    root.setLevel(old_level)


def test_a_full_request_cycle_logs_no_token_no_jwt_no_lab_value_and_no_name(
    make_app: Callable[..., Flask], captured_logs: io.StringIO
) -> None:
    client = make_app(auth_mode="jwt", trusted_issuers=[{"iss": ISS, "jwks": JWKS}]).test_client()
    prefetch = prefetch_for("ichis-demo-2")
    for entry in prefetch["labs"]["entry"]:  # distinctive values, so that a leak cannot hide
        if entry["resource"]["code"]["coding"][0]["code"] == "751-8":
            entry["resource"]["valueQuantity"]["value"] = Decimal("12.3456")
    body = hook_body("ichis-demo-2", prefetch=prefetch)
    body["fhirServer"] = "https://ehr.example/fhir"
    body["fhirAuthorization"] = {
        "access_token": "very-secret-access-token",
        "token_type": "Bearer",
        "expires_in": 300,
        "scope": "patient/*.rs",
        "subject": "ichis",
    }
    bearer = token()
    response = client.post(
        "/cds-services/ichis-prognosis",
        data=dumps(body),
        content_type="application/json",
        headers={"Authorization": f"Bearer {bearer}"},
    )
    assert response.status_code == 200
    card = response.get_json()["cards"][0]
    assert "12.3456" in readable(card["detail"])  # the value is on the card ...
    client.post(
        "/cds-services/ichis-prognosis/feedback",
        json={
            "feedback": [
                {"card": card["uuid"], "outcome": "overridden", "outcomeTimestamp": "2026-11-29T10:00:00Z"}
            ]
        },
        headers={
            "Authorization": f"Bearer {token(aud='https://cds.example/cds-services/ichis-prognosis/feedback')}"
        },
    )
    client.post(
        "/cds-services/ichis-prognosis",
        data=dumps(body),
        content_type="application/json",
        headers={"Authorization": "Bearer forged.token.value"},
    )
    text = captured_logs.getvalue()
    lines = [json.loads(line) for line in text.splitlines()]
    assert lines, "the cycle must have logged something"
    for secret in (
        "very-secret-access-token",
        bearer,
        bearer.split(".")[1],
        "forged.token.value",
        "12.3456",
        "12,345.6",
        "Chloe",
        "Demo-Two",
    ):
        assert secret not in text  # ... and nowhere in the log
    card_lines = [line for line in lines if line["message"] == "card issued"]
    assert card_lines[0]["hookInstance"] == body["hookInstance"]
    assert card_lines[0]["iss"] == ISS
    assert card_lines[0]["jti"]
    assert all("request_id" in line for line in lines if line["logger"] == "ichis.http")


@pytest.mark.parametrize(
    "odd",
    [
        {"hasMember": 5},
        {"hasMember": "Observation/x", "contained": 5},
        {"component": "x"},
        {"component": [5, None, {"code": 5}]},
        {"status": ["final"]},
    ],
)
def test_an_observation_with_an_element_of_the_wrong_type_gets_a_card_not_a_500(
    client: FlaskClient, odd: dict[str, Any]
) -> None:
    """Elements of the wrong JSON type make that Observation unreadable, not the whole call."""
    body = hook_body("ichis-demo-2")
    labs = body["prefetch"]["labs"]["entry"]
    panel = dict(labs[0]["resource"], id="odd-panel") | odd
    labs.append({"fullUrl": "http://ehr.example/fhir/Observation/odd-panel", "resource": panel})
    response = post_hook(client, body)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.get_json()["cards"]


@pytest.mark.parametrize(
    "placeholder", ["9999-12-31", "9999-12-31T23:59:59-05:00", "0001-01-01T00:00:00+14:00", "0001-01-01"]
)
def test_a_result_dated_at_the_end_of_the_calendar_is_reported_not_a_500(
    client: FlaskClient, placeholder: str
) -> None:
    """Records carry placeholder dates; such a result is unusable, named, and the rest is scored."""
    body = hook_body("ichis-demo-2")
    labs = body["prefetch"]["labs"]["entry"]
    neutrophils = next(e["resource"] for e in labs if e["resource"]["code"]["coding"][0]["code"] == "751-8")
    neutrophils["effectiveDateTime"] = placeholder
    response = post_hook(client, body)
    assert response.status_code == 200, response.get_data(as_text=True)
    (card,) = response.get_json()["cards"]
    assert card["summary"].startswith("IChIS 1 to 2 of 2: NEUT# missing")
    assert "outside the dates that can be compared" in readable(card["detail"])


def test_an_order_whose_contained_element_is_not_a_list_is_read_without_it(client: FlaskClient) -> None:
    body = hook_body("ichis-demo-2")
    order = body["context"]["draftOrders"]["entry"][0]["resource"]
    order["contained"] = 5
    response = post_hook(client, body)
    assert response.status_code == 200, response.get_data(as_text=True)
