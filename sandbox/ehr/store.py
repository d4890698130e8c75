"""What the authorization server remembers: launches, authorization codes and access tokens.

Everything lives in memory, behind one lock: the sandbox is one process, and a restart logging
every app out is what a developer expects from a sandbox. The clock is an attribute so tests can
move time instead of sleeping.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar


@dataclass(frozen=True)
class LaunchContext:
    """What the EHR knew when it launched an app: minted as an opaque ``launch`` id."""

    patient: str | None
    encounter: str | None
    user: str
    app_context: str | None = None
    fhir_context: tuple[dict[str, Any], ...] = ()
    deny_scopes: tuple[str, ...] = ()
    intent: str | None = None


@dataclass(frozen=True)
class AuthorizationCodeRecord:
    """One authorization code, as Authlib's grant and the OpenID extension read it."""

    code: str
    client_id: str
    redirect_uri: str
    scope: str
    user: str
    context: LaunchContext
    code_challenge: str
    code_challenge_method: str
    nonce: str | None
    auth_time: int
    expires_at: float

    # Authlib's AuthorizationCodeMixin and the OpenID Connect one, by duck typing.
    def get_redirect_uri(self) -> str:
        return self.redirect_uri

    def get_scope(self) -> str:
        return self.scope

    def get_nonce(self) -> str | None:
        return self.nonce

    def get_auth_time(self) -> int:
        return self.auth_time

    def get_acr(self) -> None:
        return None

    def get_amr(self) -> None:
        return None


@dataclass(frozen=True, kw_only=True)
class Grant:
    """What a token grants: to which client, which scopes, for which patient and user, until when."""

    client_id: str
    scope: str
    patient: str | None
    encounter: str | None
    user: str
    expires_at: float
    code: str | None = None
    revoked: bool = False


@dataclass(frozen=True, kw_only=True)
class TokenRecord(Grant):
    """One access token and what it grants."""

    access_token: str = field(repr=False)


@dataclass(frozen=True, kw_only=True)
class RefreshTokenRecord(Grant):
    """One refresh token (``online_access`` or ``offline_access`` granted) and the grant it renews."""

    refresh_token: str = field(repr=False)

    # Authlib's refresh-token grant, by duck typing.
    def check_client(self, client: Any) -> bool:
        return bool(client.get_client_id() == self.client_id)

    def get_scope(self) -> str:
        return self.scope


#: An access or refresh token's record: both expire and can be revoked.
Issued = TypeVar("Issued", TokenRecord, RefreshTokenRecord)


class Store:
    """Launches, codes and tokens of one sandbox EHR, safe to use from many request threads."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._lock = threading.Lock()
        self._launches: dict[str, tuple[LaunchContext, float]] = {}
        self._codes: dict[str, AuthorizationCodeRecord] = {}
        self._used_codes: set[str] = set()
        self._tokens: dict[str, TokenRecord] = {}
        self._refresh_tokens: dict[str, RefreshTokenRecord] = {}

    # launches -----------------------------------------------------------------------------
    def mint_launch(self, context: LaunchContext, ttl: int) -> str:
        launch_id = secrets.token_urlsafe(18)
        with self._lock:
            self._launches[launch_id] = (context, self.clock() + ttl)
        return launch_id

    def launch(self, launch_id: str) -> LaunchContext | None:
        """The context of a launch id, until it expires (an app may authorize it again meanwhile)."""
        with self._lock:
            found = self._launches.get(launch_id)
        if found is None or self.clock() >= found[1]:
            return None
        return found[0]

    # authorization codes ------------------------------------------------------------------
    def save_code(self, record: AuthorizationCodeRecord) -> None:
        with self._lock:
            self._codes[record.code] = record

    def take_code(self, code: str, client_id: str) -> AuthorizationCodeRecord | None:
        """The code's record if it is live and was issued to ``client_id``; a code works once.

        The code is spent by the first token request that presents it, whether or not that
        request then passes PKCE. RFC 6749 section 4.1.2: a code used twice is denied, and the
        tokens already issued from it are revoked.
        """
        with self._lock:
            if code in self._used_codes:
                for token, record in list(self._tokens.items()):
                    if record.code == code:
                        self._tokens[token] = replace(record, revoked=True)
                for token, renewal in list(self._refresh_tokens.items()):
                    if renewal.code == code:
                        self._refresh_tokens[token] = replace(renewal, revoked=True)
                return None
            found = self._codes.get(code)
            if found is None or found.client_id != client_id:
                return None
            del self._codes[code]
            self._used_codes.add(code)
        if self.clock() >= found.expires_at:
            return None
        return found

    # access and refresh tokens ------------------------------------------------------------
    def _live(self, records: dict[str, Issued], value: str) -> Issued | None:
        """The record of a token value if it is live (issued here, not expired, not revoked)."""
        with self._lock:
            record = records.get(value)
        if record is None or record.revoked or self.clock() >= record.expires_at:
            return None
        return record

    def _revoke(self, records: dict[str, Issued], value: str) -> None:
        with self._lock:
            record = records.get(value)
            if record is not None:
                records[value] = replace(record, revoked=True)

    def save_token(self, record: TokenRecord) -> None:
        with self._lock:
            self._tokens[record.access_token] = record

    def token(self, access_token: str) -> TokenRecord | None:
        """The token's record if it is live (issued here, not expired, not revoked)."""
        return self._live(self._tokens, access_token)

    def revoke(self, access_token: str) -> None:
        self._revoke(self._tokens, access_token)

    def save_refresh_token(self, record: RefreshTokenRecord) -> None:
        with self._lock:
            self._refresh_tokens[record.refresh_token] = record

    def refresh_token(self, refresh_token: str) -> RefreshTokenRecord | None:
        """The refresh token's record if it is live (issued here, not expired, not revoked)."""
        return self._live(self._refresh_tokens, refresh_token)

    def revoke_refresh_token(self, refresh_token: str) -> None:
        self._revoke(self._refresh_tokens, refresh_token)
