"""The SMART app's one exception family, and the one place it becomes a page.

Every error a clinician can meet ends on ``smart/error.html``: what happened, in words, and what
to do about it. Never a stack trace, a token or a lab value.
"""

from __future__ import annotations

import logging

from flask import Blueprint, Response, render_template
from werkzeug.exceptions import HTTPException

log = logging.getLogger("ichis.smart")

_RELAUNCH = "Open the app again from the IChIS card in the EHR (the link under the card)."


class SmartAppError(Exception):
    """Something the app cannot do; ``detail`` and ``advice`` are safe to show anyone."""

    status = 400
    #: A stable name for the kind of error (tests and the page's ``data-error`` attribute).
    code = "error"
    title = "The IChIS app could not open"
    advice = _RELAUNCH

    def __init__(self, detail: str, *, advice: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        if advice is not None:
            self.advice = advice


class BadLaunch(SmartAppError):
    """The launch request lacks what SMART App Launch 2.2 requires (``iss``, ``launch``)."""

    code = "bad-launch"
    title = "The app was not launched the way SMART requires"


class UnknownIssuer(SmartAppError):
    """An ``iss`` not on the allow-list: the secret and the tokens must not go there."""

    status = 403
    code = "unknown-iss"
    title = "This EHR is not one the app is allowed to connect to"
    advice = (
        "The app only connects to FHIR servers its administrator listed (setting trusted_iss, "
        "ICHIS_SMART_TRUSTED_ISS). If this is your hospital's EHR, ask them to add its FHIR base URL."
    )


class NotConfigured(SmartAppError):
    status = 503
    code = "not-configured"
    title = "The app is not set up yet"
    advice = "Ask the administrator of the IChIS service to configure the app (docs/smart.md, Settings)."


class DiscoveryFailed(SmartAppError):
    """``{iss}/.well-known/smart-configuration`` could not be read or is unusable."""

    status = 502
    code = "discovery-failed"
    title = "The EHR's SMART configuration could not be read"
    advice = "Try again in a moment; if it keeps failing, tell the EHR's administrators."


class NoSession(SmartAppError):
    """The callback arrived without the app's session cookie."""

    code = "no-session"
    title = "The app's session cookie did not come back"
    advice = (
        "Your browser did not send the app's cookie, which happens when the EHR shows the app in a "
        "frame from another site and the browser blocks such cookies. Open the app in a new tab from "
        "the card, or ask the administrator to set the cookie for framed use (docs/smart.md)."
    )


class StateMismatch(SmartAppError):
    """The ``state`` on the callback is not one this browser session sent (SMART 2.2, step 4)."""

    code = "state-mismatch"
    title = "This sign-in answer does not belong to this session"
    advice = (
        "The answer from the EHR did not match a launch started in this browser, or it was used "
        f"already (a reload of the sign-in page). Nothing was read from the record. {_RELAUNCH}"
    )


class VerifierMissing(SmartAppError):
    """The session has no PKCE code verifier for this ``state``: the code cannot be redeemed."""

    code = "pkce-verifier-missing"
    title = "The launch cannot be completed securely"
    advice = f"The app's proof key for this launch is missing, so it will not ask for a token. {_RELAUNCH}"


class AuthorizationDenied(SmartAppError):
    """The EHR's authorization server answered the request with an error (RFC 6749, 4.1.2.1)."""

    status = 403
    code = "authorization-denied"
    title = "The EHR did not authorise the app"
    advice = (
        "The EHR refused access for this launch. If you expected access, ask the EHR's administrators "
        f"which permissions the app is registered with. {_RELAUNCH}"
    )


class TokenRequestFailed(SmartAppError):
    status = 502
    code = "token-failed"
    title = "The EHR did not issue an access token"
    advice = f"The launch could not be completed. {_RELAUNCH} If it keeps failing, tell the administrator."

    def __init__(self, detail: str, *, advice: str | None = None, answered: int | None = None) -> None:
        super().__init__(detail, advice=advice)
        #: The token endpoint's HTTP status, when it answered at all.
        self.answered = answered


class TokenExpired(SmartAppError):
    """The access token's lifetime is over and the app cannot renew it (no refresh token was
    granted, or the EHR refused to renew)."""

    status = 401
    code = "token-expired"
    title = "Access to the record has ended and cannot be renewed"
    advice = f"For your patient's safety the app's access is limited in time. {_RELAUNCH}"


class TokenRefused(TokenExpired):
    """The EHR's FHIR server answered 401: the token was revoked or expired early (the app renews
    it once when it can, then gives up)."""


class UnknownLaunch(SmartAppError):
    status = 404
    code = "unknown-launch"
    title = "This page belongs to a launch that has ended"
    advice = f"The page was opened in another browser session, or the session is over. {_RELAUNCH}"


class ContextMismatch(SmartAppError):
    """The launch context cannot be trusted to name one patient."""

    status = 409
    code = "context-mismatch"
    title = "The app cannot tell which patient this is"
    advice = f"Nothing is shown, so as not to show one patient's data in another's context. {_RELAUNCH}"


class FhirUnavailable(SmartAppError):
    status = 502
    code = "fhir-unavailable"
    title = "The EHR's FHIR server did not give the data"
    advice = "Reload the page in a moment. If it keeps failing, tell the EHR's administrators."


class PageNotFound(SmartAppError):
    status = 404
    code = "not-found"
    title = "There is no such page in the IChIS app"
    advice = _RELAUNCH


def error_page(error: SmartAppError) -> Response:
    page = render_template("smart/error.html", error=error)
    return Response(page, status=error.status, mimetype="text/html")


def install_error_pages(blueprint: Blueprint) -> None:
    """Every error under ``/smart`` ends on the error page; the reason goes to the log, by code."""

    @blueprint.errorhandler(SmartAppError)
    def _known(error: SmartAppError) -> Response:
        log.info("smart app refused", extra={"status": error.status, "reason": error.code})
        return error_page(error)

    @blueprint.errorhandler(HTTPException)
    def _http(error: HTTPException) -> Response:
        known = SmartAppError(error.description or error.name)
        known.status = error.code or 500
        known.code = "http-error"
        return _known(known)

    @blueprint.errorhandler(Exception)
    def _unexpected(error: Exception) -> Response:
        # The trace goes to the log only; the page says what to do.
        log.exception("smart app failed", exc_info=error)
        failure = SmartAppError(
            "The app failed unexpectedly; the failure has been logged for the administrators.",
            advice="Reload the page, or open the app again from the card.",
        )
        failure.status = 500
        failure.code = "internal"
        return error_page(failure)
