"""The benchmark's floor app measures real work: a floor that skipped it would flatter the hardware.

``bench/floor_app.py`` is the measuring stick ``bench/hooks.py`` sets our paths against. These
tests hold it to the work it claims: the signature is verified (a forged one is refused), a
recorded jti is refused again, and the card comes from the right Observations with exact values.
"""

from __future__ import annotations

import importlib
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from flask.testing import FlaskClient

BENCH = Path(__file__).resolve().parents[2] / "bench"
KEY = ec.generate_private_key(ec.SECP384R1())


def _token(key: ec.EllipticCurvePrivateKey = KEY, jti: str | None = None, exp: float | None = None) -> str:
    claims = {"iss": "https://ehr.example", "aud": "floor", "exp": exp or time.time() + 60}
    return jwt.encode({**claims, "jti": jti or str(uuid.uuid4())}, key, algorithm="ES384")


def _floor(level: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FlaskClient:
    public = KEY.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    monkeypatch.setenv("FLOOR", level)
    monkeypatch.setenv("FLOOR_PUBLIC_KEY", public.decode())
    monkeypatch.setenv("FLOOR_DB", str(tmp_path / "floor.sqlite3"))
    monkeypatch.syspath_prepend(str(BENCH))
    sys.modules.pop("floor_app", None)
    module = importlib.import_module("floor_app")
    module.app.config["PROPAGATE_EXCEPTIONS"] = False  # a refusal is a 500 here: no service, a stick
    return module.app.test_client()


@pytest.fixture
def hooks() -> Iterator[Any]:
    """The benchmark module, for the request bodies it sends."""
    sys.path.insert(0, str(BENCH))
    try:
        yield importlib.import_module("hooks")
    finally:
        sys.path.remove(str(BENCH))


def _post(client: FlaskClient, body: bytes, token: str, service: str = "ichis-prognosis") -> Any:
    return client.post(f"/cds-services/{service}", data=body, headers={"Authorization": f"Bearer {token}"})


def test_a_token_signed_by_another_key_is_refused_at_every_level(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, hooks: Any
) -> None:
    forged = _token(ec.generate_private_key(ec.SECP384R1()))
    for level in ("es384", "audited", "card"):
        (tmp_path / level).mkdir()
        client = _floor(level, tmp_path / level, monkeypatch)
        assert _post(client, hooks._body("no-card", "http://x"), forged).status_code == 500
        assert _post(client, hooks._body("no-card", "http://x"), _token()).status_code == 200


def test_an_expired_token_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, hooks: Any) -> None:
    client = _floor("es384", tmp_path, monkeypatch)
    assert _post(client, hooks._body("no-card", "http://x"), _token(exp=time.time() - 1)).status_code == 500


def test_the_audited_floor_records_each_jti_once_and_refuses_it_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, hooks: Any
) -> None:
    client = _floor("audited", tmp_path, monkeypatch)
    token = _token(jti="once")
    assert _post(client, hooks._body("no-card", "http://x"), token).status_code == 200
    assert _post(client, hooks._body("no-card", "http://x"), token).status_code == 500


def test_the_card_floor_scores_the_latest_counts_with_exact_values_and_names_their_observations(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, hooks: Any
) -> None:
    client = _floor("card", tmp_path, monkeypatch)
    card = _post(client, hooks._body("prefetch", "http://x"), _token()).get_json()["cards"][0]
    # The bench patient's latest draw: neutrophils 9.8 and IG 0.12 x10^3/uL, both above the cut-offs.
    assert card["summary"] == "IChIS 2 of 2"
    assert "neutrophils: 9800.0 /uL" in card["detail"]
    assert "ig: 120.00 /uL" in card["detail"]
    assert "(Observation/ichis-bench-0-neutrophils)" in card["detail"]
