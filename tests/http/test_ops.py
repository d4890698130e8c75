"""Operations endpoints: liveness, readiness with ok/failing lists, and Prometheus metrics."""

from __future__ import annotations

from collections.abc import Callable

from flask import Flask

from tests.http.conftest import hook_body, post_hook
from tests.http.test_auth import ISS, JWKS


def test_liveness_needs_nothing_but_the_process(make_app: Callable[..., Flask]) -> None:
    response = make_app().test_client().get("/healthz")
    assert (response.status_code, response.get_json()) == (200, {"status": "ok"})


def test_readiness_lists_what_is_ok(make_app: Callable[..., Flask]) -> None:
    client = make_app(auth_mode="jwt", trusted_issuers=[{"iss": ISS, "jwks": JWKS}]).test_client()
    response = client.get("/readyz")
    assert response.status_code == 200
    body = response.get_json()
    assert body["status"] == "ok"
    assert "audit spool writable" in body["ok"]
    assert f"key set of {ISS} (inline)" in body["ok"]
    assert body["failing"] == []


def test_readiness_fails_when_the_audit_server_is_down_or_no_issuer_is_trusted(
    make_app: Callable[..., Flask],
) -> None:
    client = make_app(
        auth_mode="jwt", audit_fhir_url="http://127.0.0.1:9/fhir", allow_http_audit=True
    ).test_client()
    response = client.get("/readyz")
    assert response.status_code == 503
    failing = response.get_json()["failing"]
    assert "audit FHIR server http://127.0.0.1:9/fhir (unreachable)" in failing
    assert "no trusted issuers configured" in failing


def test_readiness_fails_when_a_key_set_cannot_be_loaded(make_app: Callable[..., Flask]) -> None:
    issuers = [{"iss": ISS, "jwks_url": "http://127.0.0.1:9/jwks.json"}]
    app = make_app(auth_mode="jwt", trusted_issuers=issuers, allow_http_jwks=True)
    response = app.test_client().get("/readyz")
    assert response.status_code == 503
    assert any("cannot be loaded" in item for item in response.get_json()["failing"])


def test_metrics_count_hooks_cards_prefetch_and_the_spool(make_app: Callable[..., Flask]) -> None:
    client = make_app().test_client()
    assert post_hook(client, hook_body("ichis-demo-2")).status_code == 200
    assert post_hook(client, hook_body(prefetch=None)).status_code == 412
    text = client.get("/metrics").get_data(as_text=True)
    assert 'ichis_hook_requests_total{hook="order-select",outcome="card",service="ichis-prognosis"}' in text
    assert 'outcome="412"' in text
    assert 'ichis_cards_total{stratum="ichis-2"}' in text
    assert 'ichis_prefetch_keys_total{key="labs",source="prefetch"}' in text
    assert "ichis_hook_request_seconds_bucket" in text
    assert "ichis_audit_spool_depth 2.0" in text  # both calls were audited, no repository configured


def test_metrics_can_be_kept_to_a_scraper_with_the_token(make_app: Callable[..., Flask]) -> None:
    client = make_app(metrics_token="scrape-secret").test_client()  # noqa: S106 - a test value
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
    reply = client.get("/metrics", headers={"Authorization": "bearer scrape-secret"})
    assert reply.status_code == 200
    assert "ichis_audit_spool_depth" in reply.get_data(as_text=True)


def test_metrics_are_open_without_a_token_configured(make_app: Callable[..., Flask]) -> None:
    assert make_app().test_client().get("/metrics").status_code == 200
