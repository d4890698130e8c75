"""The SMART app's one exception family, and the one place it becomes a page.

Every error a clinician can meet ends on ``smart/error.html``: what happened, in words, and what
to do about it. Never a stack trace, a token or a lab value. The type and the handler are the
project's shared ones (``plumbing.errors``); only the page is the app's own.
"""

from __future__ import annotations

import logging
from typing import Self

from flask import Blueprint, Response, render_template

from plumbing.errors import HttpError, install_error_handlers

log = logging.getLogger("ichis.smart")

_RELAUNCH = "Open the app again from the IChIS card in the EHR (the link under the card)."


class SmartAppError(HttpError, status=400):
    """Something the app cannot do; ``detail`` and ``advice`` are safe to show anyone."""

    #: A stable name for the kind of error (tests and the page's ``data-error`` attribute).
    code = "error"
    title = "The IChIS app could not open"
    advice = _RELAUNCH

    def __init__(self, detail: str, *, advice: str | None = None, status: int | None = None) -> None:
        super().__init__(detail, status=status)
        if advice is not None:
            self.advice = advice

    @property
    def detail(self) -> str:
        """What happened, in words (the page's sentence; the shared type calls it diagnostics)."""
        return self.diagnostics

    @property
    def log_reason(self) -> str:
        """The kind of error only: the detail may quote what the EHR answered."""
        return self.code

    @classmethod
    def from_http(cls, status: int, text: str) -> Self:
        """One of Werkzeug's errors under ``/smart`` (a method the route does not take)."""
        error = cls(text, status=status)
        error.code = "http-error"
        return error


class BadLaunch(SmartAppError):
    """The launch request lacks what SMART App Launch 2.2 requires (``iss``, ``launch``)."""

    code = "bad-launch"
    title = "The app was not launched the way SMART requires"


class UnknownIssuer(SmartAppError, status=403):
    """An ``iss`` not on the allow-list: the secret and the tokens must not go there."""

    code = "unknown-iss"
    title = "This EHR is not one the app is allowed to connect to"
    advice = (
        "The app only connects to FHIR servers its administrator listed (setting trusted_iss, "
        "ICHIS_SMART_TRUSTED_ISS). If this is your hospital's EHR, ask them to add its FHIR base URL."
    )


class NotConfigured(SmartAppError, status=503):
    """A setting the launch needs is missing (the client secret)."""

    code = "not-configured"
    title = "The app is not set up yet"
    advice = "Ask the administrator of the IChIS service to configure the app (docs/smart.md, Settings)."


class DiscoveryFailed(SmartAppError, status=502):
    """``{iss}/.well-known/smart-configuration`` could not be read or is unusable."""

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


class AuthorizationDenied(SmartAppError, status=403):
    """The EHR's authorization server answered the request with an error (RFC 6749, 4.1.2.1)."""

    code = "authorization-denied"
    title = "The EHR did not authorise the app"
    advice = (
        "The EHR refused access for this launch. If you expected access, ask the EHR's administrators "
        f"which permissions the app is registered with. {_RELAUNCH}"
    )


class TokenRequestFailed(SmartAppError, status=502):
    """The token endpoint refused the code, could not be reached, or answered without a Bearer token."""

    code = "token-failed"
    title = "The EHR did not issue an access token"
    advice = f"The launch could not be completed. {_RELAUNCH} If it keeps failing, tell the administrator."

    def __init__(self, detail: str, *, advice: str | None = None, answered: int | None = None) -> None:
        super().__init__(detail, advice=advice)
        #: The token endpoint's HTTP status, when it answered at all.
        self.answered = answered


class TokenExpired(SmartAppError, status=401):
    """The access token's lifetime is over and the app cannot renew it (no refresh token was
    granted, or the EHR refused to renew)."""

    code = "token-expired"
    title = "Access to the record has ended and cannot be renewed"
    advice = f"For your patient's safety the app's access is limited in time. {_RELAUNCH}"


class TokenRefused(TokenExpired):
    """The EHR's FHIR server answered 401: the token was revoked or expired early (the app renews
    it once when it can, then gives up)."""


class UnknownLaunch(SmartAppError, status=404):
    """The page's launch is not in this browser's session (another browser, or the launch ended)."""

    code = "unknown-launch"
    title = "This page belongs to a launch that has ended"
    advice = f"The page was opened in another browser session, or the session is over. {_RELAUNCH}"


class ContextMismatch(SmartAppError, status=409):
    """The launch context cannot be trusted to name one patient."""

    code = "context-mismatch"
    title = "The app cannot tell which patient this is"
    advice = f"Nothing is shown, so as not to show one patient's data in another's context. {_RELAUNCH}"


class FhirUnavailable(SmartAppError, status=502):
    """The EHR's FHIR server failed, timed out or sent something unreadable while the page was built."""

    code = "fhir-unavailable"
    title = "The EHR's FHIR server did not give the data"
    advice = "Reload the page in a moment. If it keeps failing, tell the EHR's administrators."


class PageNotFound(SmartAppError, status=404):
    """An address under ``/smart`` that is no page of the app."""

    code = "not-found"
    title = "There is no such page in the IChIS app"
    advice = _RELAUNCH


class UnexpectedFailure(SmartAppError, status=500):
    """A failure of the app itself; the trace is in the log, the page says what to do."""

    code = "internal"
    advice = "Reload the page, or open the app again from the card."


def error_page(error: SmartAppError) -> Response:
    """The error page of an error, with its status."""
    page = render_template("smart/error.html", error=error)
    return Response(page, status=error.status, mimetype="text/html")


def install_error_pages(blueprint: Blueprint) -> None:
    """Every error under ``/smart`` ends on the error page; the reason goes to the log, by code."""
    install_error_handlers(
        blueprint,
        SmartAppError,
        error_page,
        log=log,
        unexpected=lambda: UnexpectedFailure(
            "The app failed unexpectedly; the failure has been logged for the administrators."
        ),
    )
