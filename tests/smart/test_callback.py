"""``/smart/callback``: state bound to the session, PKCE, the token request, the launch context."""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import urlencode

from smart_app.runtime import smart_runtime
from tests.smart.conftest import SmartEnv, app_context, query_of

ALL_SCOPES = [
    "launch",
    "openid",
    "fhirUser",
    "patient/Patient.r",
    "patient/Observation.rs",
    "patient/Condition.rs",
    "online_access",
]


def drop_verifier(env: SmartEnv, state: str) -> None:
    """Remove the PKCE verifier of a pending launch from the server-side session."""
    runtime = smart_runtime(env.app)
    cookie = env.client.get_cookie("ichis_smart", path="/smart")
    assert cookie is not None
    session = runtime.codec.loads(cookie.value)
    assert session is not None
    pending = runtime.store.take_pending(session, state)
    assert pending is not None
    del pending["code_verifier"]
    runtime.store.put_pending(session, state, pending)


def test_a_completed_launch_lands_on_the_details_page_of_its_own_address(
    smart_env: Callable[..., SmartEnv],
) -> None:
    """The callback redeems the code and redirects to /smart/app/<key>, which shows the score."""
    env = smart_env()
    env.fhir.add_patient("ichis-demo-2")
    started = env.start("ichis-demo-2")
    done = env.callback(env.authorize(started.headers["Location"]))
    assert done.status_code == 303
    assert done.headers["Location"].startswith("/smart/app/")
    page = env.client.get(done.headers["Location"])
    assert page.status_code == 200
    assert "IChIS 2 of 2" in page.text


def test_a_state_this_session_did_not_send_ends_on_a_clear_page(smart_env: Callable[..., SmartEnv]) -> None:
    """A forged or foreign state is refused before any token request."""
    env = smart_env()
    env.start("ichis-demo-2")
    answer = env.client.get("/smart/callback?" + urlencode({"code": "stolen", "state": "not-ours"}))
    assert answer.status_code == 400
    assert 'data-error="state-mismatch"' in answer.text
    assert "What to do" in answer.text


def test_a_state_works_once_so_a_reloaded_callback_is_refused(smart_env: Callable[..., SmartEnv]) -> None:
    """Replaying the callback URL finds no pending launch for its state."""
    env = smart_env()
    env.fhir.add_patient("ichis-demo-2")
    callback = env.authorize(env.start("ichis-demo-2").headers["Location"])
    assert env.callback(callback).status_code == 303
    replay = env.callback(callback)
    assert replay.status_code == 400
    assert 'data-error="state-mismatch"' in replay.text


def test_a_state_from_another_browser_is_refused(smart_env: Callable[..., SmartEnv]) -> None:
    """The state is bound to the session that started the launch, not only known to the server."""
    env = smart_env()
    callback = env.authorize(env.start("ichis-demo-2").headers["Location"])
    other = env.app.test_client()
    other.get("/smart/launch?" + urlencode({"iss": env.iss, "launch": env.mint_launch("ichis-demo-2")}))
    answer = other.get(callback.removeprefix("http://localhost"))  # with the other browser's cookie
    assert answer.status_code == 400
    assert 'data-error="state-mismatch"' in answer.text


def test_a_callback_without_the_session_cookie_explains_framed_cookies(
    smart_env: Callable[..., SmartEnv],
) -> None:
    """A browser that dropped the cookie (a blocked third-party frame) learns why and what to do."""
    env = smart_env()
    callback = env.authorize(env.start("ichis-demo-2").headers["Location"])
    answer = env.app.test_client().get(callback.removeprefix("http://localhost"))
    assert answer.status_code == 400
    assert 'data-error="no-session"' in answer.text
    assert "new tab" in answer.text


def test_an_authorization_error_from_the_ehr_ends_on_a_clear_page(smart_env: Callable[..., SmartEnv]) -> None:
    """error=access_denied with our state: the EHR refused, and the page says so."""
    env = smart_env()
    state = query_of(env.start("ichis-demo-2").headers["Location"])["state"]
    answer = env.client.get(
        "/smart/callback?"
        + urlencode({"error": "access_denied", "error_description": "user said no", "state": state})
    )
    assert answer.status_code == 403
    assert 'data-error="authorization-denied"' in answer.text
    assert "access_denied (user said no)" in answer.text


def test_an_ehr_that_grants_none_of_the_scopes_ends_on_the_denied_page(
    smart_env: Callable[..., SmartEnv],
) -> None:
    """The sandbox refuses a request it can grant nothing of, with an error back to the app."""
    env = smart_env(ehr={"deny_scopes": ALL_SCOPES})
    answer = env.callback(env.authorize(env.start("ichis-demo-2").headers["Location"]))
    assert answer.status_code == 403
    assert 'data-error="authorization-denied"' in answer.text
    assert "invalid_scope" in answer.text


def test_a_launch_whose_pkce_verifier_is_missing_does_not_ask_for_a_token(
    smart_env: Callable[..., SmartEnv],
) -> None:
    """Without the verifier the code cannot be redeemed, and the page says to launch again."""
    env = smart_env()
    location = env.start("ichis-demo-2").headers["Location"]
    drop_verifier(env, query_of(location)["state"])
    answer = env.callback(env.authorize(location))
    assert answer.status_code == 400
    assert 'data-error="pkce-verifier-missing"' in answer.text
    assert env.fhir_queries() == []  # nothing was read


def test_a_wrong_client_secret_ends_on_the_token_error_page(smart_env: Callable[..., SmartEnv]) -> None:
    """The EHR refuses the token request (invalid_client); the page says the launch failed."""
    env = smart_env(smart={"client_secret": "not-the-secret"})
    answer = env.callback(env.authorize(env.start("ichis-demo-2").headers["Location"]))
    assert answer.status_code == 502
    assert 'data-error="token-failed"' in answer.text
    assert "invalid_client" in answer.text


def test_a_card_for_another_patient_than_the_launch_is_refused(smart_env: Callable[..., SmartEnv]) -> None:
    """The card's appContext names the patient it scored; a different launch patient shows nothing."""
    env = smart_env()
    started = env.start("ichis-demo-2", appContext=app_context("ichis-demo-0"))
    answer = env.callback(env.authorize(started.headers["Location"]))
    assert answer.status_code == 409
    assert 'data-error="context-mismatch"' in answer.text
