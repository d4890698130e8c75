"""Service settings: defaults, then the site TOML file, then ICHIS_* environment variables, then
the overrides a test passes to ``create_app``. Each setting is documented in the README."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from cds_service.auth import TrustedIssuer, parse_issuers
from cds_service.declarations import discovery, prefetch_templates
from fhir_mappings.config import ConfigurationError, MappingConfig, load_mapping_config, read_site_file
from fhir_mappings.medications import DrugTable
from fhir_mappings.outbound import Destinations, UnsafeDestination
from fhir_mappings.scope import DiagnosisTable
from plumbing.settings import parsers_for, read_settings

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
    #: Allowed clock difference when checking exp, iat and nbf, seconds.
    clock_skew_seconds: float = 60.0
    #: Longest life a client JWT may have (exp - iat), seconds, skew aside: CDS Hooks wants
    #: short-lived tokens (5 minutes recommended), so a token valid for years is refused.
    max_token_lifetime_seconds: float = 300.0
    #: An unknown kid refreshes an issuer's key set at most this often, seconds.
    jwks_min_refresh_seconds: float = 60.0
    #: Where used jti values are remembered: empty for a SQLite file in data_dir, or a redis:// URL.
    replay_store: str = ""
    #: Browser origins allowed to call the service (CORS), e.g. ["https://ehr.example.org"].
    cors_origins: tuple[str, ...] = ()
    #: Allow http:// fhirServer URLs (development only; production EHRs must use https).
    allow_http_fhir: bool = False
    #: Allow http:// key set URLs (jwks_url, jku_allow) for client JWTs (development only: a key
    #: set fetched over plain http can be replaced by anyone on the path).
    allow_http_jwks: bool = False
    #: Allow an http:// audit repository (audit_fhir_url; development only).
    allow_http_audit: bool = False
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
    #: If set, GET /metrics needs ``Authorization: Bearer <metrics_token>`` (ICHIS_METRICS_TOKEN).
    metrics_token: str = field(default="", repr=False)
    site: Mapping[str, Any] = field(default_factory=dict, repr=False)


_ENV_PREFIX = "ICHIS_"
#: Prefixes whose variables other readers own and check: the SMART app's and the sandbox EHR's.
OTHER_READERS = ("ICHIS_SMART_", "ICHIS_SANDBOX_", "ICHIS_TEST_")
#: Variables read by ``ichis serve`` itself (process and logging), not by the app.
PROCESS_VARIABLES = ("host", "port", "workers", "threads", "log_level", "access_log")
#: The service setting ``smart_launch_url`` is spelt with the SMART app's prefix in the
#: environment; the SMART app's reader knows to leave it to the service.


_PARSERS = parsers_for(Settings, skip=("site",))


def load_settings(
    overrides: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    """Defaults, then the ``[service]`` table of the site file (``ICHIS_CONFIG_FILE``, or
    ``config_file`` in the overrides), then ``ICHIS_*`` variables, then ``overrides`` (tests)."""
    environ = os.environ if environ is None else environ
    overrides = dict(overrides or {})
    site: dict[str, Any] = dict(overrides.pop("site", None) or {})
    config_file = overrides.get("config_file") or environ.get(f"{_ENV_PREFIX}CONFIG_FILE")
    if config_file:
        site = read_site_file(Path(config_file))
    settings = read_settings(
        Settings(),
        _PARSERS,
        prefix=_ENV_PREFIX,
        environ=environ,
        table=site.get("service", {}),
        table_name="service",
        overrides=overrides,
        elsewhere=OTHER_READERS,
        also_known=PROCESS_VARIABLES,
    )
    settings = replace(settings, site=site)
    if settings.scope_policy not in SCOPE_POLICIES:
        raise ConfigurationError(f"scope_policy must be one of {', '.join(SCOPE_POLICIES)}")
    if settings.fhir_deadline_seconds <= 0:
        raise ConfigurationError("fhir_deadline_seconds must be positive")
    if settings.auth_mode not in ("jwt", "off"):
        raise ConfigurationError("auth_mode must be 'jwt' or 'off'")
    _check_trust_boundaries(settings)
    return settings


def _check_trust_boundaries(settings: Settings) -> None:
    """Settings that would let a caller or the network around the rules are refused at start."""
    if settings.auth_mode == "jwt":
        if not settings.public_base_url:
            # The JWT audience must be this service's own URL, never one taken from the request's
            # Host header: that would accept a token minted for another service on another host.
            raise ConfigurationError(
                "public_base_url is required when authentication is on: the JWT audience is checked "
                "against it (e.g. https://cds.hospital.example)"
            )
        try:
            Destinations("public_base_url", allow_http=True).check(settings.public_base_url)
        except UnsafeDestination as error:
            raise ConfigurationError(f"public_base_url: {error}") from None
    if settings.max_token_lifetime_seconds <= 0:
        raise ConfigurationError("max_token_lifetime_seconds must be positive")
    if settings.audit_fhir_url == "ehr":
        if not settings.fhir_allowed_hosts:
            # Each call's own fhirServer receives its audit record: without an allow-list a caller
            # could name a server of its own and erase its trail by answering 200.
            raise ConfigurationError(
                'audit_fhir_url = "ehr" needs fhir_allowed_hosts: records go only to listed EHR servers'
            )
    elif settings.audit_fhir_url:
        try:
            audit_destinations(settings).check(settings.audit_fhir_url)
        except UnsafeDestination as error:
            raise ConfigurationError(f"audit_fhir_url: {error}") from None


def fhir_destinations(settings: Settings) -> Destinations:
    """Where FHIR call-backs (and records for ``audit_fhir_url = "ehr"``) may go."""
    return Destinations("fhirServer", settings.allow_http_fhir, settings.fhir_allowed_hosts)


def audit_destinations(settings: Settings) -> Destinations:
    """Where AuditEvents may be delivered: the audit repository, or the EHR's listed servers."""
    if settings.audit_fhir_url == "ehr":
        return fhir_destinations(settings)
    return Destinations("the audit server", settings.allow_http_audit, http_switch="allow_http_audit")


def jwks_destinations(settings: Settings) -> Destinations:
    """Where client key sets may be fetched from."""
    return Destinations("a key set URL", settings.allow_http_jwks, http_switch="allow_http_jwks")


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
        issuers = parse_issuers(settings.trusted_issuers)
    except (ValueError, TypeError) as error:
        raise ConfigurationError(f"trusted_issuers: {error}") from None
    rule = jwks_destinations(settings)
    for issuer in issuers:
        for url in (issuer.jwks_url, *issuer.jku_allow):
            if url is None:
                continue
            try:
                rule.check(url)
            except UnsafeDestination as error:
                raise ConfigurationError(f"trusted_issuers {issuer.iss}: {error}") from None
    return issuers
