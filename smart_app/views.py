"""The app's pages under ``/smart``: launch, callback, the details page and its print view.

Parse, call, render: the OAuth steps are in ``oauth``, the reads in ``record``, the score in
``fhir_mappings.assessment`` and what the page says in ``details``. Errors are raised as
``SmartAppError`` and become pages in ``errors``.

Flow (SMART App Launch 2.2, EHR launch): the EHR opens ``/smart/launch?iss=...&launch=...``; the
app reads ``{iss}/.well-known/smart-configuration``, keeps ``state`` and a PKCE verifier in the
server-side session and sends the browser to the EHR's authorization endpoint; the EHR sends it
back to ``/smart/callback?code=...&state=...``; the app checks ``state``, trades the code for a
token (client secret and verifier), keeps the token server-side and redirects to
``/smart/app/<key>``, which reads the record with the token and shows the score.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import requests
from flask import Blueprint, Response, current_app, redirect, render_template, request, url_for
from werkzeug.wrappers import Response as Redirect

from fhir_mappings.assessment import assess
from fhir_mappings.client import FhirClient
from fhir_mappings.config import MappingConfig
from fhir_mappings.scope import DiagnosisTable, assess_scope
from fhir_mappings.subjects import CallPatient
from smart_app.context import parse_app_context
from smart_app.details import build_page
from smart_app.errors import (
    AuthorizationDenied,
    BadLaunch,
    ContextMismatch,
    NoSession,
    NotConfigured,
    PageNotFound,
    StateMismatch,
    TokenExpired,
    UnknownIssuer,
    UnknownLaunch,
    VerifierMissing,
    install_error_pages,
)
from smart_app.oauth import (
    Grants,
    SmartConfiguration,
    authorization_url,
    discover,
    id_token_user,
    pkce_pair,
    request_token,
)
from smart_app.record import read_record
from smart_app.session import BrowserSession, CookieCodec, SessionStore
from smart_app.settings import SmartSettings

log = logging.getLogger("ichis.smart")

EXTENSION = "ichis.smart"
#: A token with less life left than this is treated as expired: a page's reads take seconds, and
#: a token that dies half-way would show half a record.
EXPIRY_MARGIN_SECONDS = 5

blueprint = Blueprint(
    "smart",
    __name__,
    url_prefix="/smart",
    template_folder="templates",
    static_folder="static",
    static_url_path="/static",
)
install_error_pages(blueprint)


class ServiceSettings(Protocol):
    """What the app reads of the CDS service's settings (cds_service.settings.Settings)."""

    @property
    def public_base_url(self) -> str: ...
    @property
    def data_dir(self) -> Path: ...
    @property
    def allow_http_fhir(self) -> bool: ...
    @property
    def max_fhir_pages(self) -> int: ...


class ServiceRuntime(Protocol):
    """What the app reads of the service's runtime (``app.extensions["ichis.runtime"]``)."""

    @property
    def settings(self) -> ServiceSettings: ...
    @property
    def mapping(self) -> MappingConfig: ...
    @property
    def diagnoses(self) -> DiagnosisTable: ...


@dataclass(frozen=True)
class SmartRuntime:
    """What ``install_smart_app`` builds once and every request shares."""

    settings: SmartSettings
    store: SessionStore
    codec: CookieCodec
    http: requests.Session
    allow_http: bool
    frame_ancestors: tuple[str, ...]


def _runtime() -> SmartRuntime:
    runtime: SmartRuntime = current_app.extensions[EXTENSION]
    return runtime


def _service() -> ServiceRuntime:
    service: ServiceRuntime = current_app.extensions["ichis.runtime"]
    return service


def _public_base() -> str:
    return (_service().settings.public_base_url or request.host_url).rstrip("/")


def _redirect_uri(settings: SmartSettings) -> str:
    return settings.redirect_url or f"{_public_base()}/smart/callback"


def _cookie_secure(settings: SmartSettings) -> bool:
    if settings.cookie_secure is not None:
        return settings.cookie_secure
    return _public_base().startswith("https://")


def _set_cookie(response: Response | Redirect, runtime: SmartRuntime, session: BrowserSession) -> None:
    """The session cookie: HttpOnly, SameSite and Secure as configured, path /smart only.

    A session cookie (no Max-Age): it ends with the browser, which suits shared clinical
    workstations; the signature's timestamp bounds it on the server side.
    """
    settings = runtime.settings
    partitioned = (
        settings.cookie_partitioned
        if settings.cookie_partitioned is not None
        else settings.cookie_samesite == "None"
    )
    response.set_cookie(
        settings.cookie_name,
        runtime.codec.dumps(session),
        path="/smart",
        httponly=True,
        secure=_cookie_secure(settings) or settings.cookie_samesite == "None",
        samesite=settings.cookie_samesite,
        partitioned=partitioned,
    )


