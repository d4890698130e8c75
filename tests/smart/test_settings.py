"""The SMART app's settings: defaults, ICHIS_SMART_* variables, the dict, and what is refused."""

from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest

from cds_service.wiring import service_of
from fhir_mappings.config import ConfigurationError
from smart_app.runtime import smart_runtime
from smart_app.settings import (
    _PARSERS,
    DEFAULT_SCOPES,
    SmartSettings,
    frame_ancestors,
    launch_scopes,
    load_smart_settings,
)


def test_every_setting_has_a_parser() -> None:
    """A setting added to the dataclass but not to the parsers could never be set."""
    assert set(_PARSERS) == {f.name for f in fields(SmartSettings)}


def test_the_defaults_ask_for_v2_scopes_and_a_lax_httponly_cookie() -> None:
    """Without configuration the app asks for the documented scopes and trusts no EHR."""
    settings = load_smart_settings(environ={})
    assert settings.client_id == "ichis-smart"
    assert settings.scopes == DEFAULT_SCOPES
    assert "patient/Observation.rs" in settings.scopes.split()
    assert (settings.cookie_name, settings.cookie_samesite) == ("ichis_smart", "Lax")
    assert settings.trusted_iss == ()
    assert settings.client_secret == ""


def test_environment_variables_are_read_and_the_dict_wins_over_them() -> None:
    """ICHIS_SMART_<NAME> sets a setting; the dict given to install_smart_app overrides it."""
    environ = {
        "ICHIS_SMART_CLIENT_ID": "from-env",
        "ICHIS_SMART_TRUSTED_ISS": "https://ehr.example/fhir/, https://other.example/r4",
        "ICHIS_SMART_COOKIE_SECURE": "true",
        "ICHIS_SMART_TREND_DAYS": "90",
    }
    settings = load_smart_settings({"client_id": "from-dict"}, environ)
    assert settings.client_id == "from-dict"
    assert settings.trusted_iss == ("https://ehr.example/fhir", "https://other.example/r4")
    assert settings.cookie_secure is True
    assert settings.trend_days == 90


def test_a_json_list_is_accepted_in_the_environment() -> None:
    """Lists may be JSON, as the sandbox's settings are."""
    settings = load_smart_settings(environ={"ICHIS_SMART_TRUSTED_ISS": '["https://ehr.example/fhir"]'})
    assert settings.trusted_iss == ("https://ehr.example/fhir",)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"no_such_setting": 1}, "unknown setting 'no_such_setting'"),
        ({"cookie_samesite": "sometimes"}, "cookie_samesite"),
        ({"cookie_samesite": "None", "cookie_secure": False}, "must be Secure"),
        ({"cookie_name": "ichis_sandbox_ehr"}, "sandbox EHR uses that name"),
        ({"cookie_name": "a;b"}, "cookie_name"),
        ({"trusted_iss": ["http://ehr.example/fhir"]}, "plain http"),
        ({"trusted_iss": ["ehr.example/fhir"]}, "not an absolute"),
        ({"trend_days": 0}, "must be positive"),
        ({"scopes": " "}, "must not be empty"),
        ({"refresh_scope": "forever_access"}, "refresh_scope: one of online_access, offline_access, none"),
    ],
)
def test_unusable_settings_stop_the_start_with_the_reason(overrides: dict[str, Any], message: str) -> None:
    """Each unusable value is a ConfigurationError that names the setting."""
    with pytest.raises(ConfigurationError, match=message):
        load_smart_settings(overrides, environ={})


def test_plain_http_fhir_servers_are_allowed_only_with_the_development_switch() -> None:
    """The service's allow_http_fhir lets a development EHR on http be trusted."""
    settings = load_smart_settings({"trusted_iss": ["http://127.0.0.1:8070/fhir"]}, {}, allow_http=True)
    assert settings.trusted_iss == ("http://127.0.0.1:8070/fhir",)


@pytest.mark.parametrize(
    "address",
    [
        "https://evil.example\\@ehr.example/fhir",  # urlsplit reads ehr.example; requests goes to evil
        "https://user:secret@ehr.example/fhir",
        "https://ehr example/fhir",
    ],
)
def test_a_trusted_server_is_read_as_requests_would_reach_it(address: str) -> None:
    """An address whose server depends on who parses it, or that carries credentials, is refused."""
    with pytest.raises(ConfigurationError, match="not an absolute"):
        load_smart_settings({"trusted_iss": [address]}, environ={})


