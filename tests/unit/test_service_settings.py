"""The service's settings reader: the environment beats the file, and nothing is silently ignored."""

from __future__ import annotations

from pathlib import Path

import pytest

from cds_service.settings import build_runtime, load_settings
from fhir_mappings.config import ConfigurationError

JWT_ON = {"ICHIS_PUBLIC_BASE_URL": "https://cds.example"}


@pytest.mark.parametrize(
    ("variable", "hint"),
    [
        ("ICHIS_TRUSTED_ISSUER", "ICHIS_TRUSTED_ISSUERS"),
        ("ICHIS_AUTHMODE", "ICHIS_AUTH_MODE"),
        ("ICHIS_CORS_ORIGIN", "ICHIS_CORS_ORIGINS"),
        ("ICHIS_NO_SUCH_THING", None),
    ],
)
def test_an_unknown_variable_stops_the_start_with_the_closest_name(variable: str, hint: str | None) -> None:
    with pytest.raises(ConfigurationError, match=variable) as refused:
        load_settings(environ={**JWT_ON, variable: "x"})
    if hint:
        assert f"did you mean {hint}?" in str(refused.value)


@pytest.mark.parametrize(
    "variable",
    [
        "ICHIS_SMART_CLIENT_ID",  # the SMART app's reader checks its own
        "ICHIS_SANDBOX_CODE_TTL",  # so does the sandbox EHR's
        "ICHIS_TEST_FHIR_URL",  # the test suite's
        "ICHIS_WORKERS",  # ichis serve's own
        "ICHIS_ACCESS_LOG",
        "ICHIS_SMART_LAUNCH_URL",  # a service setting spelt with the SMART prefix
    ],
)
def test_variables_other_readers_own_are_left_to_them(variable: str) -> None:
    load_settings(environ={**JWT_ON, variable: "1"})


@pytest.mark.parametrize(
    ("raw", "origins"),
    [
        (
            '["https://ehr.example", "https://other.example"]',
            ("https://ehr.example", "https://other.example"),
        ),
        ("https://ehr.example, https://other.example", ("https://ehr.example", "https://other.example")),
        ("https://ehr.example", ("https://ehr.example",)),
        ("", ()),
    ],
)
def test_lists_come_as_a_json_array_or_comma_separated(raw: str, origins: tuple[str, ...]) -> None:
    settings = load_settings(environ={**JWT_ON, "ICHIS_CORS_ORIGINS": raw})
    assert settings.cors_origins == origins


@pytest.mark.parametrize(
    "raw", ['["https://ehr.example"', '{"origin": "x"}', "[1, 2]", '"https://ehr.example"']
)
def test_a_malformed_list_is_refused_not_dropped(raw: str) -> None:
    with pytest.raises(ConfigurationError, match="cors_origins"):
        load_settings(environ={**JWT_ON, "ICHIS_CORS_ORIGINS": raw})


@pytest.mark.parametrize("raw", ["maybe", "2", "enabled"])
def test_a_boolean_that_is_neither_true_nor_false_is_refused(raw: str) -> None:
    with pytest.raises(ConfigurationError, match="allow_http_fhir"):
        load_settings(environ={**JWT_ON, "ICHIS_ALLOW_HTTP_FHIR": raw})


def test_the_environment_beats_the_site_file(tmp_path: Path) -> None:
    site = tmp_path / "site.toml"
    site.write_text('[service]\nscope_policy = "suppress"\npublic_base_url = "https://file.example"\n')
    settings = load_settings(environ={"ICHIS_CONFIG_FILE": str(site), "ICHIS_SCOPE_POLICY": "caveat"})
    assert (settings.scope_policy, settings.public_base_url) == ("caveat", "https://file.example")


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"ICHIS_PUBLIC_BASE_URL": ""}, "public_base_url is required"),
        ({**JWT_ON, "ICHIS_AUDIT_FHIR_URL": "ehr"}, "needs fhir_allowed_hosts"),
        ({**JWT_ON, "ICHIS_AUDIT_FHIR_URL": "http://audit.example/fhir"}, "allow_http_audit"),
        ({**JWT_ON, "ICHIS_AUDIT_FHIR_URL": "https://u:p@audit.example/fhir"}, "without credentials"),
        (
            {**JWT_ON, "ICHIS_TRUSTED_ISSUERS": '[{"iss": "e", "jwks_url": "http://e.example/jwks"}]'},
            "allow_http_jwks",
        ),
        ({**JWT_ON, "ICHIS_MAX_TOKEN_LIFETIME_SECONDS": "0"}, "max_token_lifetime_seconds"),
    ],
)
def test_settings_that_open_a_trust_boundary_are_refused_at_start(
    environ: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message):
        build_runtime(load_settings(environ=environ))
