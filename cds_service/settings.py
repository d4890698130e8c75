"""Service settings: defaults, then the site TOML file, then ICHIS_* environment variables, then
the overrides a test passes to ``create_app``. Each setting is documented in the README."""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from cds_service.auth import TrustedIssuer, parse_issuers
from cds_service.declarations import discovery, prefetch_templates
from fhir_mappings.config import ConfigurationError, MappingConfig, load_mapping_config
from fhir_mappings.medications import DrugTable
from fhir_mappings.scope import DiagnosisTable

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
    #: Most pages followed per query when fetching or completing a paginated prefetch.
    max_fhir_pages: int = 10
    #: Page size asked for in the lab prefetch template (``_count``): a bound on what is sent.
    prefetch_lab_count: int = 100
    #: "jwt": every hook and feedback call must carry a client JWT from a trusted issuer.
    #: "off": development only, no authentication; a loud warning is logged at start.
    auth_mode: str = "jwt"
    #: Require the JWT on discovery too (the spec leaves discovery open; some hospitals do not).
    auth_discovery: bool = False
    #: Registered CDS clients: [{iss, jwks_url | jwks, jku_allow}] (TOML [[service.trusted_issuers]]
    #: or JSON in ICHIS_TRUSTED_ISSUERS).
    trusted_issuers: Any = None
    #: Allowed clock difference when checking exp and iat, seconds.
    clock_skew_seconds: float = 60.0
    #: An unknown kid refreshes an issuer's key set at most this often, seconds.
    jwks_min_refresh_seconds: float = 60.0
    #: Where used jti values are remembered: empty for a SQLite file in data_dir, or a redis:// URL.
    replay_store: str = ""
    #: Browser origins allowed to call the service (CORS), e.g. ["https://ehr.example.org"].
    cors_origins: tuple[str, ...] = ()
    #: Allow http:// fhirServer URLs (development only; production EHRs must use https).
    allow_http_fhir: bool = False
    #: If set, fhirServer must be on one of these hosts (host or host:port): no call-backs elsewhere.
    fhir_allowed_hosts: tuple[str, ...] = ()
    #: Largest request body, bytes.
    max_body_bytes: int = 2 * 1024 * 1024
    #: Deepest JSON nesting accepted in a request body.
    max_json_depth: int = 64
    #: Where AuditEvents go: a FHIR base URL (an audit repository), "ehr" for each call's own
    #: fhirServer, or empty to keep them in the spool until a repository is configured.
    audit_fhir_url: str = ""
    #: Bearer token for the audit repository (ICHIS_AUDIT_TOKEN); never logged.
    audit_token: str = field(default="", repr=False)
    #: Longest wait between two delivery attempts of one record, seconds (backoff doubles up to it).
    audit_retry_max_seconds: float = 300.0
    #: How often the deliverer looks for due records when idle, seconds.
    audit_poll_seconds: float = 1.0
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
        if kind == "tuple[str, ...]":
            items = raw.split(",") if isinstance(raw, str) else list(raw)
            return tuple(str(item).strip() for item in items if str(item).strip())
        if kind == "Any":
            return raw
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
    if settings.auth_mode not in ("jwt", "off"):
        raise ConfigurationError("auth_mode must be 'jwt' or 'off'")
    return settings


@dataclass(frozen=True)
class Runtime:
    """What is built once from the settings and shared by every request."""

    settings: Settings
    mapping: MappingConfig
    drugs: DrugTable
    diagnoses: DiagnosisTable
    templates: Mapping[str, str]
    discovery: Mapping[str, Any]
    issuers: tuple[TrustedIssuer, ...]


def build_runtime(settings: Settings) -> Runtime:
    mapping = load_mapping_config(settings.site)
    return Runtime(
        settings=settings,
        mapping=mapping,
        drugs=DrugTable(settings.site),
        diagnoses=DiagnosisTable(settings.site),
        templates=prefetch_templates(mapping, settings.prefetch_lab_count),
        discovery=discovery(mapping, settings.prefetch_lab_count),
        issuers=tuple(_issuers(settings)),
    )


def _issuers(settings: Settings) -> list[TrustedIssuer]:
    try:
        return parse_issuers(settings.trusted_issuers)
    except (ValueError, TypeError) as error:
        raise ConfigurationError(f"trusted_issuers: {error}") from None
