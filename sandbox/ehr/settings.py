"""The sandbox EHR's settings: defaults, then ``ICHIS_SANDBOX_*`` environment variables, then a dict,
read by the project's one settings reader (``plumbing.settings``: unknown names stop the start).

Every setting has one name. In the dict given to ``create_ehr_app`` it is written in lower case
(``public_base_url``); in the environment in upper case after the prefix
(``ICHIS_SANDBOX_PUBLIC_BASE_URL``). Lists and the client registry are JSON in the environment.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from plumbing.settings import boolean, integer, not_negative, number, positive, read_values
from sandbox.ehr.errors import SettingsError

ENV_PREFIX = "ICHIS_SANDBOX_"

# The scopes the EHR grants the CDS service for its fhirAuthorization token (CDS Hooks 2.0.1,
# "Passing the Access Token"): read and search of what an IChIS card is computed from.
DEFAULT_CDS_SCOPE = (
    "patient/Patient.rs patient/Observation.rs patient/Condition.rs patient/MedicationRequest.rs"
)

# What the project's SMART app may ask for: EHR launch with context, identity, and patient reads.
DEFAULT_SMART_SCOPES = (
    "launch",
    "launch/patient",
    "launch/encounter",
    "openid",
    "fhirUser",
    "patient/*.rs",
    "user/Practitioner.rs",
)

# A sandbox-only secret known to both sides out of the box; any real deployment sets its own.
DEFAULT_SMART_SECRET = "ichis-smart-sandbox-secret"  # noqa: S105 - a documented sandbox default, not a credential

ClientType = Literal["public", "confidential"]


@dataclass(frozen=True)
class RegisteredClient:
    """A SMART app registered with the sandbox's authorization server."""

    client_id: str
    type: ClientType
    redirect_uris: tuple[str, ...]
    scopes: tuple[str, ...]
    secret: str | None = None
    name: str = ""

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RegisteredClient:
        """Read one registry entry: ``{"client_id", "type", "secret"?, "redirect_uris", "scopes"}``."""
        try:
            client_id = str(data["client_id"])
            kind = data.get("type", "confidential")
            uris = data["redirect_uris"]
            scopes = data.get("scopes", list(DEFAULT_SMART_SCOPES))
        except (KeyError, TypeError) as error:
            raise SettingsError(f"a registered client needs client_id and redirect_uris ({error})") from None
        if kind not in ("public", "confidential"):
            raise SettingsError(f"client {client_id}: type must be 'public' or 'confidential', not {kind!r}")
        if isinstance(scopes, str):
            scopes = scopes.split()
        if not isinstance(uris, list) or not all(isinstance(u, str) and u for u in uris) or not uris:
            raise SettingsError(f"client {client_id}: redirect_uris must be a non-empty list of URLs")
        secret = data.get("secret")
        if kind == "confidential" and not secret:
            raise SettingsError(f"client {client_id}: a confidential client needs a secret")
        if kind == "public" and secret:
            raise SettingsError(f"client {client_id}: a public client has no secret")
        return cls(
            client_id=client_id,
            type=kind,
            redirect_uris=tuple(uris),
            scopes=tuple(str(s) for s in scopes),
            secret=str(secret) if secret else None,
            name=str(data.get("name", client_id)),
        )

    def as_dict(self) -> dict[str, Any]:
        """The registry entry without its secret (what the docs and the page may show)."""
        return {
            "client_id": self.client_id,
            "type": self.type,
            "redirect_uris": list(self.redirect_uris),
            "scopes": list(self.scopes),
            "name": self.name,
        }


@dataclass(frozen=True)
class Settings:
    """Everything the sandbox EHR is configured with; see docs/sandbox.md for each setting."""

    public_base_url: str = "http://127.0.0.1:8070"
    fhir_upstream: str = "http://127.0.0.1:8080/fhir"
    cds_base_url: str = "http://127.0.0.1:8000"
    data_dir: Path = Path("var/sandbox-ehr")
    clients: tuple[RegisteredClient, ...] = ()
    smart_client_secret: str = DEFAULT_SMART_SECRET
    cds_client_id: str = "ichis-cds"
    cds_scope: str = DEFAULT_CDS_SCOPE
    jwt_alg: Literal["ES384", "RS384"] = "ES384"
    jwt_jku: bool = True
    tenant: str | None = None
    user_id: str = "Practitioner/ichis-sandbox-clinician"
    user_name: str = "Sandbox Clinician"
    access_token_ttl: int = 3600
    cds_token_ttl: int = 300
    code_ttl: int = 60
    launch_ttl: int = 3600
    deny_scopes: tuple[str, ...] = ()
    need_patient_banner: bool = True
    revoke_cds_tokens: bool = True
    testing: bool = False
    http_timeout: float = 10.0
    secret_key: str | None = field(default=None, repr=False)

    @property
    def issuer(self) -> str:
        """The EHR's issuer URL: ``iss`` of its CDS Hooks JWTs and of its id tokens."""
        return self.public_base_url

    @property
    def fhir_base_url(self) -> str:
        """The EHR's own FHIR endpoint (the authenticating proxy): ``fhirServer`` and SMART ``iss``."""
        return f"{self.public_base_url}/fhir"

    @property
    def jwks_url(self) -> str:
        return f"{self.public_base_url}/.well-known/jwks.json"

    def client(self, client_id: str) -> RegisteredClient | None:
        return next((c for c in self.clients if c.client_id == client_id), None)


