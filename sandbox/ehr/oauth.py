"""The sandbox's OAuth2 authorization server for SMART App Launch 2.2, built on Authlib.

Authlib does the OAuth: the authorization-code grant, client authentication, PKCE, token
responses, OpenID Connect id tokens. This module adds what SMART asks of an EHR:

- ``aud`` must be the EHR's FHIR base URL;
- a ``launch`` id minted by the EHR carries patient, encounter and the card's ``appContext``;
  the ``launch`` scope without a launch id is refused; a standalone ``launch/patient`` request
  gets a patient picker;
- PKCE with S256 on every request; ``plain`` and a missing challenge are refused;
- exact redirect URIs: an unregistered one gets an error page, never a redirect;
- one-time codes that expire within a minute (``code_ttl``);
- the token response carries ``patient``, ``encounter``, ``need_patient_banner``,
  ``smart_style_url``, ``fhirContext``, ``appContext`` (and ``tenant`` when set);
- ``online_access`` or ``offline_access`` asked for brings a refresh token (any registered client
  may ask; ``deny_scopes`` can refuse them). Refresh tokens are rotated: each works once, and the
  answer brings the next one with the new access token, for the same grant (scope, patient).

Consent is approved automatically for the one **sandbox user** (``user_id``, ``user_name``):
the simulated clinician who is always logged in to this EHR. No login page. The HTTP endpoints
are ``sandbox.ehr.auth_endpoints``; this module knows nothing of requests or of the EHR's state.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

from authlib.integrations.flask_oauth2 import AuthorizationServer
from authlib.oauth2.rfc6749 import (
    AuthorizationCodeGrant,
    ClientMixin,
    InvalidRequestError,
    InvalidScopeError,
    RefreshTokenGrant,
)
from authlib.oauth2.rfc6750 import BearerTokenGenerator
from authlib.oauth2.rfc7636 import CodeChallenge
from authlib.oidc.core.grants import OpenIDCode

from sandbox.ehr.access import grant_scopes
from sandbox.ehr.keys import SigningKeys
from sandbox.ehr.settings import RegisteredClient, Settings
from sandbox.ehr.store import AuthorizationCodeRecord, LaunchContext, RefreshTokenRecord, Store, TokenRecord

ID_TOKEN_LIFETIME = 300
#: Scopes that ask for a refresh token (SMART 2.2, "Scopes for requesting a refresh token"),
#: granted to any registered client that asks for them.
RENEWAL_SCOPES = ("online_access", "offline_access")
#: How long a refresh token lives. ``online_access`` lasts while the user is logged in to the EHR;
#: the sandbox user always is, so it lasts a working day. ``offline_access`` outlives that.
REFRESH_LIFETIME = {"online_access": 12 * 3600, "offline_access": 30 * 24 * 3600}

# Authlib ships no type information: its base classes are Any to mypy, hence the narrowly scoped
# "misc" ignores on the classes below (subclassing Any) and "import-untyped" on the imports above.


@dataclass(frozen=True)
class SandboxUser:
    """The clinician who is always logged in to the sandbox EHR; they approve every request."""

    reference: str  # e.g. Practitioner/ichis-sandbox-clinician
    name: str


class Client(ClientMixin):
    """A registered client as Authlib asks about it."""

    def __init__(self, registered: RegisteredClient) -> None:
        self.registered = registered
        self.client_id = registered.client_id

    def get_client_id(self) -> str:
        return self.client_id

    def get_default_redirect_uri(self) -> None:
        return None  # SMART requires redirect_uri on every request: no default to fall back to

    def get_allowed_scope(self, scope: str | None) -> str:
        return grant_scopes(scope or "", (*self.registered.scopes, *RENEWAL_SCOPES))

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return redirect_uri in self.registered.redirect_uris  # exact string match, no prefixes

    def check_client_secret(self, client_secret: str) -> bool:
        secret = self.registered.secret
        return secret is not None and secrets.compare_digest(secret.encode(), client_secret.encode())

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        if self.registered.type == "confidential":
            return method == "client_secret_basic"
        return method == "none"

    def check_response_type(self, response_type: str) -> bool:
        return response_type == "code"

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type in ("authorization_code", "refresh_token")


class RequireS256(CodeChallenge):
    """PKCE on every request, S256 only (SMART 2.2: servers "SHALL NOT support the plain method")."""

    SUPPORTED_CODE_CHALLENGE_METHOD = ["S256"]  # noqa: RUF012 - Authlib's own class attribute
    DEFAULT_CODE_CHALLENGE_METHOD = "S256"

    def validate_code_challenge(self, grant: Any, redirect_uri: str) -> None:
        data = grant.request.payload.data
        if not data.get("code_challenge"):
            raise InvalidRequestError("PKCE is required: send code_challenge with code_challenge_method=S256")
        if data.get("code_challenge_method") != "S256":
            raise InvalidRequestError("code_challenge_method must be S256; plain is not supported")
        super().validate_code_challenge(grant, redirect_uri)


class SmartCodeGrant(AuthorizationCodeGrant):
    """The authorization-code grant with its codes in the sandbox's store."""

    # Confidential clients authenticate with HTTP Basic; public clients with PKCE alone.
    TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic", "none"]  # noqa: RUF012 - Authlib's own attribute

    @property
    def issuer(self) -> SmartAuthorizationServer:
        server: SmartAuthorizationServer = self.server
        return server

    def save_authorization_code(self, code: str, oauth_request: Any) -> None:
        data = oauth_request.payload.data
        now = self.issuer.store.clock()
        self.issuer.store.save_code(
            AuthorizationCodeRecord(
                code=code,
                client_id=oauth_request.client.get_client_id(),
                redirect_uri=oauth_request.payload.redirect_uri,
                scope=oauth_request.scope,
                user=oauth_request.user.reference,
                context=oauth_request.smart_context,
                code_challenge=data["code_challenge"],
                code_challenge_method=data["code_challenge_method"],
                nonce=data.get("nonce"),
                auth_time=int(now),
                expires_at=now + self.issuer.settings.code_ttl,
            )
        )

    def query_authorization_code(self, code: str, client: Client) -> AuthorizationCodeRecord | None:
        return self.issuer.store.take_code(code, client.get_client_id())

    def delete_authorization_code(self, authorization_code: AuthorizationCodeRecord) -> None:
        return None  # take_code already spent it: a code is good for one token request only

    def authenticate_user(self, authorization_code: AuthorizationCodeRecord) -> SandboxUser:
        return self.issuer.sandbox_user


