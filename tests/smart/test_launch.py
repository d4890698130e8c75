"""``/smart/launch``: the EHR launch (and the standalone one) up to the authorization request."""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import urlencode

from smart_app.oauth import s256
from tests.smart.conftest import APP_BASE, SmartEnv, query_of


def test_an_ehr_launch_sends_the_browser_to_the_ehr_with_every_parameter_smart_requires(
    smart_env: Callable[..., SmartEnv],
) -> None:
    """response_type, client_id, redirect_uri, launch, v2 scopes, state, aud and an S256 challenge."""
    env = smart_env()
    answer = env.start("ichis-demo-2")
    assert answer.status_code == 302
    location = answer.headers["Location"]
    assert location.startswith(f"{env.ehr_url}/auth/authorize?")  # from the EHR's discovery document
    query = query_of(location)
    assert query["response_type"] == "code"
    assert query["client_id"] == "ichis-smart"
    assert query["redirect_uri"] == f"{APP_BASE}/smart/callback"
    assert query["scope"].split() == [
        "launch",
        "openid",
        "fhirUser",
        "patient/Patient.r",
        "patient/Observation.rs",
        "patient/Condition.rs",
        "online_access",
    ]
    assert query["aud"] == env.iss
    assert query["launch"]
    assert len(query["state"]) >= 40  # 256 random bits; SMART asks for at least 122
    assert query["code_challenge_method"] == "S256"
    assert len(query["code_challenge"]) == len(s256("x"))


def test_without_a_public_base_url_the_redirect_uri_follows_the_request_host(
    smart_env: Callable[..., SmartEnv],
) -> None:
    """The service's public_base_url is optional: the host the browser used is the fallback."""
    env = smart_env(service={"public_base_url": ""})
    location = env.client.get(
        "/smart/launch?" + urlencode({"iss": env.iss, "launch": env.mint_launch("ichis-demo-2")}),
        base_url="http://ichis.internal:8080",
    ).headers["Location"]
    assert query_of(location)["redirect_uri"] == "http://ichis.internal:8080/smart/callback"


def test_each_launch_has_its_own_state_and_challenge(smart_env: Callable[..., SmartEnv]) -> None:
    """Two launches in one browser never share a state or a PKCE challenge."""
    env = smart_env()
    first, second = (query_of(env.start("ichis-demo-2").headers["Location"]) for _ in range(2))
    assert first["state"] != second["state"]
    assert first["code_challenge"] != second["code_challenge"]


def test_the_session_cookie_is_httponly_lax_and_scoped_to_the_app(smart_env: Callable[..., SmartEnv]) -> None:
    """The cookie carries a signed session id only: HttpOnly, SameSite=Lax, Path=/smart."""
    env = smart_env()
    answer = env.start("ichis-demo-2")
    (cookie,) = answer.headers.getlist("Set-Cookie")
    attributes = [part.strip() for part in cookie.split(";")]
    assert attributes[0].startswith("ichis_smart=")
    assert "HttpOnly" in attributes
    assert "SameSite=Lax" in attributes
    assert "Path=/smart" in attributes
    assert "Secure" not in attributes  # plain http in this test; https turns it on (next test)
    assert query_of(answer.headers["Location"])["state"] not in cookie


def test_over_https_the_cookie_is_secure_and_framed_use_can_ask_for_a_partitioned_one(
    smart_env: Callable[..., SmartEnv],
) -> None:
    """SameSite=None (cross-site iframes) always comes with Secure and, by default, Partitioned."""
    env = smart_env(
        service={"public_base_url": "https://ichis.hospital.example"},
        smart={"cookie_samesite": "None", "redirect_url": "https://ichis.hospital.example/smart/callback"},
    )
    cookie = env.start("ichis-demo-2").headers["Set-Cookie"]
    assert "Secure" in cookie
    assert "SameSite=None" in cookie
    assert "Partitioned" in cookie


def test_a_standalone_launch_asks_the_ehr_to_pick_a_patient(smart_env: Callable[..., SmartEnv]) -> None:
    """Without a launch id the app asks for launch/patient instead of launch (SMART 2.2, standalone)."""
    env = smart_env()
    answer = env.client.get("/smart/launch")  # one trusted EHR: it is the one
    scopes = query_of(answer.headers["Location"])["scope"].split()
    assert "launch/patient" in scopes
    assert "launch" not in scopes
    assert "launch" not in query_of(answer.headers["Location"])


def test_an_iss_that_is_not_trusted_gets_a_clear_page_and_no_request_leaves(
    smart_env: Callable[..., SmartEnv],
) -> None:
    """The app never sends its secret to, or even asks, a server it was not told to trust."""
    env = smart_env()
    answer = env.client.get("/smart/launch?" + urlencode({"iss": "https://evil.example/fhir", "launch": "x"}))
    assert answer.status_code == 403
    assert 'data-error="unknown-iss"' in answer.text
    assert "https://evil.example/fhir" in answer.text
    assert "ICHIS_SMART_TRUSTED_ISS" in answer.text
    assert "Set-Cookie" not in answer.headers


def test_a_launch_without_iss_explains_how_to_open_the_app(smart_env: Callable[..., SmartEnv]) -> None:
    """An EHR launch that lost its iss cannot be completed."""
    env = smart_env()
    answer = env.client.get("/smart/launch?launch=abc")
    assert answer.status_code == 400
    assert 'data-error="bad-launch"' in answer.text


def test_an_app_without_a_client_secret_says_it_is_not_configured(smart_env: Callable[..., SmartEnv]) -> None:
    """A confidential client without its secret refuses to start a launch it could not finish."""
    env = smart_env(smart={"client_secret": ""})
    answer = env.start("ichis-demo-2")
    assert answer.status_code == 503
    assert 'data-error="not-configured"' in answer.text


def test_an_ehr_whose_discovery_fails_gets_a_clear_page(smart_env: Callable[..., SmartEnv]) -> None:
    """A trusted iss that answers discovery with an error ends on the discovery error page."""
    env = smart_env(smart={"trusted_iss": ["http://127.0.0.1:9/fhir"]})
    answer = env.client.get("/smart/launch?" + urlencode({"iss": "http://127.0.0.1:9/fhir", "launch": "x"}))
    assert answer.status_code == 502
    assert 'data-error="discovery-failed"' in answer.text
    assert "Traceback" not in answer.text


def test_pages_carry_headers_for_patient_data_in_an_ehr_frame(smart_env: Callable[..., SmartEnv]) -> None:
    """No caching, no referrer, no inline script, and only the EHR may frame the app."""
    env = smart_env()
    answer = env.client.get("/smart/launch?launch=abc")
    csp = answer.headers["Content-Security-Policy"]
    assert f"frame-ancestors 'self' {env.ehr_url}" in csp
    assert "script-src 'self'" in csp
    assert "unsafe-inline" not in csp
    assert answer.headers["Cache-Control"] == "no-store"
    assert answer.headers["Referrer-Policy"] == "no-referrer"


def test_unknown_app_paths_end_on_the_apps_page_and_the_service_is_unchanged(
    smart_env: Callable[..., SmartEnv],
) -> None:
    """A mistyped /smart address is an HTML page; the CDS endpoints still answer JSON."""
    env = smart_env()
    missing = env.client.get("/smart/nothing-here")
    assert missing.status_code == 404
    assert 'data-error="not-found"' in missing.text
    discovery = env.client.get("/cds-services")
    assert discovery.mimetype == "application/json"
    assert "ichis-prognosis" in discovery.text
    with env.client.get("/smart/static/smart.css") as stylesheet:  # closes the file it streams
        assert stylesheet.status_code == 200
