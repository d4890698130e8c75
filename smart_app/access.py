"""A launch's access to the record: its token while it lives, renewed with the refresh token before
it ends, and a page that says so plainly when it can no longer be renewed.

SMART App Launch 2.2, "Refresh access token": the app asks for ``online_access`` (or
``offline_access``, as the site configures) and trades the refresh token for a new access token
when the old one is about to expire, for as long as the browser session lasts. The tokens stay in
the server-side session store, sealed with the browser's key.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import requests

from smart_app.errors import TokenExpired, TokenRequestFailed, UnknownLaunch
from smart_app.oauth import TokenClient
from smart_app.session import BrowserSession, SessionStore
from smart_app.settings import SmartSettings

log = logging.getLogger("ichis.smart")

#: A token with less life left than this is renewed (or, when it cannot be, treated as expired): a
#: page's reads take seconds, and a token that dies half-way would show half a record.
EXPIRY_MARGIN_SECONDS = 5

Launch = dict[str, Any]


def clock_text(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).strftime("%H:%M:%S UTC")


def ends_soon(launch: Launch, now: float) -> bool:
    """Whether the launch's access token is over, or about to be (None: the EHR set no end)."""
    expires_at = launch.get("expires_at")
    return isinstance(expires_at, (int, float)) and now >= expires_at - EXPIRY_MARGIN_SECONDS


def renewable(launch: Launch) -> bool:
    refresh = launch.get("refresh_token")
    return isinstance(refresh, str) and bool(refresh)


def session_status(launch: Launch) -> str | None:
    """What the page says about how long its access lasts, or None when the EHR set no end."""
    ends = launch.get("session_ends")
    if renewable(launch) and isinstance(ends, (int, float)):
        return (
            "The app renews its access to the record automatically until this session ends at "
            f"{clock_text(ends)}."
        )
    expires_at = launch.get("expires_at")
    if isinstance(expires_at, (int, float)):
        return (
            f"The app's access to the record ends at {clock_text(expires_at)} and cannot be renewed "
            "(the EHR granted no refresh token): after that, open the app again from the card."
        )
    return None


def token_client(settings: SmartSettings, endpoint: str, http: requests.Session) -> TokenClient:
    """The app, with its configured id and secret, as a client of ``endpoint``."""
    return TokenClient(
        endpoint, settings.client_id, settings.client_secret, http, settings.http_timeout_seconds
    )


class LaunchAccess:
    """The launches of one browser session, with their tokens kept current."""

    def __init__(
        self, settings: SmartSettings, store: SessionStore, session: BrowserSession, http: requests.Session
    ) -> None:
        self.settings = settings
        self.store = store
        self.session = session
        self.http = http

    def launch(self, key: str) -> Launch:
        """The launch, whatever state its token is in; UnknownLaunch when this session has none."""
        launch = self.store.launch(self.session, key)
        if launch is None:
            raise UnknownLaunch("This browser session holds no launch with this address.")
        return launch

    def current(self, key: str, launch: Launch) -> Launch:
        """The launch with an access token that lives long enough for a page's reads."""
        if not ends_soon(launch, self.store.clock()):
            return launch
        return self.renew(key, launch)

    def renew(self, key: str, launch: Launch) -> Launch:
        """Trade the refresh token for a new access token; TokenExpired when that cannot be done."""
        expires_at = launch.get("expires_at")
        ended = (
            f"The access the EHR granted for this launch ended at {clock_text(expires_at)}"
            if isinstance(expires_at, (int, float))
            else "The EHR no longer accepts the access it granted for this launch"
        )
        if not renewable(launch):
            why = (
                "the app asks for no refresh token (its refresh_scope is none)"
                if self.settings.refresh_scope == "none"
                else f"the EHR granted no refresh token ({self.settings.refresh_scope} was not granted)"
            )
            raise TokenExpired(f"{ended}, and {why}, so the app cannot renew it.")
        try:
            token = token_client(self.settings, str(launch["token_endpoint"]), self.http).refresh(
                refresh_token=str(launch["refresh_token"]), granted_scope=str(launch["scope"])
            )
        except TokenRequestFailed as failure:
            # Another page of this session may have renewed first and spent the refresh token
            # this request held (EHRs that rotate refresh tokens accept each one once).
            latest = self.store.launch(self.session, key)
            if (
                latest is not None
                and latest.get("access_token") != launch.get("access_token")
                and not ends_soon(latest, self.store.clock())
            ):
                return latest
            if failure.answered is not None and 400 <= failure.answered < 500:
                log.info("smart access not renewed", extra={"reason": "refused"})
                raise TokenExpired(f"{ended}, and the EHR refused to renew it. {failure.detail}") from None
            raise
        now = self.store.clock()
        renewed = {
            **launch,
            "access_token": token.access_token,
            "expires_at": now + token.expires_in if token.expires_in is not None else None,
            "scope": token.scope,
            # RFC 6749, 6: a new refresh token replaces the old one; without one the old one stays.
            "refresh_token": token.refresh_token or launch["refresh_token"],
            "renewals": int(launch.get("renewals", 0)) + 1,
        }
        if not self.store.replace_launch(self.session, key, renewed):
            raise UnknownLaunch("The launch ended while its access was being renewed.")
        log.info("smart access renewed", extra={"reason": "refresh-token"})
        return renewed
