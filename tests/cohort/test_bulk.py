"""Bulk Data $export: Retry-After, SMART Backend Services assertions, and a real export from HAPI FHIR."""

from __future__ import annotations

import io
import json
import time
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import jwt
import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from cohort.bulk import ASSERTION_TYPE, BackendAuth, BulkClient, client_assertion, retry_after
from cohort.definition import load_definition
from cohort.engines import DuckDBEngine
from cohort.errors import CohortConfigError, CohortServerError
from cohort.extract import extract_rows
from cohort.sources import discover
from cohort.synth import SynthOptions, write_cohort
from fhir_mappings.bundles import loads

NOW = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)
TOKEN_URL = "https://auth.example.org/token"  # noqa: S105 - a URL, not a secret


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        (None, 2.0),
        ("5", 5.0),
        ("0", 0.5),  # never a busy loop
        ("86400", 120.0),  # bounded: poll again within two minutes
        ("Fri, 01 Mar 2024 12:00:30 GMT", 30.0),
        ("soon", 2.0),
    ],
)
def test_retry_after_is_honoured_in_seconds_or_as_a_date(header: str | None, seconds: float) -> None:
    """Retry-After in delta-seconds or an HTTP date sets the wait, within sane bounds."""
    assert seconds == retry_after(header, NOW)


def pem(key: Any) -> bytes:
    return bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )


@pytest.mark.parametrize(
    ("algorithm", "key"),
    [("RS384", rsa.generate_private_key(65537, 2048)), ("ES384", ec.generate_private_key(ec.SECP384R1()))],
    ids=["RS384", "ES384"],
)
def test_the_client_assertion_is_what_backend_services_asks_for(algorithm: str, key: Any) -> None:
    """iss = sub = client id, aud = token URL, exp five minutes on, a jti, and the kid in the header."""
    auth = BackendAuth("ichis-cohort", pem(key), "key-1", algorithm=algorithm)
    token = client_assertion(auth, TOKEN_URL, NOW, jti="abc")
    claims = jwt.decode(
        token, key.public_key(), algorithms=[algorithm], audience=TOKEN_URL, options={"verify_exp": False}
    )
    expected = {
        "iss": "ichis-cohort",
        "sub": "ichis-cohort",
        "aud": TOKEN_URL,
        "jti": "abc",
        "exp_minus_iat": 300,
    }
    actual = {k: claims[k] for k in ("iss", "sub", "aud", "jti")} | {
        "exp_minus_iat": claims["exp"] - claims["iat"]
    }
    assert expected == actual
    assert {"alg": algorithm, "kid": "key-1", "typ": "JWT"} == jwt.get_unverified_header(token)


def test_a_key_that_is_not_a_private_key_is_a_configuration_error() -> None:
    """A wrong --private-key file gives a one-line configuration error, not a crypto traceback."""
    with pytest.raises(CohortConfigError):
        client_assertion(BackendAuth("c", b"not a key", "k"), TOKEN_URL, NOW)


class TokenEndpoint(requests.adapters.BaseAdapter):
    """An OAuth token endpoint in-process: checks the assertion with the client's public key."""

    def __init__(self, public_key: Any) -> None:
        super().__init__()
        self.public_key = public_key
        self.forms: list[dict[str, str]] = []

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        form = dict(part.split("=", 1) for part in str(request.body).split("&"))
        self.forms.append(form)
        jwt.decode(
            requests.utils.unquote(form["client_assertion"]),
            self.public_key,
            algorithms=["RS384"],
            audience=TOKEN_URL,
        )
        response = requests.Response()
        response.status_code = 200
        response._content = json.dumps(
            {"access_token": "t-1", "token_type": "bearer", "expires_in": 300}
        ).encode()
        response.url = str(request.url)
        return response

    def close(self) -> None:
        pass


def test_the_access_token_is_fetched_once_and_reused() -> None:
    """client_credentials with a JWT assertion; the token is cached until shortly before it expires."""
    key = rsa.generate_private_key(65537, 2048)
    endpoint = TokenEndpoint(key.public_key())
    session = requests.Session()
    session.mount("https://auth.example.org", endpoint)
    client = BulkClient(
        "https://fhir.example.org/r4", BackendAuth("c", pem(key), "k", token_url=TOKEN_URL), session
    )
    assert (client.access_token(), client.access_token()) == ("t-1", "t-1")
    (form,) = endpoint.forms
    assert ("client_credentials", requests.utils.unquote(ASSERTION_TYPE)) == (
        form["grant_type"],
        requests.utils.unquote(form["client_assertion_type"]),
    )


def _strip_specimens(folder: Path) -> None:
    """HAPI enforces referential integrity; the synthetic Specimen references point nowhere."""
    for path in folder.glob("Observation.*.ndjson"):
        lines = []
        for line in path.read_text(encoding="utf-8").splitlines():
            resource = json.loads(line)
            resource.pop("specimen", None)
            lines.append(json.dumps(resource))
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _upload(base: str, folder: Path) -> None:
    order = [
        "Patient",
        "Medication",
        "Condition",
        "MedicationRequest",
        "MedicationAdministration",
        "Observation",
    ]
    entries = []
    for kind in order:
        for path in sorted(folder.glob(f"{kind}.*.ndjson")):
            for line in path.read_text(encoding="utf-8").splitlines():
                resource = loads(line)
                entries.append(
                    {"resource": resource, "request": {"method": "PUT", "url": f"{kind}/{resource['id']}"}}
                )
    for start in range(0, len(entries), 400):
        bundle = {"resourceType": "Bundle", "type": "transaction", "entry": entries[start : start + 400]}
        body = json.dumps(bundle, default=float)
        response = requests.post(
            base, data=body, headers={"Content-Type": "application/fhir+json"}, timeout=300
        )
        assert response.status_code == 200, response.text[:500]