def _browser_session(runtime: SmartRuntime) -> BrowserSession | None:
    return runtime.codec.loads(request.cookies.get(runtime.settings.cookie_name))


def standalone_scopes(scopes: str) -> str:
    """A standalone launch has no ``launch`` id: ask the EHR to establish a patient instead."""
    words = [w for w in scopes.split() if w != "launch"]
    if "launch/patient" not in words:
        words.insert(0, "launch/patient")
    return " ".join(words)


@blueprint.after_request
def _protect(response: Response) -> Response:
    """Headers for pages with patient data, shown inside the EHR's frame."""
    runtime = _runtime()
    ancestors = " ".join(("'self'", *runtime.frame_ancestors))
    response.headers["Content-Security-Policy"] = (
        "default-src 'none'; style-src 'self'; img-src 'self' data:; script-src 'self'; "
        f"form-action 'self'; base-uri 'none'; frame-ancestors {ancestors}"
    )
    response.headers["X-Content-Type-Options"] = "nosniff"
    # The callback URL carries the code and state: no page of ours passes it on as a referrer.
    response.headers["Referrer-Policy"] = "no-referrer"
    if request.endpoint != "smart.static":
        response.headers["Cache-Control"] = "no-store"
    return response


@blueprint.get("/launch")
def launch() -> Redirect:
    """EHR launch (``iss`` and ``launch``), or standalone launch (``iss`` alone, or nothing when
    exactly one EHR is trusted): discovery, then off to the EHR's authorization endpoint."""
    runtime = _runtime()
    settings = runtime.settings
    iss = request.args.get("iss", "").strip().rstrip("/")
    launch_id = request.args.get("launch", "").strip()
    if not iss:
        if launch_id or len(settings.trusted_iss) != 1:
            raise BadLaunch(
                "The launch did not say which EHR it came from (the iss parameter is missing).",
                advice="Open the app from the card in the EHR; the EHR adds iss and launch to the link.",
            )
        iss = settings.trusted_iss[0]
    if iss not in settings.trusted_iss:
        raise UnknownIssuer(f"The launch names the FHIR server {iss}, which is not on the app's list.")
    if not settings.client_secret:
        raise NotConfigured(
            "The app has no client secret (setting client_secret, ICHIS_SMART_CLIENT_SECRET)."
        )
    configuration = discover(iss, runtime.http, settings.http_timeout_seconds, allow_http=runtime.allow_http)
    session = _browser_session(runtime) or BrowserSession.new()
    state = secrets.token_urlsafe(32)  # 256 bits; SMART asks for at least 122
    verifier, challenge = pkce_pair()
    scope = settings.scopes if launch_id else standalone_scopes(settings.scopes)
    redirect_uri = _redirect_uri(settings)
    runtime.store.put_pending(
        session,
        state,
        {
            "iss": iss,
            "code_verifier": verifier,
            "redirect_uri": redirect_uri,
            "scope": scope,
            "authorization_endpoint": configuration.authorization_endpoint,
            "token_endpoint": configuration.token_endpoint,
            "issuer": configuration.issuer,
        },
    )
    params = {
        "response_type": "code",
        "client_id": settings.client_id,
        "redirect_uri": redirect_uri,
        "scope": scope,
        "state": state,
        "aud": iss,
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    if launch_id:
        params["launch"] = launch_id
    response = redirect(authorization_url(configuration.authorization_endpoint, params), code=302)
    _set_cookie(response, runtime, session)
    log.info("smart launch", extra={"reason": "ehr-launch" if launch_id else "standalone-launch"})
    return response


def _short(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


@blueprint.get("/callback")
def callback() -> Redirect:
    """The redirect URI: check ``state`` against this session, then redeem the code once."""
    runtime = _runtime()
    settings = runtime.settings
    session = _browser_session(runtime)
    if session is None:
        raise NoSession("The answer from the EHR arrived without the app's session cookie.")
    state = request.args.get("state", "")
    pending = runtime.store.take_pending(session, state) if state else None
    if pending is None:
        raise StateMismatch("The state in the EHR's answer is not one this browser session is waiting for.")
    if "error" in request.args:
        error = _short(request.args.get("error", ""), 60)
        description = _short(request.args.get("error_description", ""))
        raise AuthorizationDenied(
            f"The EHR answered: {error}" + (f" ({description})" if description else "") + "."
        )
    code = request.args.get("code", "")
    if not code:
        raise AuthorizationDenied("The EHR's answer carries neither a code nor an error.")
    verifier = pending.get("code_verifier")
    if not isinstance(verifier, str) or not verifier:
        raise VerifierMissing("There is no PKCE code verifier for this launch in the session.")
    configuration = SmartConfiguration(
        authorization_endpoint=pending["authorization_endpoint"],
        token_endpoint=pending["token_endpoint"],
        issuer=pending.get("issuer"),
    )
    token = request_token(
        configuration,
        code=code,
        verifier=verifier,
        redirect_uri=pending["redirect_uri"],
        client_id=settings.client_id,
        client_secret=settings.client_secret,
        requested_scope=pending["scope"],
        session=runtime.http,
        timeout=settings.http_timeout_seconds,
    )
    if token.patient is None:
        raise ContextMismatch("The EHR did not say which patient the launch is for.")
    card = parse_app_context(token.app_context)
    if card.patient_id is not None and card.patient_id != token.patient:
        raise ContextMismatch(
            f"The card was computed for patient {card.patient_id}, but the EHR opened the app for "
            f"patient {token.patient}."
        )
    now = time.time()
    key = secrets.token_urlsafe(18)
    runtime.store.put_launch(
        session,
        key,
        {
            "iss": pending["iss"],
            "access_token": token.access_token,
            "expires_at": now + token.expires_in if token.expires_in is not None else None,
            "scope": token.scope,
            "patient": token.patient,
            "encounter": token.encounter,
            "need_patient_banner": token.need_patient_banner,
            "app_context": token.app_context,
            "user": id_token_user(token.id_token, client_id=settings.client_id, issuer=configuration.issuer),
        },
        expires_at=now + settings.session_max_age_seconds,
    )
    log.info("smart launch authorised", extra={"reason": "token"})
    return redirect(url_for("smart.details", key=key), code=303)


def _now() -> datetime:
    clock: Callable[[], datetime] | None = current_app.extensions.get("ichis.clock")
    return clock() if clock is not None else datetime.now(UTC)


def _launch_of(runtime: SmartRuntime, key: str) -> Mapping[str, Any]:
    session = _browser_session(runtime)
    launch = runtime.store.launch(session, key) if session is not None else None
    if launch is None:
        raise UnknownLaunch("This browser session holds no launch with this address.")
    expires_at = launch.get("expires_at")
    if isinstance(expires_at, (int, float)) and time.time() >= expires_at - EXPIRY_MARGIN_SECONDS:
        ended = datetime.fromtimestamp(expires_at, UTC).strftime("%H:%M:%S UTC")
        raise TokenExpired(f"The access the EHR granted for this launch ended at {ended}.")
    return launch


def _render_details(key: str, *, print_view: bool) -> Response:
    runtime = _runtime()
    service = _service()
    launch = _launch_of(runtime, key)
    card = parse_app_context(launch.get("app_context"))
    at = card.at or _now()
    patient = str(launch["patient"])
    grants = Grants.of(str(launch["scope"]))
    client = FhirClient(
        base_url=str(launch["iss"]),
        token=str(launch["access_token"]),
        session=runtime.http,
        deadline=time.monotonic() + runtime.settings.fhir_deadline_seconds,
        max_pages=service.settings.max_fhir_pages,
    )
    since = (at - timedelta(days=runtime.settings.trend_days)).date()
    record = read_record(client, patient, grants, service.mapping, since)
    # The score comes from the one path every surface uses, at the card's order time.
    try:
        subject = CallPatient.parse(patient, str(launch["iss"]))
    except ValueError:
        raise ContextMismatch(f"The launch names the patient {patient!r}, which is not a FHIR id.") from None
    assessment = assess(record.observations or [], at, service.mapping, patient=subject)
    scope = (
        assess_scope(record.conditions, service.diagnoses, patient=subject)
        if record.conditions is not None
        else None
    )
    page = build_page(
        assessment,
        record=record,
        scope=scope,
        context=card,
        patient_id=patient,
        at=at,
        at_from_card=card.at is not None,
        mapping=service.mapping,
        trend_days=runtime.settings.trend_days,
        client_id=runtime.settings.client_id,
        # A printed page always names the patient: paper leaves the EHR's banner behind.
        show_banner=bool(launch.get("need_patient_banner", True)) or print_view,
    )
    html = render_template(
        "smart/details.html",
        page=page,
        key=key,
        print_view=print_view,
        user=launch.get("user"),
        granted=str(launch["scope"]),
        iss=str(launch["iss"]),
    )
    return Response(html, mimetype="text/html")


@blueprint.get("/app/<key>")
def details(key: str) -> Response:
    """The details page of one launch: score, strata, inputs, trends, problems, citation."""
    return _render_details(key, print_view=False)


@blueprint.get("/app/<key>/print")
def print_view(key: str) -> Response:
    """The same page laid out for paper, with the patient always named."""
    return _render_details(key, print_view=True)


@blueprint.route("/", methods=["GET", "POST"])
@blueprint.route("/<path:rest>", methods=["GET", "POST"])
def not_found(rest: str = "") -> Response:
    """Any other address under /smart: the app's own not-found page rather than the service's JSON."""
    raise PageNotFound(f"There is no page at /smart/{rest}.")
