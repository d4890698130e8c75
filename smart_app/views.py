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
from datetime import datetime, timedelta
from typing import Any

from flask import Blueprint, Response, current_app, redirect, render_template, request, url_for
from werkzeug.wrappers import Response as Redirect

from fhir_mappings.assessment import assess
from fhir_mappings.audit import SMART_PAGE_VIEW, SMART_PRINT_VIEW, SmartRequest
from fhir_mappings.client import FhirClient
from fhir_mappings.outbound import Destinations
from fhir_mappings.scope import assess_scope
from fhir_mappings.subjects import CallPatient
from smart_app.access import LaunchAccess, renewable, session_status, token_client
from smart_app.auditing import Recorder, failure_outcome, page_outcome
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
    TokenRefused,
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
)
from smart_app.record import PatientRecord, read_record
from smart_app.runtime import ServiceRuntime, SmartRuntime, smart_runtime
from smart_app.session import BrowserSession
from smart_app.settings import SmartSettings, launch_scopes
from smart_app.style import fetch_style

log = logging.getLogger("ichis.smart")

blueprint = Blueprint(
    "smart",
    __name__,
    url_prefix="/smart",
    template_folder="templates",
    static_folder="static",
    static_url_path="/static",
)
install_error_pages(blueprint)


def _runtime() -> SmartRuntime:
    return smart_runtime(current_app)


def _service() -> ServiceRuntime:
    return _runtime().service


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


def _now() -> datetime:
    return _runtime().clock()


def _recorder(runtime: SmartRuntime) -> Recorder:
    return Recorder(
        app_url=f"{_public_base()}/smart",
        client_id=runtime.settings.client_id,
        audit_fhir_url=_service().settings.audit_fhir_url,
        # The rule of the service's FHIR call-backs (cds_service.settings.fhir_destinations).
        destinations=Destinations(
            "fhirServer", _service().settings.allow_http_fhir, _service().settings.fhir_allowed_hosts
        ),
        clock=_now,
    )


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
    scope = launch_scopes(settings, standalone=not launch_id)
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
    session = _browser_session(runtime)
    if session is None:
        raise NoSession("The answer from the EHR arrived without the app's session cookie.")
    state = request.args.get("state", "")
    pending = runtime.store.take_pending(session, state) if state else None
    if pending is None:
        raise StateMismatch("The state in the EHR's answer is not one this browser session is waiting for.")
    # From here on the callback answers a launch this browser started: it is audited, however it ends.
    launch: dict[str, Any] = {}
    try:
        key = secrets.token_urlsafe(18)
        _complete_launch(runtime, pending, launch)
        runtime.store.put_launch(
            session, key, launch, expires_at=runtime.store.clock() + runtime.settings.session_max_age_seconds
        )
    except Exception as error:
        _recorder(runtime).launch(iss=pending["iss"], launch=launch, key=None, outcome=failure_outcome(error))
        raise
    words = f"app launched; granted scope: {launch['scope']}"
    if renewable(launch):
        words += "; with a refresh token"
    _recorder(runtime).launch(iss=pending["iss"], launch=launch, key=key, outcome=("0", words))
    log.info("smart launch authorised", extra={"reason": "token"})
    return redirect(url_for("smart.details", key=key), code=303)


def _complete_launch(runtime: SmartRuntime, pending: dict[str, Any], launch: dict[str, Any]) -> None:
    """The EHR's answer read, the code redeemed, the context checked: what the launch keeps goes
    into ``launch`` as it is learnt, so that a refused launch's record still names the patient
    and the user when the EHR had said who they are."""
    settings = runtime.settings
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
    token = token_client(settings, configuration.token_endpoint, runtime.http).redeem(
        code=code, verifier=verifier, redirect_uri=pending["redirect_uri"], requested_scope=pending["scope"]
    )
    now = runtime.store.clock()
    iss = str(pending["iss"])
    launch |= {
        "iss": iss,
        "access_token": token.access_token,
        "expires_at": now + token.expires_in if token.expires_in is not None else None,
        "refresh_token": token.refresh_token,
        "token_endpoint": configuration.token_endpoint,
        "scope": token.scope,
        "patient": token.patient,
        "encounter": token.encounter,
        "need_patient_banner": token.need_patient_banner,
        "app_context": token.app_context,
        "user": id_token_user(token.id_token, client_id=settings.client_id, issuer=configuration.issuer),
        "session_ends": now + settings.session_max_age_seconds,
    }
    if token.patient is None:
        raise ContextMismatch("The EHR did not say which patient the launch is for.")
    card = parse_app_context(token.app_context)
    if card.patient_id is not None and card.patient_id != token.patient:
        raise ContextMismatch(
            f"The card was computed for patient {card.patient_id}, but the EHR opened the app for "
            f"patient {token.patient}."
        )
    launch["style"] = fetch_style(
        token.smart_style_url,
        (iss, configuration.authorization_endpoint, configuration.token_endpoint),
        session=runtime.http,
        # The look is a nicety: it must not hold the launch up for long.
        timeout=min(settings.http_timeout_seconds, 3.0),
        allow_http=runtime.allow_http,
    )