@pytest.mark.integration
def test_export_from_hapi_gives_the_same_table_as_the_ndjson_folder(hapi_url: str, tmp_path: Path) -> None:
    """Kick-off, polling, download and clean-up against the real HAPI FHIR server; the table is identical."""
    folder = tmp_path / "synthetic"
    write_cohort(
        folder,
        25,
        seed=5,
        cutoff=load_definition({}, date(2023, 8, 31)).cutoff,
        options=SynthOptions(labs_per_cycle=False),
    )
    _strip_specimens(folder)
    _upload(hapi_url, folder)
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        # Record what the server asked for, but do not wait minutes in a test.
        waits.append(seconds)
        time.sleep(min(seconds, 1.0))

    client = BulkClient(hapi_url, sleep=sleep, max_wait=600)
    exported = client.export(tmp_path / "export")
    assert {p.name.split(".")[0] for p in exported} >= {"Patient", "Observation", "MedicationAdministration"}
    definition = load_definition({}, date(2023, 8, 31))
    with DuckDBEngine() as engine:
        local = list(extract_rows(engine, discover([folder]), definition))
    with DuckDBEngine() as engine:
        ours = {r["patient_id"] for r in local}
        remote = [
            r
            for r in extract_rows(engine, discover([tmp_path / "export"]), definition)
            if r["patient_id"] in ours
        ]
    assert local == remote
    assert all(0.5 <= w <= 120 for w in waits)


class ManifestServer(requests.adapters.BaseAdapter):
    """A Bulk Data server that answers one manifest and serves files, in-process.

    HAPI writes well-formed manifests; a misbehaving server cannot be run here, so this adapter stands
    in for one. It records every request with its Authorization header.
    """

    def __init__(self, manifest: dict[str, Any]) -> None:
        super().__init__()
        self.manifest = manifest
        self.seen: list[tuple[str, str | None]] = []

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        self.seen.append((str(request.url), request.headers.get("Authorization")))
        response = requests.Response()
        response.status_code = 200
        response.url = str(request.url)
        response.raw = io.BytesIO(b'{"resourceType":"Patient","id":"p"}\n')
        if str(request.url).endswith("/status"):
            response.raw = io.BytesIO(json.dumps(self.manifest).encode())
        return response

    def close(self) -> None:
        pass


def manifest_client(manifest: dict[str, Any]) -> tuple[BulkClient, ManifestServer]:
    key = rsa.generate_private_key(65537, 2048)
    server = ManifestServer(manifest)
    session = requests.Session()
    session.mount("https://auth.example.org", TokenEndpoint(key.public_key()))
    session.mount("https://fhir.example.org", server)
    session.mount("https://elsewhere.example.net", server)
    auth = BackendAuth("c", pem(key), "k", token_url=TOKEN_URL)
    return BulkClient("https://fhir.example.org/r4", auth, session), server


@pytest.mark.parametrize("kind", ["../../outside", "Patient/../x", "", "patient.ndjson"])
def test_a_manifest_type_that_is_not_a_resource_type_never_names_a_file(kind: str, tmp_path: Path) -> None:
    client, _ = manifest_client({})
    manifest = {"output": [{"type": kind, "url": "https://fhir.example.org/r4/files/1"}]}
    with pytest.raises(CohortServerError, match=r"no resource type|lacks type"):
        client.download(manifest, tmp_path / "export")
    assert list(tmp_path.rglob("*.ndjson")) == []


def test_the_access_token_is_never_sent_to_another_server(tmp_path: Path) -> None:
    """A file on another host with requiresAccessToken is refused before any request reaches it."""
    manifest = {
        "requiresAccessToken": True,
        "output": [{"type": "Patient", "url": "https://elsewhere.example.net/files/1"}],
    }
    client, server = manifest_client(manifest)
    with pytest.raises(CohortServerError, match="not sending the access token to another server"):
        client.download(manifest, tmp_path / "export")
    assert server.seen == []


def test_files_on_the_fhir_server_are_fetched_with_the_token_and_errors_kept_as_json(tmp_path: Path) -> None:
    errors = [{"type": "OperationOutcome", "url": "https://fhir.example.org/r4/files/err"}]
    manifest = {
        "requiresAccessToken": True,
        "output": [{"type": "Patient", "url": "https://fhir.example.org/r4/files/1"}],
        "error": errors,
    }
    client, server = manifest_client(manifest)
    (path,) = client.download(manifest, tmp_path / "export")
    assert path.name == "Patient.000.ndjson"
    assert server.seen == [("https://fhir.example.org/r4/files/1", "Bearer t-1")]
    assert json.loads((tmp_path / "export" / "export-errors.json").read_text(encoding="utf-8")) == errors


@pytest.mark.parametrize(
    "url",
    [
        "https://elsewhere.example.net\\@fhir.example.org/r4/files/1",  # urllib3 sends this to elsewhere
        "https://user:secret@fhir.example.org/r4/files/1",
        "http://fhir.example.org/r4/files/1",  # same host, another scheme
        "https://fhir.example.org:8443/r4/files/1",
    ],
)
def test_a_file_url_that_only_looks_like_the_fhir_server_gets_no_token(url: str, tmp_path: Path) -> None:
    manifest = {"requiresAccessToken": True, "output": [{"type": "Patient", "url": url}]}
    client, server = manifest_client(manifest)
    with pytest.raises(CohortServerError, match="not sending the access token"):
        client.download(manifest, tmp_path / "export")
    assert server.seen == []
