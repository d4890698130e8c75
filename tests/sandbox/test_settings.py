"""The sandbox EHR's settings: defaults, ICHIS_SANDBOX_* variables, overrides, the client registry."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fhir_mappings.config import ConfigurationError
from sandbox.ehr.settings import load_settings


def test_the_defaults_register_the_projects_smart_app_under_the_cds_base_url() -> None:
    """Out of the box, ichis-smart is a confidential client redirecting to {cds}/smart/callback."""
    settings = load_settings({"cds_base_url": "http://cds.local:9000/"}, environ={})
    client = settings.client("ichis-smart")
    assert client is not None
    assert client.type == "confidential"
    assert client.redirect_uris == ("http://cds.local:9000/smart/callback",)
    assert settings.cds_client_id == "ichis-cds"
    assert settings.fhir_base_url == "http://127.0.0.1:8070/fhir"


def test_environment_variables_apply_and_overrides_win() -> None:
    """ICHIS_SANDBOX_<NAME> sets a setting; the dict given to create_ehr_app wins over it."""
    environ = {
        "ICHIS_SANDBOX_PUBLIC_BASE_URL": "http://ehr.local:8070",
        "ICHIS_SANDBOX_JWT_ALG": "RS384",
        "ICHIS_SANDBOX_TESTING": "yes",
        "ICHIS_SANDBOX_DENY_SCOPES": '["patient/Observation.rs"]',
        "ICHIS_SANDBOX_CODE_TTL": "30",
    }
    settings = load_settings({"jwt_alg": "ES384"}, environ=environ)
    assert settings.public_base_url == "http://ehr.local:8070"
    assert settings.jwt_alg == "ES384"
    assert settings.testing is True
    assert settings.deny_scopes == ("patient/Observation.rs",)
    assert settings.code_ttl == 30


def test_clients_come_from_the_data_dir_registry_and_the_setting(tmp_path: Path) -> None:
    """clients.json in the data dir and the clients setting add clients (or replace one by id)."""
    registry = [{"client_id": "ward-app", "type": "public", "redirect_uris": ["http://ward/cb"]}]
    (tmp_path / "clients.json").write_text(json.dumps(registry))
    extra = [
        {"client_id": "ichis-smart", "secret": "s3", "redirect_uris": ["http://app/cb"], "scopes": "launch"}
    ]
    settings = load_settings({"data_dir": str(tmp_path), "clients": extra}, environ={})
    assert {c.client_id for c in settings.clients} == {"ichis-smart", "ward-app"}
    smart = settings.client("ichis-smart")
    assert smart is not None
    assert smart.redirect_uris == ("http://app/cb",)
    assert smart.scopes == ("launch",)


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"colour": "blue"}, "unknown setting"),
        ({"code_ttl": 61}, "at most 60"),
        ({"jwt_alg": "HS256"}, "ES384 or RS384"),
        ({"public_base_url": "ftp://x"}, "not an http"),
        ({"testing": "maybe"}, "true or false"),
        (
            {"clients": [{"client_id": "a", "type": "confidential", "redirect_uris": ["http://a/cb"]}]},
            "needs a secret",
        ),
        (
            {"clients": [{"client_id": "a", "type": "public", "secret": "x", "redirect_uris": ["http://a"]}]},
            "no secret",
        ),
        ({"clients": [{"client_id": "a", "redirect_uris": []}]}, "non-empty list"),
        ({"clients": [{"client_id": "ichis-cds", "secret": "x", "redirect_uris": ["http://a"]}]}, "reserved"),
    ],
)
def test_a_bad_setting_stops_the_start_with_a_reason(overrides: dict[str, object], reason: str) -> None:
    """Typos and impossible values are refused at start-up, saying which setting and why."""
    with pytest.raises(ConfigurationError, match=reason):
        load_settings(overrides, environ={})


def test_an_unknown_sandbox_variable_stops_the_start_with_the_closest_name() -> None:
    with pytest.raises(ConfigurationError, match="ICHIS_SANDBOX_CODE_TL"):
        load_settings({}, environ={"ICHIS_SANDBOX_CODE_TL": "30"})