def test_frame_ancestors_are_origins_as_browsers_write_them() -> None:
    """Host case and a default port do not make a second origin; another port does."""
    configured = ["https://EHR.example:443/app", "https://ehr.example", "https://ehr.example:8443"]
    settings = load_smart_settings({"frame_ancestors": configured}, environ={})
    assert frame_ancestors(settings) == ("https://ehr.example", "https://ehr.example:8443")


def test_frame_ancestors_default_to_the_trusted_ehrs_origins() -> None:
    """Without frame_ancestors the pages may be framed by the hosts of the trusted FHIR servers."""
    settings = load_smart_settings(
        {"trusted_iss": ["https://ehr.example/fhir/r4", "https://ehr.example/other"]}, environ={}
    )
    assert frame_ancestors(settings) == ("https://ehr.example",)
    configured = load_smart_settings({"frame_ancestors": ["https://portal.example"]}, environ={})
    assert frame_ancestors(configured) == ("https://portal.example",)


@pytest.mark.parametrize(
    ("overrides", "standalone", "expected"),
    [
        ({}, False, f"{DEFAULT_SCOPES} online_access"),
        ({"refresh_scope": "offline_access"}, False, f"{DEFAULT_SCOPES} offline_access"),
        ({"refresh_scope": "none"}, False, DEFAULT_SCOPES),
        (
            {"scopes": "launch patient/Observation.rs offline_access"},
            False,
            "launch patient/Observation.rs offline_access",
        ),
        ({}, True, "launch/patient " + DEFAULT_SCOPES.removeprefix("launch ") + " online_access"),
    ],
)
def test_a_launch_asks_for_the_refresh_scope_the_site_chose(
    overrides: dict[str, Any], standalone: bool, expected: str
) -> None:
    """online_access by default, offline_access or none as configured, never twice; a standalone
    launch asks launch/patient instead of launch."""
    settings = load_smart_settings(overrides, environ={})
    assert launch_scopes(settings, standalone=standalone) == expected


def test_an_unknown_smart_variable_stops_the_start_with_the_closest_name() -> None:
    with pytest.raises(
        ConfigurationError,
        match=re.escape("ICHIS_SMART_CLIENT_SECRT (did you mean ICHIS_SMART_CLIENT_SECRET?)"),
    ):
        load_smart_settings(environ={"ICHIS_SMART_CLIENT_SECRT": "x"})


def test_the_services_launch_url_variable_is_left_to_the_service() -> None:
    """ICHIS_SMART_LAUNCH_URL is the service's smart_launch_url, not an unknown SMART setting."""
    assert load_smart_settings(environ={"ICHIS_SMART_LAUNCH_URL": "/smart/launch"}).client_id == "ichis-smart"


@pytest.mark.parametrize("app", ["service", "smart"])
def test_for_every_app_the_environment_beats_the_site_file_and_the_tests_overrides_beat_both(
    app: str, tmp_path: Path
) -> None:
    """The one order, for each reader: defaults, the site file, ICHIS_* variables, overrides."""
    from cds_service import close_app, create_app

    site = tmp_path / "site.toml"
    site.write_text(
        '[service]\nsource_url = "https://file.example/about"\nscope_policy = "suppress"\n'
        '[smart]\ncookie_name = "from_file"\ntrend_days = 30\n'
    )
    environ = {
        "ICHIS_CONFIG_FILE": str(site),
        "ICHIS_AUTH_MODE": "off",
        "ICHIS_DATA_DIR": str(tmp_path / "var"),
        "ICHIS_SOURCE_URL": "https://env.example/about",
        "ICHIS_SMART_COOKIE_NAME": "from_env",
    }
    built = create_app({"scope_policy": "caveat"}, environ=environ, smart={"trend_days": 90})
    try:
        service = service_of(built).runtime.settings
        smart = smart_runtime(built).settings
        if app == "service":
            assert (service.source_url, service.scope_policy) == ("https://env.example/about", "caveat")
        else:
            assert (smart.cookie_name, smart.trend_days) == ("from_env", 90)
    finally:
        close_app(built)
