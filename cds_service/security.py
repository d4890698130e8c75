"""Request-level protections: client authentication, CORS, and where call-backs may go.

Installed once by ``create_app``; the views never see an unauthenticated request.
"""

from __future__ import annotations

import logging

import requests
from flask import Flask, Response, g, request

from cds_service.auth import (
    AuthenticationFailed,
    Authenticator,
    RedisReplayCache,
    ReplayCache,
    ReplayStoreUnavailable,
    SqliteReplayCache,
    build_authenticator,
)
from cds_service.errors import BadRequest, outcome_response
from cds_service.settings import Runtime, Settings, fhir_destinations, jwks_destinations
from cds_service.wiring import Service
from fhir_mappings.outbound import UnsafeDestination

log = logging.getLogger("ichis.auth")

#: Endpoints that carry patient data and therefore always need a client JWT.
PROTECTED = frozenset({"cds.call_service", "cds.feedback"})
DISCOVERY = "cds.list_services"


def replay_cache(settings: Settings) -> ReplayCache:
    """SQLite by default: every gunicorn worker on this host shares the file, no server to run.
    Redis when configured: needed once several hosts serve the same clients."""
    if settings.replay_store.startswith(("redis://", "rediss://", "unix://")):
        return RedisReplayCache(settings.replay_store)
    if settings.replay_store:
        raise ValueError("replay_store must be empty (SQLite in data_dir) or a redis:// URL")
    return SqliteReplayCache(settings.data_dir / "jti.sqlite")


def unauthorized() -> Response:
    """The same bare answer for every failure: the reason is in our log, not in the response."""
    response = outcome_response(401, "The request could not be authenticated.", "login")
    response.headers["WWW-Authenticate"] = 'Bearer realm="cds-services"'
    return response


def audience_for_request(settings: Settings) -> str:
    """The exact URL the client called, as it sees it: the public base URL and the path. Never
    the request's Host header (``public_base_url`` is required when authentication is on)."""
    return settings.public_base_url.rstrip("/") + request.path


def build_client_authenticator(runtime: Runtime, session: requests.Session) -> Authenticator | None:
    """The JWT authenticator of the settings, or None (with a loud warning) when auth is off."""
    settings = runtime.settings
    if settings.auth_mode == "off":
        log.warning(
            "AUTHENTICATION IS OFF (auth_mode=off): any caller can request cards. "
            "Development only: never run this way with real patient data."
        )
        return None
    if not runtime.issuers:
        log.warning("no trusted issuers are configured: every hook call will be refused (401)")
    return build_authenticator(
        runtime.issuers,
        session=session,
        replay=replay_cache(settings),
        clock_skew_seconds=settings.clock_skew_seconds,
        jwks_min_refresh_seconds=settings.jwks_min_refresh_seconds,
        max_lifetime_seconds=settings.max_token_lifetime_seconds,
        key_set_destinations=jwks_destinations(settings),
    )


def install_security(app: Flask, service: Service) -> None:
    settings = service.runtime.settings
    authenticator = service.authenticator

    @app.before_request
    def _authenticate() -> Response | None:
        if request.method == "OPTIONS" or authenticator is None:
            return None
        if request.endpoint not in PROTECTED and not (
            request.endpoint == DISCOVERY and settings.auth_discovery
        ):
            return None
        try:
            g.caller = authenticator.authenticate(
                request.headers.get("Authorization"), audience_for_request(settings)
            )
        except AuthenticationFailed as failure:
            log.warning("authentication failed", extra={"reason": str(failure), "path": request.path})
            return unauthorized()
        except ReplayStoreUnavailable as failure:
            log.error("authentication impossible", extra={"reason": str(failure), "path": request.path})
            return outcome_response(503, "The service cannot check tokens at the moment; retry.")
        return None

    origins = set(settings.cors_origins)

    @app.after_request
    def _cors(response: Response) -> Response:
        origin = request.headers.get("Origin")
        if origin and ("*" in origins or origin in origins):
            response.headers["Access-Control-Allow-Origin"] = "*" if "*" in origins else origin
            response.headers["Vary"] = "Origin"
            if request.method == "OPTIONS":
                response.headers["Access-Control-Allow-Methods"] = "GET, POST, OPTIONS"
                response.headers["Access-Control-Allow-Headers"] = "Authorization, Content-Type"
                response.headers["Access-Control-Max-Age"] = "600"
        return response


def check_fhir_server(url: str, settings: Settings) -> None:
    """Refuse call-backs to places the token must not go (SSRF, plain http in production)."""
    try:
        fhir_destinations(settings).check(url)
    except UnsafeDestination as error:
        raise BadRequest(str(error), expression=["fhirServer"]) from None
