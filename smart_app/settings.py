"""The SMART app's settings: defaults, then the site file's ``[smart]`` table, then
``ICHIS_SMART_<NAME>`` environment variables, then the dict given to ``install_smart_app`` (tests),
read by the project's one settings reader (``plumbing.settings``). Each setting is documented in
docs/smart.md.

Lists (``trusted_iss``, ``frame_ancestors``) are written comma- or space-separated, or as a JSON
list, in the environment.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from fhir_mappings.config import ConfigurationError
from fhir_mappings.outbound import origin_url, request_origin
from plumbing.settings import boolean_or_auto, integer, number, positive, read_settings, text_list

ENV_PREFIX = "ICHIS_SMART_"

#: SMART App Launch 2.2 v2 scopes: the EHR's launch context, who the user is, and read access to
#: exactly what the page shows (the banner, the blood counts, the diagnoses for the population).
DEFAULT_SCOPES = "launch openid fhirUser patient/Patient.r patient/Observation.rs patient/Condition.rs"

SAME_SITE = ("Lax", "Strict", "None")
#: Scopes that ask the EHR for a refresh token (SMART 2.2, "Scopes for requesting a refresh token"),
#: and "none" for a session that ends with its first access token.
REFRESH_SCOPES = ("online_access", "offline_access", "none")


@dataclass(frozen=True)
class SmartSettings:
    """Everything the SMART app is configured with (docs/smart.md, "Settings")."""

    #: The client id the EHR registered the app under.
    client_id: str = "ichis-smart"
    #: The confidential client's secret (client_secret_basic). Empty: launches end on a page
    #: saying the app is not configured. Never logged, never shown.
    client_secret: str = field(default="", repr=False)
    #: The redirect URI registered with the EHR. Empty: ``{public base URL}/smart/callback``.
    redirect_url: str = ""
    #: Scopes asked for at an EHR launch; a standalone launch asks ``launch/patient`` for ``launch``.
    scopes: str = DEFAULT_SCOPES
    #: Asked for with ``scopes`` so that access outlives the first token: ``online_access`` (a
    #: refresh token valid while the user is logged in to the EHR), ``offline_access`` (also
    #: after), or ``none``. The app renews access while the session lasts when one is granted.
    refresh_scope: str = "online_access"
    #: FHIR base URLs (the ``iss`` of a launch) the app may talk to. The client secret and the
    #: tokens only ever go to these servers (SMART 2.2: "ONLY to authenticated servers").
    trusted_iss: tuple[str, ...] = ()
    #: Signs the session cookie. Empty: generated once and kept in ``{data_dir}/smart-session.key``.
    session_secret: str = field(default="", repr=False)
    cookie_name: str = "ichis_smart"
    #: Lax by default: see docs/smart.md, "Cookies and the EHR's iframe", before changing it.
    cookie_samesite: str = "Lax"
    #: None: Secure when the app is reached over https (the public base URL, or the request).
    cookie_secure: bool | None = None
    #: None: partitioned (CHIPS) exactly when SameSite is None, i.e. when embedded cross-site.
    cookie_partitioned: bool | None = None
    #: Origins allowed to frame the pages (CSP frame-ancestors). Empty: the trusted_iss origins.
    frame_ancestors: tuple[str, ...] = ()
    #: How long a browser session (and the launches in it) lasts at most, seconds.
    session_max_age_seconds: int = 8 * 3600
    #: How far back the trend charts reach before the reference time, days.
    trend_days: int = 180
    #: Time allowed for the FHIR reads behind one page, seconds.
    fhir_deadline_seconds: float = 10.0
    #: Timeout of the discovery and token requests, seconds.
    http_timeout_seconds: float = 10.0


def _text(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise ConfigurationError(f"smart setting {name}: expected a string")
    return value.strip()


def _urls(name: str, value: Any) -> tuple[str, ...]:
    """A list of URLs (or origins): a JSON array, or text separated by commas or spaces."""
    if isinstance(value, str) and not value.strip().startswith("["):
        value = ",".join(value.split())
    return tuple(url.rstrip("/") for url in text_list(name, value))


_PARSERS: dict[str, Callable[[str, Any], Any]] = {
    "client_id": _text,
    "client_secret": _text,
    "redirect_url": _text,
    "scopes": _text,
    "refresh_scope": _text,
    "trusted_iss": _urls,
    "session_secret": _text,
    "cookie_name": _text,
    "cookie_samesite": _text,
    "cookie_secure": boolean_or_auto,
    "cookie_partitioned": boolean_or_auto,
    "frame_ancestors": _urls,
    "session_max_age_seconds": positive(integer),
    "trend_days": positive(integer),
    "fhir_deadline_seconds": positive(number),
    "http_timeout_seconds": positive(number),
}


def _absolute(name: str, url: str, allow_http: bool) -> None:
    """Refuse a URL a request could not safely go to, its origin read as ``requests`` reads it."""
    origin = request_origin(url)
    if origin is None or origin[0] not in ("http", "https"):
        raise ConfigurationError(f"smart setting {name}: {url!r} is not an absolute http(s) URL")
    if origin[0] == "http" and not allow_http:
        raise ConfigurationError(
            f"smart setting {name}: {url!r} uses plain http; tokens and the client secret go over TLS "
            "only (set the service's allow_http_fhir=true for development)"
        )


def load_smart_settings(
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    *,
    allow_http: bool = False,
    table: Mapping[str, Any] | None = None,
) -> SmartSettings:
    """Defaults, then ``table`` (the site file's ``[smart]``), then ``ICHIS_SMART_*`` variables,
    then ``overrides``; unknown names are an error.

    ``allow_http`` is the service's development switch (``allow_http_fhir``): without it every
    trusted FHIR server must be https.
    """
    settings = read_settings(
        SmartSettings(),
        _PARSERS,
        prefix=ENV_PREFIX,
        environ=os.environ if environ is None else environ,
        table=table,
        table_name="smart",
        overrides=overrides,
        # ICHIS_SMART_LAUNCH_URL is the service's smart_launch_url (where the card links).
        also_known=("launch_url",),
    )
    if not settings.client_id:
        raise ConfigurationError("smart setting client_id: must not be empty")
    if not settings.cookie_name or not settings.cookie_name.replace("_", "").replace("-", "").isalnum():
        raise ConfigurationError("smart setting cookie_name: letters, digits, '-' and '_' only")
    if settings.cookie_name == "ichis_sandbox_ehr":
        raise ConfigurationError("smart setting cookie_name: the sandbox EHR uses that name already")
    samesite = settings.cookie_samesite.capitalize()
    if samesite not in SAME_SITE:
        raise ConfigurationError(f"smart setting cookie_samesite: one of {', '.join(SAME_SITE)}")
    if samesite == "None" and settings.cookie_secure is False:
        raise ConfigurationError(
            "smart setting cookie_samesite: SameSite=None cookies must be Secure (browsers drop them)"
        )
    if not settings.scopes.split():
        raise ConfigurationError("smart setting scopes: must not be empty")
    if settings.refresh_scope not in REFRESH_SCOPES:
        raise ConfigurationError(f"smart setting refresh_scope: one of {', '.join(REFRESH_SCOPES)}")
    for iss in settings.trusted_iss:
        _absolute("trusted_iss", iss, allow_http)
    if settings.redirect_url:
        _absolute("redirect_url", settings.redirect_url, allow_http)
    for origin in settings.frame_ancestors:
        _absolute("frame_ancestors", origin, True)
    return replace(settings, cookie_samesite=samesite)


def frame_ancestors(settings: SmartSettings) -> tuple[str, ...]:
    """Who may frame the pages: configured origins, else the EHRs' FHIR origins (the same host
    serves the EHR page and its FHIR endpoint in many EHRs, and in the sandbox)."""
    configured = settings.frame_ancestors or settings.trusted_iss
    origins = (request_origin(url) for url in configured)
    # Every URL here passed _absolute when the settings were loaded, so each has an origin.
    return tuple(dict.fromkeys(origin_url(origin) for origin in origins if origin is not None))


def launch_scopes(settings: SmartSettings, *, standalone: bool) -> str:
    """What a launch asks for: the scopes, ``launch/patient`` for ``launch`` when standalone, and
    the refresh scope unless the site chose none (or already listed it)."""
    words = settings.scopes.split()
    if standalone:
        words = [w for w in words if w != "launch"]
        if "launch/patient" not in words:
            words.insert(0, "launch/patient")
    if settings.refresh_scope != "none" and not set(words) & {"online_access", "offline_access"}:
        words.append(settings.refresh_scope)
    return " ".join(words)
