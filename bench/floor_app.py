"""The least any service can do for each of our paths: what a call costs before our own code.

Served by ``bench/hooks.py`` under gunicorn with the worker model of ``ichis serve`` (gthread, the
same workers and threads), so that its rates are the ceiling ours can reach on this machine. It
skips everything that is not the bare minimum of the path; it is not a service (no errors
explained, no OperationOutcome, no refusal of any odd shape), only a measuring stick.

``FLOOR`` (environment) chooses how much it does, each level adding to the one before:

- ``es384``: read the Bearer JWT and verify its ES384 signature with a key object loaded once (the
  one step CDS Hooks makes every call pay: each call carries its own token), check ``exp``;
  parse the request body (msgspec, exact decimals, at every level); answer no card;
- ``audited``: and what our product promises of every call, however cheap: the token's ``jti``
  recorded once (replay refused) and one audit row, in one durable SQLite transaction (WAL,
  synchronous=NORMAL, as ``ichis serve``), before the answer;
- ``card``: and the card: the body decoded with exact decimals (msgspec, floats as ``Decimal``),
  each prefetched Observation of a wanted code taken only when it is this patient's, final and
  dated, its value converted to /uL, the latest of each count compared with its cut-off, a card
  naming each value's Observation; without a prefetch, the two searches are made in parallel on
  the call's FHIR server (one keep-alive session per thread).
"""

from __future__ import annotations

import base64
import json
import os
import sqlite3
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from decimal import Decimal
from typing import Any

import msgspec
import requests
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from flask import Flask, Response, request

FLOOR = os.environ.get("FLOOR", "es384")


def _public_key() -> ec.EllipticCurvePublicKey:
    key = serialization.load_pem_public_key(os.environ["FLOOR_PUBLIC_KEY"].encode())
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise TypeError("the benchmark signs with an EC key")
    return key


_KEY = _public_key()
_ECDSA = ec.ECDSA(hashes.SHA384())
_DECODE = msgspec.json.Decoder(float_hook=Decimal)
_DB = os.environ.get("FLOOR_DB", "floor.sqlite3")

#: LOINC codes of the two counts, in /uL (10*3/uL for absolute neutrophils, /uL for IG).
_CODES = {"751-8": "neutrophils", "26499-4": "neutrophils", "51584-1": "ig", "53115-2": "ig"}
_FACTORS = {"10*3/uL": Decimal(1000), "/uL": Decimal(1), "10*9/L": Decimal(1000)}
_CUTS = {"neutrophils": Decimal(9000), "ig": Decimal(80)}
_USABLE = ("final", "amended", "corrected")
#: The searches ``ichis serve`` makes without a prefetch (its templates, passed by the benchmark),
#: so that both ask HAPI for the same work.
_QUERIES: list[str] = json.loads(os.environ.get("FLOOR_QUERIES", "[]"))

app = Flask(__name__)
_local = threading.local()
_pool = ThreadPoolExecutor(4)


def _db() -> sqlite3.Connection:
    db: sqlite3.Connection | None = getattr(_local, "db", None)
    if db is None:
        db = sqlite3.connect(_DB, isolation_level=None, timeout=10)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("CREATE TABLE IF NOT EXISTS jti (iss TEXT, jti TEXT, exp REAL, PRIMARY KEY (iss, jti))")
        db.execute("CREATE TABLE IF NOT EXISTS audit (id INTEGER PRIMARY KEY, record TEXT)")
        _local.db = db
    return db


def _session() -> requests.Session:
    session: requests.Session | None = getattr(_local, "session", None)
    if session is None:
        session = _local.session = requests.Session()
    return session


def _b64(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def _claims() -> dict[str, Any]:
    token = request.headers.get("Authorization", "").partition(" ")[2]
    signing_input, _, signature = token.rpartition(".")
    raw = _b64(signature)
    der = encode_dss_signature(int.from_bytes(raw[:48], "big"), int.from_bytes(raw[48:], "big"))
    _KEY.verify(der, signing_input.encode(), _ECDSA)
    claims: dict[str, Any] = json.loads(_b64(signing_input.partition(".")[2]))
    if claims["exp"] < time.time():
        raise PermissionError("expired")
    return claims


def _latest(resources: list[dict[str, Any]], patient: str) -> dict[str, tuple[str, datetime, Decimal]]:
    """Per count, (Observation id, collection time, value in /uL) of the latest usable result."""
    latest: dict[str, tuple[str, datetime, Decimal]] = {}
    for obs in resources:
        if obs.get("resourceType") != "Observation" or obs.get("status") not in _USABLE:
            continue
        if obs.get("subject", {}).get("reference") != patient:
            continue
        concept = next((_CODES[c["code"]] for c in obs["code"]["coding"] if c.get("code") in _CODES), None)
        when, quantity = obs.get("effectiveDateTime"), obs.get("valueQuantity")
        if concept is None or when is None or quantity is None or quantity.get("code") not in _FACTORS:
            continue
        taken = datetime.fromisoformat(when)  # times sent with other offsets compare as instants
        if concept not in latest or taken > latest[concept][1]:
            latest[concept] = (obs["id"], taken, quantity["value"] * _FACTORS[quantity["code"]])
    return latest


def _fetched(fhir: str, patient_id: str) -> list[dict[str, Any]]:
    def get(query: str) -> list[dict[str, Any]]:
        url = f"{fhir}/{query.replace('{{context.patientId}}', patient_id)}"
        bundle = _DECODE.decode(_session().get(url, headers={"Accept": "application/fhir+json"}).content)
        return [entry["resource"] for entry in bundle.get("entry", [])]

    return [r for part in _pool.map(get, _QUERIES) for r in part]


def _card(body: dict[str, Any]) -> dict[str, Any]:
    context = body["context"]
    patient = f"Patient/{context['patientId']}"
    prefetch = body.get("prefetch")
    if prefetch:
        resources = [e["resource"] for key in ("labs", "conditions") for e in prefetch[key].get("entry", [])]
    else:
        resources = _fetched(body["fhirServer"], context["patientId"])
    latest = _latest(resources, patient)
    score = sum(1 for concept, (_, _, value) in latest.items() if value > _CUTS[concept])
    lines = [
        f"{concept}: {value} /uL on {when} (Observation/{ident})"
        for concept, (ident, when, value) in latest.items()
    ]
    return {
        "uuid": str(uuid.uuid4()),
        "summary": f"IChIS {score} of 2",
        "indicator": "info",
        "detail": "\n".join(lines),
        "source": {"label": "floor"},
    }


@app.post("/cds-services/<service>")
def hook(service: str) -> Response:
    claims = _claims()
    # The fastest reader at every level (the stdlib's json takes longer on 40 Observations than
    # msgspec with exact decimals and the whole card together).
    body = _DECODE.decode(request.get_data())
    cards = [_card(body)] if FLOOR == "card" and service == "ichis-prognosis" else []
    answer = json.dumps({"cards": cards}, default=str)
    if FLOOR in ("audited", "card"):
        record = json.dumps({"hookInstance": body["hookInstance"], "jti": claims["jti"], "cards": len(cards)})
        db = _db()
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute("INSERT INTO jti VALUES (?, ?, ?)", (claims["iss"], claims["jti"], claims["exp"]))
            db.execute("INSERT INTO audit (record) VALUES (?)", (record,))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
    return Response(answer, mimetype="application/json")
