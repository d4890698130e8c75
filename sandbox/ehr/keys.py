"""The EHR's signing keys: generated at first start, kept in the data dir, published as a JWK Set.

One EC P-384 key signs CDS Hooks client JWTs with ES384 (the default); one RSA key signs them
with RS384 when the ``jwt_alg`` setting asks for it; a second RSA key signs OpenID Connect id
tokens with RS256 (SMART App Launch 2.2 requires RS256 for ``sso-openid-connect``). Each JWK
names its ``alg``: verifiers such as PyJWT bind an RSA JWK without one to RS256 and then refuse
RS384, so one key per algorithm is what every service can verify.
"""

from __future__ import annotations

import functools
import json
import os
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from joserfc import jwt
from joserfc.jwk import ECKey, Key, RSAKey, import_key

from sandbox.ehr.errors import SettingsError

CLIENT_JWT_LIFETIME = 300  # seconds; CDS Hooks 2.0.1 leaves it open, five minutes is the usual choice


def _write_private(path: Path, data: dict[str, Any]) -> None:
    """Write a private key readable by its owner only, atomically (two starts may race)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(data, handle)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


@functools.lru_cache(maxsize=32)
def _read_key(path: Path, modified_ns: int) -> Key:
    # Cached by file and modification time: importing an RSA private key validates it (tens of
    # milliseconds), which every app built on the same data dir would otherwise pay again.
    try:
        key: Key = import_key(json.loads(path.read_text()))
    except (ValueError, KeyError) as error:
        raise SettingsError(f"{path}: not a private JWK ({type(error).__name__})") from None
    return key


def _load_or_create(path: Path, create: Callable[[], Key]) -> Key:
    if path.is_file():
        stored: Key = _read_key(path, path.stat().st_mtime_ns)
        return stored
    key = create()
    key.ensure_kid()
    _write_private(path, key.as_dict(private=True))
    return key


class SigningKeys:
    """The EC and RSA private keys of one sandbox EHR, and what they sign."""

    def __init__(self, data_dir: Path) -> None:
        keys_dir = data_dir / "keys"
        self.ec = _load_or_create(
            keys_dir / "ec-p384.jwk.json",
            lambda: ECKey.generate_key("P-384", {"use": "sig", "alg": "ES384"}),
        )
        self.rsa = _load_or_create(
            keys_dir / "rsa-rs384.jwk.json",
            lambda: RSAKey.generate_key(2048, {"use": "sig", "alg": "RS384"}),
        )
        self.id_token = _load_or_create(
            keys_dir / "rsa-rs256.jwk.json",
            lambda: RSAKey.generate_key(2048, {"use": "sig", "alg": "RS256"}),
        )

    def key_for(self, alg: str) -> Key:
        return self.ec if alg == "ES384" else self.rsa

    def jwks(self) -> dict[str, Any]:
        """The public JWK Set (RFC 7517) served at ``/.well-known/jwks.json``."""
        return {"keys": [key.as_dict(private=False) for key in (self.ec, self.rsa, self.id_token)]}

    def sign(self, claims: dict[str, Any], alg: str, extra_header: dict[str, Any] | None = None) -> str:
        key = self.key_for(alg)
        header = {"alg": alg, "typ": "JWT", "kid": key.kid, **(extra_header or {})}
        return jwt.encode(header, claims, key, algorithms=[alg])

    def client_jwt(
        self,
        *,
        issuer: str,
        audience: str,
        alg: str,
        jku: str | None,
        tenant: str | None,
        now: float | None = None,
    ) -> str:
        """A CDS Hooks 2.0.1 client JWT ("Trusting CDS Clients") for one call to ``audience``."""
        issued = int(time.time() if now is None else now)
        claims: dict[str, Any] = {
            "iss": issuer,
            "aud": audience,
            "exp": issued + CLIENT_JWT_LIFETIME,
            "iat": issued,
            "jti": str(uuid.uuid4()),
        }
        if tenant:
            claims["tenant"] = tenant
        return self.sign(claims, alg, {"jku": jku} if jku else None)