def _access(runtime: SmartRuntime) -> LaunchAccess:
    session = _browser_session(runtime)
    if session is None:
        raise UnknownLaunch("This browser session holds no launch with this address.")
    return LaunchAccess(runtime.settings, runtime.store, session, runtime.http)


def _read(
    runtime: SmartRuntime, launch: dict[str, Any], made: list[SmartRequest], since: datetime
) -> PatientRecord:
    client = FhirClient(
        base_url=str(launch["iss"]),
        token=str(launch["access_token"]),
        session=runtime.http,
        deadline=time.monotonic() + runtime.settings.fhir_deadline_seconds,
        max_pages=_service().settings.max_fhir_pages,
    )
    grants = Grants.of(str(launch["scope"]))
    return read_record(client, str(launch["patient"]), grants, _service().mapping, since.date(), made=made)


def _render_details(key: str, *, print_view: bool) -> Response:
    """The page of one launch, audited: every request it made and how it ended go on record
    before the page is answered (a page whose record cannot be spooled is not shown)."""
    runtime = _runtime()
    access = _access(runtime)
    launch = access.launch(key)
    made: list[SmartRequest] = []
    activity = SMART_PRINT_VIEW if print_view else SMART_PAGE_VIEW
    try:
        current = access.current(key, launch)
        response, denied = _details(runtime, access, key, current, made, print_view=print_view)
    except Exception as error:
        latest = runtime.store.launch(access.session, key) or launch
        _recorder(runtime).page(
            activity=activity, launch=latest, requests=made, outcome=failure_outcome(error)
        )
        raise
    renewed = runtime.store.launch(access.session, key) or current
    outcome = page_outcome(denied, int(renewed.get("renewals", 0)) > int(launch.get("renewals", 0)))
    _recorder(runtime).page(activity=activity, launch=renewed, requests=made, outcome=outcome)
    return response


def _details(
    runtime: SmartRuntime,
    access: LaunchAccess,
    key: str,
    launch: dict[str, Any],
    made: list[SmartRequest],
    *,
    print_view: bool,
) -> tuple[Response, dict[str, str]]:
    """The page, and the parts of the record the EHR kept back (by part, the scope)."""
    service = _service()
    card = parse_app_context(launch.get("app_context"))
    at = card.at or _now()
    patient = str(launch["patient"])
    since = at - timedelta(days=runtime.settings.trend_days)
    try:
        record = _read(runtime, launch, made, since)
    except TokenRefused:
        # The EHR stopped accepting the token before its time (revoked, or a clock apart):
        # renew it once when a refresh token allows, and read again.
        if not renewable(launch):
            raise
        launch = access.renew(key, launch)
        record = _read(runtime, launch, made, since)
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
        session_status=session_status(launch),
        style_url=url_for("smart.launch_style", key=key) if launch.get("style") else None,
    )
    return Response(html, mimetype="text/html"), record.denied


@blueprint.get("/app/<key>/style.css")
def launch_style(key: str) -> Response:
    """The EHR's look for this launch (smart_app/style.py): checked values as CSS custom properties."""
    style = _access(_runtime()).launch(key).get("style")
    css = render_template("smart/style.css", style=style if isinstance(style, dict) else {})
    return Response(css, mimetype="text/css")


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
