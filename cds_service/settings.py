"""Service settings: defaults, then the site TOML file, then ICHIS_* environment variables, then
the overrides a test passes to ``create_app``. Each setting is documented in the README."""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from fhir_mappings.config import ConfigurationError, MappingConfig, load_mapping_config
from fhir_mappings.medications import DrugTable

SCOPE_POLICIES = ("caveat", "suppress")


@dataclass(frozen=True)
class Settings:
    #: Base URL clients use to reach this service (behind a proxy, the public one). Used for the
    #: SMART link and, with authentication, for the JWT audience. Empty: taken from each request.
    public_base_url: str = ""
    #: Overall time allowed for FHIR call-backs of one hook call, in seconds.
    fhir_deadline_seconds: float = 2.0
    #: Where durable state lives (feedback store, later the audit spool).
    data_dir: Path = Path("var")
    #: Patients outside the derivation population (no lung cancer on record, small-cell histology):
    #: "caveat" shows the card with the reason; "suppress" returns no card.
    scope_policy: str = "caveat"
    #: Path of the SMART app's launch endpoint, relative to the public base URL (or absolute).
    smart_launch_url: str = "/smart/launch"
    #: Where the card's source label links (a page about the score); empty: no link.
    source_url: str = ""
    #: The site configuration file (lab codes, units, baseline rules, drugs); TOML.
    config_file: Path | None = None
    #: Maximum FHIR resources followed through paging per prefetch key (a bound on call-backs).
    max_fhir_pages: int = 10
    site: Mapping[str, Any] = field(default_factory=dict, repr=False)


_ENV_PREFIX = "ICHIS_"


def _coerce(name: str, kind: Any, raw: Any) -> Any:
    try:
        if kind in (float, "float"):
            return float(raw)
        if kind in (int, "int"):
            return int(raw)
        if kind in (Path, "Path", "Path | None"):
            return Path(raw) if raw not in (None, "") else None
        if kind in (bool, "bool"):
            if isinstance(raw, bool):
                return raw
            return str(raw).strip().lower() in ("1", "true", "yes", "on")
    except (TypeError, ValueError):
        raise ConfigurationError(f"setting {name}: '{raw}' is not a valid {kind}") from None
    return str(raw)


def load_settings(
    overrides: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    """Settings from the file named by ICHIS_CONFIG_FILE (or overrides), env, and overrides."""
    environ = os.environ if environ is None else environ
    overrides = dict(overrides or {})
    values: dict[str, Any] = {}
    config_file = overrides.get("config_file") or environ.get(f"{_ENV_PREFIX}CONFIG_FILE")
    site: dict[str, Any] = {}
    if config_file:
        try:
            with open(config_file, "rb") as handle:
                site = tomllib.load(handle)
        except OSError as error:
            raise ConfigurationError(f"cannot read configuration {config_file}: {error.strerror}") from None
        except tomllib.TOMLDecodeError as error:
            raise ConfigurationError(f"configuration {config_file} is not valid TOML: {error}") from None
    known = {f.name: f for f in fields(Settings) if f.name != "site"}
    service_section = site.get("service", {})
    if not isinstance(service_section, dict):
        raise ConfigurationError("[service] must be a table")
    for key, value in service_section.items():
        if key not in known:
            raise ConfigurationError(f"[service] has an unknown setting '{key}'")
        values[key] = _coerce(key, known[key].type, value)
    for name, spec in known.items():
        env_value = environ.get(f"{_ENV_PREFIX}{name.upper()}")
        if env_value is not None:
            values[name] = _coerce(name, spec.type, env_value)
    for key, value in overrides.items():
        if key == "site":
            site = dict(value)
            continue
        if key not in known:
            raise ConfigurationError(f"unknown setting '{key}'")
        values[key] = _coerce(key, known[key].type, value)
    settings = replace(Settings(), **values, site=site)
    if settings.scope_policy not in SCOPE_POLICIES:
        raise ConfigurationError(f"scope_policy must be one of {', '.join(SCOPE_POLICIES)}")
    if settings.fhir_deadline_seconds <= 0:
        raise ConfigurationError("fhir_deadline_seconds must be positive")
    return settings


@dataclass(frozen=True)
class Runtime:
    """What is built once from the settings and shared by every request."""

    settings: Settings
    mapping: MappingConfig
    drugs: DrugTable


def build_runtime(settings: Settings) -> Runtime:
    return Runtime(settings, load_mapping_config(settings.site), DrugTable(settings.site))
