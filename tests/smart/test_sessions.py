"""Sessions that last a clinic: the refresh token renews access before it ends, against the real
sandbox authorization server, and the page says plainly when access can no longer be renewed."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pytest

from cds_service.wiring import service_of
from smart_app.access import LaunchAccess
from tests.smart.conftest import SmartEnv, app_context
from tests.smart.test_details import text_of

HOUR = 3600


def open_page(env: SmartEnv, patient: str = "ichis-demo-2", **context: Any) -> Any:
    env.fhir.add_patient(patient)
    page = env.open(patient, appContext=app_context(patient), **context)
    assert page.status_code == 200, page.text
    return page


def test_an_access_token_about_to_end_is_renewed_before_the_page_reads(
    smart_env: Callable[..., SmartEnv],
) -> None:
    """An hour later (the token's lifetime) the page renews with the refresh token, then reads."""
    env = smart_env()
    page = open_page(env)
    before = env.tokens_used()
    first_refresh = env.stored_launch(page)["refresh_token"]
    env.later(HOUR)
    again = env.client.get(page.request.path)
    assert again.status_code == 200
    assert "IChIS 2 of 2" in text_of(again.text)
    new_tokens = env.tokens_used() - before
    assert len(new_tokens) == 1  # one renewed token read the whole page
    renewed = env.stored_launch(page)
    assert renewed["access_token"] in new_tokens
    assert renewed["refresh_token"] != first_refresh  # the sandbox rotates refresh tokens
    assert env.ehr_store.refresh_token(first_refresh) is None  # and the spent one is gone


def test_a_token_the_ehr_stopped_accepting_is_renewed_once_and_the_page_shown(
    smart_env: Callable[..., SmartEnv],
) -> None:
    """A 401 from the FHIR server before the token's time (revoked): renew, read again, show."""
    env = smart_env()
    page = open_page(env)
    revoked = env.tokens_used()
    for token in revoked:
        env.ehr_store.revoke(token)
    again = env.client.get(page.request.path)
    assert again.status_code == 200
    assert "IChIS 2 of 2" in text_of(again.text)
    assert env.stored_launch(page)["access_token"] not in revoked


@pytest.mark.parametrize(
    ("settings", "launch", "why"),
    [
        (
            {"smart": {"refresh_scope": "none"}},
            {},
            "the app asks for no refresh token (its refresh_scope is none)",
        ),
        (
            {},
            {"deny_scopes": ["online_access"]},
            "the EHR granted no refresh token (online_access was not granted)",
        ),
    ],
)
def test_without_a_refresh_token_an_ended_access_says_it_cannot_be_renewed(
    smart_env: Callable[..., SmartEnv], settings: dict[str, Any], launch: dict[str, Any], why: str
) -> None:
    """One-second tokens and no refresh token: the page says access ended, why, and what to do."""
    env = smart_env(ehr={"access_token_ttl": 1}, **settings)
    env.fhir.add_patient("ichis-demo-2")
    page = env.open("ichis-demo-2", appContext=app_context("ichis-demo-2"), **launch)
    assert page.status_code == 401
    assert 'data-error="token-expired"' in page.text
    text = text_of(page.text)
    assert "Access to the record has ended and cannot be renewed" in text
    assert why in text
    assert "Open the app again from the IChIS card" in text
    assert env.fhir_queries() == []  # nothing was read with a dying token


def test_a_renewal_the_ehr_refuses_says_the_session_cannot_be_renewed(
    smart_env: Callable[..., SmartEnv],
) -> None:
    """The EHR revoked the refresh token (the user logged out): the page says it refused to renew."""
    env = smart_env()
    page = open_page(env)
    env.ehr_store.revoke_refresh_token(env.stored_launch(page)["refresh_token"])
    env.later(HOUR)
    again = env.client.get(page.request.path)
    assert again.status_code == 401
    text = text_of(again.text)
    assert "Access to the record has ended and cannot be renewed" in text
    assert "the EHR refused to renew it. The EHR refused the token request (HTTP 400, invalid_grant)." in text


def test_a_refused_renewal_of_a_revoked_token_ends_on_the_same_page(
    smart_env: Callable[..., SmartEnv],
) -> None:
    """Access token and refresh token both revoked: no second try, a clear page."""
    env = smart_env()
    page = open_page(env)
    for token in env.tokens_used():
        env.ehr_store.revoke(token)
    env.ehr_store.revoke_refresh_token(env.stored_launch(page)["refresh_token"])
    again = env.client.get(page.request.path)
    assert again.status_code == 401
    assert 'data-error="token-expired"' in again.text
    assert "Demo-Two" not in again.text


def test_two_pages_renewing_at_once_both_go_on_with_the_newer_token(
    smart_env: Callable[..., SmartEnv],
) -> None:
    """The second renewal presents a refresh token the first one spent; it takes the first's result."""
    env = smart_env()
    page = open_page(env)
    key = page.request.path.rsplit("/", 1)[1]
    stale = env.stored_launch(page)
    env.later(HOUR)
    access = LaunchAccess(env.runtime.settings, env.runtime.store, env.browser_session(), env.runtime.http)
    first = access.renew(key, stale)
    second = access.renew(key, stale)  # with the same, now spent, refresh token
    assert second["access_token"] == first["access_token"] != stale["access_token"]


@pytest.mark.parametrize(
    ("smart", "sentence"),
    [
        ({}, "The app renews its access to the record automatically until this session ends at"),
        (
            {"refresh_scope": "none"},
            "cannot be renewed (the EHR granted no refresh token): after that, open the app",
        ),
    ],
)
def test_the_page_says_how_long_its_access_lasts(
    smart_env: Callable[..., SmartEnv], smart: dict[str, Any], sentence: str
) -> None:
    """Renewed until the session ends, or ending at the token's time: said at the foot of the page."""
    env = smart_env(smart=smart)
    page = open_page(env)
    status = page.text.split('data-testid="session-status">', 1)[1].split("</p>", 1)[0]
    assert sentence in status


def test_refresh_tokens_stay_on_the_server_encrypted_and_out_of_logs(
    smart_env: Callable[..., SmartEnv], caplog: pytest.LogCaptureFixture
) -> None:
    """Neither refresh token (the first, nor the one a renewal brings) is in a cookie, page, log
    line or readable in the session database."""
    caplog.set_level(logging.DEBUG)
    env = smart_env()
    page = open_page(env)
    first = env.stored_launch(page)["refresh_token"]
    env.later(HOUR)
    again = env.client.get(page.request.path)
    second = env.stored_launch(page)["refresh_token"]
    assert first != second
    cookie = env.client.get_cookie("ichis_smart", path="/smart")
    assert cookie is not None
    logged = " ".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    assert "smart access renewed" in logged
    data_dir = service_of(env.app).runtime.settings.data_dir
    # The write-ahead log too: the latest writes may not have reached the database file yet.
    database = b"".join(path.read_bytes() for path in data_dir.glob("smart.sqlite*"))
    for token in (first, second):
        assert token not in cookie.value
        assert token not in page.text + again.text
        assert token not in logged
        assert token.encode() not in database