class SmartRefreshGrant(RefreshTokenGrant):
    """The refresh-token grant (RFC 6749, 6) over the sandbox's store: one use per refresh token."""

    TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic", "none"]  # noqa: RUF012 - Authlib's own attribute
    # Rotation: the answer brings a new refresh token and the one presented stops working.
    INCLUDE_NEW_REFRESH_TOKEN = True

    @property
    def issuer(self) -> SmartAuthorizationServer:
        server: SmartAuthorizationServer = self.server
        return server

    def authenticate_refresh_token(self, refresh_token: str) -> RefreshTokenRecord | None:
        return self.issuer.store.refresh_token(refresh_token)

    def authenticate_user(self, refresh_token: RefreshTokenRecord) -> SandboxUser:
        return self.issuer.sandbox_user

    def revoke_old_credential(self, refresh_token: RefreshTokenRecord) -> None:
        self.issuer.store.revoke_refresh_token(refresh_token.refresh_token)


class SmartLaunch:
    """SMART's additions to the grant: ``aud``, launch context, granted scopes, context in the token."""

    def __init__(self, issuer: SmartAuthorizationServer) -> None:
        self.issuer = issuer

    def __call__(self, grant: Any) -> None:
        grant.register_hook("after_validate_authorization_request_payload", self.validate_authorization)
        grant.register_hook("after_create_token_response", self.add_launch_context)

    def validate_authorization(self, grant: Any, redirect_uri: str) -> None:
        settings = self.issuer.settings
        oauth_request = grant.request
        data = oauth_request.payload.data
        audience = data.get("aud") or data.get("resource")  # RFC 8707 resource is a synonym
        if not audience:
            raise InvalidRequestError(f"aud is required: the FHIR base URL {settings.fhir_base_url}")
        if audience.rstrip("/") != settings.fhir_base_url:
            raise InvalidRequestError(f"aud must be this EHR's FHIR base URL {settings.fhir_base_url}")
        requested = (oauth_request.payload.scope or "").split()
        if not requested:
            raise InvalidScopeError("scope is required")
        context = self._context(data, requested)
        denied = settings.deny_scopes + context.deny_scopes
        allowed = (*oauth_request.client.registered.scopes, *RENEWAL_SCOPES)
        granted = grant_scopes(" ".join(requested), allowed, denied)
        if not granted:
            raise InvalidScopeError("none of the requested scopes can be granted to this client")
        oauth_request.scope = granted
        oauth_request.smart_context = context

    def _context(self, data: Any, requested: list[str]) -> LaunchContext:
        user = self.issuer.sandbox_user.reference
        launch_id = data.get("launch")
        if launch_id:
            context = self.issuer.store.launch(launch_id)
            if context is None:
                raise InvalidRequestError("the launch id is unknown or has expired; launch the app again")
            return context
        if "launch" in requested:
            raise InvalidRequestError("the launch scope needs the launch parameter the EHR sent the app")
        # Standalone launch: the EHR establishes the context the app asks for.
        patient = data.get("sandbox_patient") if "launch/patient" in requested else None
        return LaunchContext(patient=patient or None, encounter=None, user=user)

    def add_launch_context(self, grant: Any, response: Any) -> None:
        _, token, _ = response
        settings = self.issuer.settings
        context: LaunchContext = grant.request.authorization_code.context
        if context.patient:
            token["patient"] = context.patient
        if context.encounter:
            token["encounter"] = context.encounter
        if context.fhir_context:
            token["fhirContext"] = [dict(item) for item in context.fhir_context]
        token["need_patient_banner"] = settings.need_patient_banner
        token["smart_style_url"] = f"{settings.public_base_url}/smart-style.json"
        if context.app_context is not None:
            token["appContext"] = context.app_context  # CDS Hooks 2.0.1: the card link's appContext
        if context.intent:
            token["intent"] = context.intent
        if settings.tenant:
            token["tenant"] = settings.tenant


