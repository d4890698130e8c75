"""Benchmark of the CDS service as deployed: ``ichis serve`` under gunicorn, driven over loopback.

    .venv/bin/python bench/hooks.py [--fhir URL] [--workers 2] [--requests 2000]

Starts HAPI (unless --fhir is given) and ``ichis serve`` with JWT authentication on and every call
written to the audit spool (delivery is left to a repository elsewhere: on this 2-core machine
HAPI's indexing of AuditEvents would compete with what is measured), then drives it from
separate processes (a Python load generator with keep-alive connections; every request carries
its own ES384 JWT with a fresh jti, signed before the clock starts). Scenarios:

1. order-select with full prefetch (about 40 Observations), one client at a time;
2. the same with 32 concurrent clients;
3. order-sign for a non-checkpoint order (no card), one client and 32 clients;
4. order-select without prefetch against the local HAPI server, one client; next to it, HAPI's own
   response time for the same three queries made in parallel.

Prints a table of p50, p95, p99 (ms, measured at the client) and throughput, and exits. It is run on
purpose, not by the test suite.
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jwt
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

# A command that reports: it prints its table (ruff T201 is for library code).
# ruff: noqa: T201
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cds_service.declarations import prefetch_templates  # noqa: E402
from fhir_mappings.bundles import dumps  # noqa: E402
from fhir_mappings.config import load_mapping_config  # noqa: E402
from sandbox import demo_data  # noqa: E402
from sandbox.hapi_server import HapiServer, free_port  # noqa: E402

ISS = "https://bench-ehr.example"
KID = "bench-1"
PLACEHOLDER = "00000000-0000-4000-8000-000000000000"


def _jwk(key: ec.EllipticCurvePrivateKey) -> dict[str, Any]:
    public: dict[str, Any] = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
    public.update({"kid": KID, "alg": "ES384", "use": "sig"})
    return public


def _bench_patient(now: datetime) -> list[dict[str, Any]]:
    """A patient with eight blood counts of five results: 40 Observations, as a busy EHR sends."""
    draws = tuple(
        demo_data.Draw(days, demo_data._cbc(neut, ig))
        for days, neut, ig in [
            (1, "9.8", "0.12"), (9, "9.1", "0.10"), (20, "8.8", "0.09"), (35, "8.1", "0.07"),
            (50, "7.7", "0.06"), (65, "7.2", "0.05"), (80, "6.9", "0.04"), (95, "6.5", "0.03"),
        ]
    )  # fmt: skip
    patient = demo_data.DemoPatient(
        "ichis-bench", "Bench", "Patient", "female", "1955-01-01", demo_data.NSCLC, draws, "benchmark"
    )
    return list(demo_data.resources(patient, now))


def _searchset(resources: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "entry": [
            {"fullUrl": f"http://ehr.example/fhir/{r['resourceType']}/{r['id']}", "resource": r}
            for r in resources
        ],
    }


def _body(kind: str, fhir: str) -> bytes:
    now = datetime.now(UTC)
    records = _bench_patient(now)
    pembro = {
        "resourceType": "MedicationRequest", "id": "draft-1", "status": "draft", "intent": "order",
        "medicationCodeableConcept": {"coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm",
                                                  "code": "1657750"}], "text": "Keytruda 200 mg"},
        "subject": {"reference": "Patient/ichis-bench"},
    }  # fmt: skip
    carboplatin = {**pembro, "medicationCodeableConcept": {"text": "carboplatin AUC 5"}}
    context: dict[str, Any] = {
        "userId": "Practitioner/bench",
        "patientId": "ichis-bench",
        "draftOrders": {"resourceType": "Bundle", "type": "collection",
                        "entry": [{"resource": pembro if kind != "no-card" else carboplatin}]},
    }  # fmt: skip
    hook = "order-sign" if kind == "no-card" else "order-select"
    if hook == "order-select":
        context["selections"] = ["MedicationRequest/draft-1"]
    authorization = {"access_token": "bench-token", "token_type": "Bearer", "expires_in": 300,
                     "scope": "patient/*.rs", "subject": "ichis"}  # fmt: skip
    body: dict[str, Any] = {"hook": hook, "hookInstance": PLACEHOLDER, "context": context, "fhirServer": fhir,
                            "fhirAuthorization": authorization}  # fmt: skip
    if kind == "prefetch":
        body["prefetch"] = {
            "patient": records[0],
            "labs": _searchset([r for r in records if r["resourceType"] == "Observation"]),
            "conditions": _searchset([r for r in records if r["resourceType"] == "Condition"]),
        }
    return dumps(body).encode()


def _client(args: tuple[str, int, str, bytes, str, int, int, str]) -> list[float]:
    """One load-generator process: ``threads`` keep-alive connections, ``count`` requests each."""
    host, port, path, body, key_pem, threads, count, audience = args
    private = serialization.load_pem_private_key(key_pem.encode(), password=None)
    if not isinstance(private, ec.EllipticCurvePrivateKey):
        raise TypeError("the benchmark signs with an EC key")
    now = int(time.time())
    tokens = [
        jwt.encode({"iss": ISS, "aud": audience, "iat": now, "exp": now + 3600, "jti": str(uuid.uuid4())},
                   private, algorithm="ES384", headers={"kid": KID, "typ": "JWT"})
        for _ in range(threads * count)
    ]  # fmt: skip
    bodies = [body.replace(PLACEHOLDER.encode(), str(uuid.uuid4()).encode()) for _ in range(threads * count)]

    def run(thread: int) -> list[float]:
        connection = http.client.HTTPConnection(host, port, timeout=30)
        latencies = []
        for i in range(count):
            n = thread * count + i
            started = time.perf_counter()
            connection.request(
                "POST",
                path,
                body=bodies[n],
                headers={"Content-Type": "application/json", "Authorization": f"Bearer {tokens[n]}"},
            )
            response = connection.getresponse()
            response.read()
            latencies.append(time.perf_counter() - started)
            if response.status != 200:
                raise RuntimeError(f"HTTP {response.status}")
        connection.close()
        return latencies

    with ThreadPoolExecutor(threads) as pool:
        return [lat for part in pool.map(run, range(threads)) for lat in part]


def drive(
    base: str, path: str, body: bytes, key_pem: str, *, clients: int, total: int
) -> tuple[list[float], float]:
    """``clients`` concurrent connections over as many processes as cores allow; (latencies, seconds)."""
    host, port = base.split("//")[1].split(":")
    processes = min(clients, 4)
    threads = max(clients // processes, 1)
    per_thread = max(total // (processes * threads), 1)
    work = [(host, int(port), path, body, key_pem, threads, per_thread, base + path)] * processes
    with multiprocessing.get_context("spawn").Pool(processes) as pool:
        warm = [(host, int(port), path, body, key_pem, 1, 20, base + path)] * processes
        pool.map(_client, warm)
        started = time.perf_counter()
        results = pool.map(_client, work)
        elapsed = time.perf_counter() - started
    return [lat for part in results for lat in part], elapsed


def _percentiles(latencies: list[float]) -> tuple[float, float, float]:
    cuts = statistics.quantiles(latencies, n=100, method="inclusive")
    return cuts[49] * 1000, cuts[94] * 1000, cuts[98] * 1000


def _hapi_time(fhir: str, queries: list[str], rounds: int = 200) -> tuple[float, float]:
    """HAPI's own response time for the three queries made in parallel: (p50, p99) in ms."""
    session = requests.Session()
    with ThreadPoolExecutor(3) as pool:
        times = []
        for _ in range(rounds):
            started = time.perf_counter()
            list(
                pool.map(
                    lambda q: session.get(f"{fhir}/{q}", headers={"Accept": "application/fhir+json"}).content,
                    queries,
                )
            )
            times.append(time.perf_counter() - started)
    p50, _, p99 = _percentiles(times)
    return p50, p99


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fhir", help="a running FHIR server (default: start HAPI)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--requests", type=int, default=2000, help="requests per sequential scenario")
    parser.add_argument("--concurrent-requests", type=int, default=8000)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="ichis-bench-"))
    hapi = None
    fhir = args.fhir
    if not fhir:
        hapi = HapiServer(free_port(), work / "hapi")
        fhir = hapi.start(timeout=600)
    fhir = fhir.rstrip("/")
    requests.post(fhir, data=dumps({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": r, "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"}}
        for r in _bench_patient(datetime.now(UTC))]}), headers={"Content-Type": "application/fhir+json"},
        timeout=120).raise_for_status()  # fmt: skip
    key = ec.generate_private_key(ec.SECP384R1())
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "ICHIS_PORT": str(port), "ICHIS_WORKERS": str(args.workers), "ICHIS_DATA_DIR": str(work / "service"),
        # Records are spooled on every call, as in production; delivering them to the same 2-core
        # machine's HAPI would measure HAPI's indexing, so the audit repository is left unset.
        "ICHIS_PUBLIC_BASE_URL": base, "ICHIS_ALLOW_HTTP_FHIR": "true", "ICHIS_AUDIT_FHIR_URL": "",
        "ICHIS_TRUSTED_ISSUERS": json.dumps([{"iss": ISS, "jwks": {"keys": [_jwk(key)]}}]),
        "ICHIS_LOG_LEVEL": "WARNING",
    }  # fmt: skip
    server = subprocess.Popen(
        [sys.executable, "-m", "ichis_cli", "serve"], env=env, cwd=ROOT, stderr=subprocess.DEVNULL
    )
    try:
        for _ in range(200):
            try:
                if requests.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except requests.ConnectionError:
                time.sleep(0.1)
        rows: list[tuple[str, int, float, float, float, float, str]] = []
        path_select, path_sign = "/cds-services/ichis-prognosis", "/cds-services/ichis-prognosis-sign"
        scenarios: list[tuple[str, str, bytes, int, int, str]] = [
            ("order-select, full prefetch", path_select, _body("prefetch", fhir), 1, args.requests,
             "p50 <= 2 ms, p99 <= 5 ms"),
            ("order-select, full prefetch", path_select, _body("prefetch", fhir), 32,
             args.concurrent_requests, ">= 2,000 req/s, p99 < 40 ms"),
            ("order-sign, non-checkpoint (no card)", path_sign, _body("no-card", fhir), 1, args.requests, ""),
            ("order-sign, non-checkpoint (no card)", path_sign, _body("no-card", fhir), 32,
             args.concurrent_requests, ""),
            ("order-select, no prefetch (HAPI)", path_select, _body("fetch", fhir), 1, args.requests // 4,
             "<= HAPI + 10 ms"),
        ]  # fmt: skip
        for name, path, body, clients, total, target in scenarios:
            latencies, elapsed = drive(base, path, body, key_pem, clients=clients, total=total)
            p50, p95, p99 = _percentiles(latencies)
            rows.append((name, clients, p50, p95, p99, len(latencies) / elapsed, target))
        templates = prefetch_templates(load_mapping_config(), 100)
        queries = [t.replace("{{context.patientId}}", "ichis-bench") for t in templates.values()]
        hapi_p50, hapi_p99 = _hapi_time(fhir, queries)
    finally:
        server.terminate()
        server.wait(timeout=30)
        if hapi is not None:
            hapi.stop()
    print(
        f"\nichis serve, {args.workers} workers, {os.cpu_count()} cores, load generator on the same machine\n"
    )
    print(f"{'scenario':40} {'clients':>7} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'req/s':>8}  target")
    for name, clients, p50, p95, p99, rate, target in rows:
        print(f"{name:40} {clients:>7} {p50:>8.2f} {p95:>8.2f} {p99:>8.2f} {rate:>8.0f}  {target}")
    print(f"{'HAPI alone, the 3 queries in parallel':40} {1:>7} {hapi_p50:>8.2f} {'':>8} {hapi_p99:>8.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