def _default_clients(cds_base_url: str, secret: str) -> list[RegisteredClient]:
    return [
        RegisteredClient(
            client_id="ichis-smart",
            type="confidential",
            secret=secret,
            redirect_uris=(f"{cds_base_url}/smart/callback",),
            scopes=DEFAULT_SMART_SCOPES,
            name="IChIS details (the project's SMART app)",
        )
    ]


def _text(name: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise SettingsError(f"setting {name}: expected a non-empty string")
    return value


def _optional_text(name: str, value: Any) -> str | None:
    return None if value in (None, "") else _text(name, value)


def _url(name: str, value: Any) -> str:
    url = _text(name, value).rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise SettingsError(f"setting {name}: {url!r} is not an http(s) URL")
    return url


def _as_list(name: str, value: Any) -> list[Any]:
    if isinstance(value, str):
        stripped = value.strip()
        if not stripped.startswith("["):
            return stripped.split()
        try:
            value = json.loads(stripped)
        except ValueError:
            raise SettingsError(f"setting {name}: not valid JSON") from None
    if not isinstance(value, (list, tuple)):
        raise SettingsError(f"setting {name}: expected a list")
    return list(value)


def _scopes(name: str, value: Any) -> tuple[str, ...]:
    return tuple(str(s) for s in _as_list(name, value))


def _alg(name: str, value: Any) -> str:
    if value not in ("ES384", "RS384"):
        raise SettingsError(f"setting {name}: ES384 or RS384 (the algorithms CDS Hooks 2.0.1 recommends)")
    return str(value)


_PARSERS: dict[str, Callable[[str, Any], Any]] = {
    "public_base_url": _url,
    "fhir_upstream": _url,
    "cds_base_url": _url,
    "data_dir": lambda name, value: Path(_text(name, str(value))),
    "clients": _as_list,
    "smart_client_secret": _text,
    "cds_client_id": _text,
    "cds_scope": _text,
    "jwt_alg": _alg,
    "jwt_jku": boolean,
    "tenant": _optional_text,
    "user_id": _text,
    "user_name": _text,
    "access_token_ttl": not_negative(integer),
    "cds_token_ttl": not_negative(integer),
    "code_ttl": not_negative(integer),
    "launch_ttl": not_negative(integer),
    "deny_scopes": _scopes,
    "need_patient_banner": boolean,
    "revoke_cds_tokens": boolean,
    "testing": boolean,
    "http_timeout": positive(number),
    "secret_key": _optional_text,
}


def load_settings(
    overrides: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    """Defaults, then the environment, then ``overrides``; unknown names are an error."""
    values = read_values(
        _PARSERS,
        prefix=ENV_PREFIX,
        environ=os.environ if environ is None else environ,
        overrides=overrides,
    )

    if values.get("code_ttl", 60) > 60:
        # SMART App Launch 2.2: codes are short-lived, "usually expiring within around one minute".
        raise SettingsError("setting code_ttl: at most 60 seconds")
    for name in ("access_token_ttl", "cds_token_ttl", "launch_ttl"):
        if values.get(name, 1) < 1:
            raise SettingsError(f"setting {name}: at least one second")
    extra: list[Any] = values.pop("clients", [])
    base = Settings(**values)
    registry = {c.client_id: c for c in _default_clients(base.cds_base_url, base.smart_client_secret)}
    registry_file = base.data_dir / "clients.json"
    if registry_file.is_file():
        try:
            extra = _as_list(str(registry_file), json.loads(registry_file.read_text())) + extra
        except ValueError:
            raise SettingsError(f"{registry_file}: not valid JSON") from None
    for entry in extra:
        if not isinstance(entry, Mapping):
            raise SettingsError("setting clients: each client is a JSON object")
        client = RegisteredClient.from_dict(entry)
        registry[client.client_id] = client
    if base.cds_client_id in registry:
        raise SettingsError(f"client id {base.cds_client_id!r} is reserved for the CDS service")
    return Settings(**{**values, "clients": tuple(registry.values())})