class SmartOpenIDCode(OpenIDCode):
    """id tokens (RS256) with SMART's ``fhirUser`` claim, when ``openid`` is granted."""

    def __init__(self, issuer: SmartAuthorizationServer) -> None:
        super().__init__(require_nonce=False)
        self.issuer = issuer

    def exists_nonce(self, nonce: str, oauth_request: Any) -> bool:
        return False  # the sandbox does not track nonces; the app checks the one it sent

    def resolve_client_private_key(self, client: Client) -> Any:
        return self.issuer.keys.id_token

    def get_client_algorithm(self, client: Client) -> str:
        return "RS256"

    def get_encode_header(self, client: Client) -> dict[str, Any]:
        return {"alg": "RS256", "kid": self.issuer.keys.id_token.kid, "typ": "JWT"}

    def get_client_claims(self, client: Client) -> dict[str, Any]:
        now = int(self.issuer.store.clock())
        return {
            "iss": self.issuer.settings.issuer,
            "aud": client.get_client_id(),
            "iat": now,
            "exp": now + ID_TOKEN_LIFETIME,
        }

    def generate_user_info(self, user: SandboxUser, scope: str) -> dict[str, Any]:
        info: dict[str, Any] = {"sub": user.reference, "name": user.name}
        if "fhirUser" in scope.split():
            info["fhirUser"] = f"{self.issuer.settings.fhir_base_url}/{user.reference}"
        return info


class SmartAuthorizationServer(AuthorizationServer):
    """Authlib's Flask authorization server over the sandbox's client registry, store and keys."""

    def __init__(self, settings: Settings, store: Store, keys: SigningKeys, user: SandboxUser) -> None:
        super().__init__()
        self.settings = settings
        self.store = store
        self.keys = keys
        self.sandbox_user = user
        self._clients = {c.client_id: Client(c) for c in settings.clients}
        bearer = BearerTokenGenerator(
            access_token_generator=lambda **_: secrets.token_urlsafe(32),
            refresh_token_generator=lambda **_: secrets.token_urlsafe(32),
            expires_generator=lambda client, grant_type: settings.access_token_ttl,
        )

        def generate(*, scope: str | None = None, include_refresh_token: bool = True, **rest: Any) -> Any:
            # A refresh token only for a grant that holds a renewal scope (Authlib would give one
            # to every client allowed the refresh_token grant).
            renewable = bool(set((scope or "").split()) & set(RENEWAL_SCOPES))
            return bearer(scope=scope, include_refresh_token=include_refresh_token and renewable, **rest)

        self.register_token_generator("default", generate)
        self.register_grant(
            SmartCodeGrant, [RequireS256(required=True), SmartLaunch(self), SmartOpenIDCode(self)]
        )
        self.register_grant(SmartRefreshGrant)

    def query_client(self, client_id: str) -> Client | None:
        return self._clients.get(client_id)

    def save_token(self, token: dict[str, Any], oauth_request: Any) -> None:
        """Keep the access token (and refresh token) with the grant they came from: the code's
        launch context, or the refresh token's, which carries it on."""
        renewed: RefreshTokenRecord | None = getattr(oauth_request, "refresh_token", None)
        if renewed is not None:
            patient, encounter, user, code = renewed.patient, renewed.encounter, renewed.user, renewed.code
        else:
            authorization: AuthorizationCodeRecord = oauth_request.authorization_code
            patient, encounter = authorization.context.patient, authorization.context.encounter
            user, code = authorization.user, authorization.code
        now = self.store.clock()
        scope = token.get("scope", "")
        grant: dict[str, Any] = {
            "client_id": oauth_request.client.get_client_id(),
            "scope": scope,
            "patient": patient,
            "encounter": encounter,
            "user": user,
            "code": code,
        }
        expires_in = int(token["expires_in"])
        self.store.save_token(
            TokenRecord(access_token=token["access_token"], expires_at=now + expires_in, **grant)
        )
        if "refresh_token" in token:
            lifetime = REFRESH_LIFETIME[
                "offline_access" if "offline_access" in scope.split() else "online_access"
            ]
            self.store.save_refresh_token(
                RefreshTokenRecord(refresh_token=token["refresh_token"], expires_at=now + lifetime, **grant)
            )

    def send_signal(self, name: str, *args: Any, **kwargs: Any) -> None:
        return None  # no blinker signals: nothing in the sandbox listens


def smart_configuration(settings: Settings) -> dict[str, Any]:
    """``{fhir}/.well-known/smart-configuration`` (SMART App Launch 2.2, Conformance)."""
    base = settings.public_base_url
    return {
        "issuer": settings.issuer,
        "jwks_uri": settings.jwks_url,
        "authorization_endpoint": f"{base}/auth/authorize",
        "token_endpoint": f"{base}/auth/token",
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "none"],
        "grant_types_supported": ["authorization_code", "refresh_token"],
        "response_types_supported": ["code"],
        "code_challenge_methods_supported": ["S256"],
        "scopes_supported": [
            "openid",
            "fhirUser",
            "launch",
            "launch/patient",
            "launch/encounter",
            "online_access",
            "offline_access",
            "patient/*.rs",
            "user/*.rs",
        ],
        "capabilities": [
            "launch-ehr",
            "launch-standalone",
            "authorize-post",
            "client-public",
            "client-confidential-symmetric",
            "context-ehr-patient",
            "context-ehr-encounter",
            "context-standalone-patient",
            "context-banner",
            "context-style",
            "permission-patient",
            "permission-user",
            "permission-v1",
            "permission-v2",
            "permission-online",
            "permission-offline",
            "sso-openid-connect",
        ],
    }


def openid_configuration(settings: Settings) -> dict[str, Any]:
    """``{issuer}/.well-known/openid-configuration``, where id-token verifiers look for the keys."""
    base = settings.public_base_url
    return {
        "issuer": settings.issuer,
        "authorization_endpoint": f"{base}/auth/authorize",
        "token_endpoint": f"{base}/auth/token",
        "jwks_uri": settings.jwks_url,
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "scopes_supported": ["openid", "fhirUser"],
        "claims_supported": ["iss", "sub", "aud", "exp", "iat", "nonce", "name", "fhirUser"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "none"],
        "code_challenge_methods_supported": ["S256"],
        "grant_types_supported": ["authorization_code", "refresh_token"],
    }
