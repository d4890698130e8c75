"""Benchmark of the CDS service beside the reference CDS Hooks services and a bare Flask app.

    .venv/bin/python bench/hooks.py [--seconds 10] [--repeat 3] [--soak 600] [--workers 2]

Everything is started here, on this machine, and driven over loopback by ``wrk`` (Debian package
``wrk``; C, so the load generator takes as little of the shared cores as possible):

- **the reference**: the CDS Hooks sandbox's own services (``cds-hooks/sandbox-cds-services``,
  Node and Express), cloned into a temporary folder from ``--reference-git`` and installed with
  ``npm ci``; never committed. Its ``patient-greeting`` service is called with a prefetched
  Patient, as the issue's baseline;
- **bare Flask**: a Flask app under gunicorn (2 sync workers) that parses the body and returns a
  fixed card: what the web stack costs before any work;
- **the floors** (``bench/floor_app.py``): the least any service does on our paths, under gunicorn
  with the worker model of ``ichis serve``: verifying the ES384 JWT; then also recording its
  ``jti`` and one audit row in one durable SQLite transaction; then also a card from the
  prefetch with exact decimals (and, without a prefetch, the same searches on HAPI). They say
  which goals the hardware and the protocol allow, and how far ours is from each;
- **ours**: ``ichis serve`` with ES384 client authentication on (every request carries its own
  JWT with a fresh ``jti``, signed before the clock starts) and every call written to the audit
  spool (delivery left to a repository elsewhere: HAPI's indexing would compete for the cores).

Scenarios for ours: order-sign for a non-checkpoint order (the no-card path, which carries a
hospital's whole ordering load), order-select with full prefetch (about 40 Observations), and
order-select without prefetch against HAPI next to HAPI's own time for the same queries (HAPI
warmed first, then timed right before and right after ours).
Each contender runs ``--repeat`` times for ``--seconds`` at 32 connections (req/s, min-max),
then at one connection (p50 and p99). ``--soak`` runs that long at 32 connections, a minute
at a time, the no-card path and a card whose prefetch has what hospital feeds send among good
results (a unit nobody knows, a preliminary result, another patient's, one without a collection
time), and prints the service's resident memory after each minute.

Prints the machine's core count, every raw figure, the ratios to the reference, and each of our
paths as a share of its floor. Run on purpose, not by the test suite.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jwt
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

# A command that reports (T201 is for library code) and starts the tools it measures with fixed
# arguments: wrk, git, npm, node, gunicorn (S603/S607 are for untrusted input).
# ruff: noqa: T201, S603, S607
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# The checkout's packages import only once ROOT is on the path (E402).
from cds_service.declarations import prefetch_templates  # noqa: E402
from fhir_mappings.bundles import dumps  # noqa: E402
from fhir_mappings.config import load_mapping_config  # noqa: E402
from sandbox import demo_data  # noqa: E402
from sandbox.hapi_server import HapiServer, free_port  # noqa: E402

ISS = "https://bench-ehr.example"
KID = "bench-1"
#: Replaced in each request by the load generator: every call is its own hookInstance.
PLACEHOLDER = "00000000-0000-4000-8000-000000000000"
REFERENCE_GIT = os.environ.get(
    "ICHIS_BENCH_REFERENCE_GIT", "https://github.com/cds-hooks/sandbox-cds-services.git"
)
CLIENTS = 32
FHIR_JSON = {"Accept": "application/fhir+json"}

#: The wrk script: each thread walks its own share of a file of JWTs and gives every request a
#: hookInstance of its own. Without a token file it sends the body as it is (no authentication).
WRK_SCRIPT = r"""
local counter = 0
local threads = {}
function setup(thread)
  thread:set("tid", counter)
  counter = counter + 1
  table.insert(threads, thread)
end
local tokens, body, path, idx, step, n = {}, nil, nil, 0, 1, 0
function init(args)
  path, step = args[1], tonumber(args[3])
  local f = io.open(args[2], "rb"); body = f:read("*a"); f:close()
  if args[4] then
    for line in io.lines(args[4]) do tokens[#tokens + 1] = line end
  end
  idx = tonumber(tid)
end
function request()
  n = n + 1
  local instance = string.format("%08x-0000-4000-8000-%012x", tonumber(tid), n)
  local payload = body:gsub("00000000%-0000%-4000%-8000%-000000000000", instance, 1)
  local headers = {["Content-Type"] = "application/json"}
  if #tokens > 0 then
    local token = tokens[idx + 1]
    if token == nil then
      wrk.thread:stop()
      token = tokens[1]
    end
    idx = idx + step
    headers["Authorization"] = "Bearer " .. token
  end
  return wrk.format("POST", path, headers, payload)
end
"""


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
    """A request as an EHR sends it; every kind carries the full prefetch except ``fetch``."""
    records = _bench_patient(datetime.now(UTC))
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
    if kind != "fetch":
        body["prefetch"] = {
            "labs": _searchset([r for r in records if r["resourceType"] == "Observation"]),
            "conditions": _searchset([r for r in records if r["resourceType"] == "Condition"]),
        }
    return dumps(body).encode()


def _nth_replaced(text: str, old: str, new: str, n: int) -> str:
    """``text`` with the ``n``-th occurrence (from 1; negative counts from the end) replaced."""
    starts = [m.start() for m in re.finditer(re.escape(old), text)]
    at = starts[n - 1 if n > 0 else n]
    return text[:at] + new + text[at + len(old) :]


def _feed_shaped(body: bytes) -> bytes:
    """A card request with the shapes hospital feeds send among good results: a result in a unit
    nobody knows, a preliminary one, another patient's, one without a collection time. Each is
    refused with a reason (on the card when it falls in the look-back window), so the soak also
    runs the paths that explain refusals."""
    text = body.decode()
    text = _nth_replaced(text, '"unit":"10*3/uL"', '"unit":"furlongs"', -1)
    text = _nth_replaced(text, '"code":"10*3/uL"', '"code":"furlongs"', -1)
    text = _nth_replaced(text, '"status":"final"', '"status":"preliminary"', 20)
    text = _nth_replaced(text, '"reference":"Patient/ichis-bench"', '"reference":"Patient/someone-else"', 30)
    text = _nth_replaced(text, '"effectiveDateTime"', '"effectiveTiming"', 35)
    return text.encode()


def _greeting_body() -> bytes:
    """The reference's patient-greeting request, with its Patient prefetched."""
    patient = next(r for r in _bench_patient(datetime.now(UTC)) if r["resourceType"] == "Patient")
    body = {
        "hook": "patient-view",
        "hookInstance": PLACEHOLDER,
        "context": {"userId": "Practitioner/bench", "patientId": "ichis-bench"},
        "prefetch": {"patient": patient},
    }
    return json.dumps(body).encode()


def _sign(args: tuple[str, str, int]) -> list[str]:
    key_pem, audience, count = args
    key = serialization.load_pem_private_key(key_pem.encode(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise TypeError("the benchmark signs with an EC key")
    now = int(time.time())
    claims = {"iss": ISS, "aud": audience, "iat": now, "exp": now + 300}
    return [
        jwt.encode({**claims, "jti": str(uuid.uuid4())}, key, algorithm="ES384", headers={"kid": KID})
        for _ in range(count)
    ]


def write_tokens(path: Path, key_pem: str, audience: str, count: int) -> Path:
    """``count`` fresh ES384 JWTs for ``audience``, one per line, signed on every core."""
    cores = os.cpu_count() or 1
    share = -(-count // cores)
    with multiprocessing.get_context("spawn").Pool(cores) as pool:
        parts = pool.map(_sign, [(key_pem, audience, share)] * cores)
    path.write_text("\n".join(token for part in parts for token in part) + "\n")
    return path


@dataclass
class Run:
    rate: float
    p50_ms: float | None
    p99_ms: float | None
    errors: int


def _ms(text: str) -> float | None:
    """A wrk duration (``812.00us``, ``1.20ms``, ``2.01s``) in milliseconds."""
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if match is None:
        return None
    return float(match[1]) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[match[2]]


@dataclass(frozen=True)
class Target:
    """One endpoint of one contender, driven by wrk with one request body."""

    url: str
    path: str
    body: Path
    work: Path

    def run(self, seconds: float, clients: int = CLIENTS, tokens: Path | None = None) -> Run:
        """One wrk run; with ``tokens``, each request takes the next unused JWT of the file."""
        script = self.work / "bench.lua"
        if not script.exists():
            script.write_text(WRK_SCRIPT)
        threads = min(clients, 2)
        args = [self.path, str(self.body), str(threads)] + ([str(tokens)] if tokens else [])
        out = subprocess.run(
            ["wrk", "-t", str(threads), "-c", str(clients), "-d", f"{max(round(seconds), 1)}s", "--latency",
             "-s", str(script), self.url, "--", *args],
            capture_output=True, text=True, check=True, timeout=seconds + 60,
        ).stdout  # fmt: skip
        rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
        p50 = re.search(r"^\s+50%\s+(\S+)", out, re.M)
        p99 = re.search(r"^\s+99%\s+(\S+)", out, re.M)
        errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
        if socket_errors := re.search(r"Socket errors: .*", out):
            print(f"    ({socket_errors[0]})")
        return Run(
            float(rate[1]) if rate else 0.0,
            _ms(p50[1]) if p50 else None,
            _ms(p99[1]) if p99 else None,
            int(errors[1]) if errors else 0,
        )

    def measure(
        self, seconds: float, repeat: int, tokens: Path | None = None, per_run: int = 0
    ) -> tuple[list[Run], Run]:
        """A warm-up, ``repeat`` runs at 32 connections, then one at one connection. With tokens,
        each run starts past the slice the run before it may have used: no token is reused."""
        self.run(3, tokens=tokens)
        runs = []
        for _ in range(repeat):
            runs.append(self.run(seconds, tokens=_rest(tokens, per_run) if tokens else None))
        single = self.run(seconds, clients=1, tokens=_rest(tokens, per_run) if tokens else None)
        return runs, single


def _wait(url: str, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            requests.get(url, timeout=1)
            return
        except requests.ConnectionError:
            time.sleep(0.1)
    raise RuntimeError(f"{what} did not start")


@contextmanager
def process(
    command: list[str], cwd: Path, env: dict[str, str], url: str, what: str, *, logs: Path
) -> Iterator[int]:
    log = (logs / f"{what}.log").open("wb")
    proc = subprocess.Popen(command, cwd=cwd, env=env, stdout=log, stderr=log)
    try:
        _wait(url, what)
        yield proc.pid
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def reference_checkout(work: Path) -> Path:
    """The reference services, cloned and installed in ``work`` (never in this repository)."""
    target = work / "sandbox-cds-services"
    subprocess.run(["git", "clone", "-q", REFERENCE_GIT, str(target)], check=True)
    lock = target / "package-lock.json"
    locked = json.loads(lock.read_text())
    # The lock file names npm's "fs" security placeholder, which the registry no longer serves;
    # Node's own fs module is what the code loads.
    for name, package in list(locked.get("packages", {}).items()):
        if name.endswith("node_modules/fs"):
            del locked["packages"][name]
        else:
            package.get("dependencies", {}).pop("fs", None)
    for name, package in list(locked.get("dependencies", {}).items()):
        if name == "fs":
            del locked["dependencies"][name]
        else:
            package.get("requires", {}).pop("fs", None)
    lock.write_text(json.dumps(locked))
    subprocess.run(
        ["npm", "ci", "--omit=dev", "--no-audit", "--no-fund", "--loglevel=error"],
        cwd=target,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return target


FLASK_BASELINE = """
import json
from flask import Flask, Response, request

app = Flask(__name__)
CARD = json.dumps({"cards": [{"uuid": "0", "summary": "fixed", "indicator": "info",
                              "source": {"label": "baseline"}}]})


@app.post("/cds-services/<service>")
def hook(service):
    json.loads(request.get_data())
    return Response(CARD, mimetype="application/json")
"""


def rss_kib(pid: int) -> int:
    """Resident memory of a process and its children (gunicorn's master and workers), KiB."""
    total = 0
    pids = [pid]
    children = Path(f"/proc/{pid}/task/{pid}/children")
    if children.exists():
        pids += [int(child) for child in children.read_text().split()]
    for one in pids:
        status = Path(f"/proc/{one}/status")
        if status.exists():
            match = re.search(r"VmRSS:\s+(\d+)", status.read_text())
            total += int(match[1]) if match else 0
    return total


def hapi_time(fhir: str, queries: list[str], rounds: int = 200) -> tuple[float, float]:
    """HAPI's own response time for the queries made in parallel: (p50, p99) in ms."""
    session = requests.Session()
    times = []
    with ThreadPoolExecutor(len(queries)) as pool:
        for _ in range(rounds):
            started = time.perf_counter()
            list(
                pool.map(
                    lambda q: session.get(f"{fhir}/{q}", headers={"Accept": "application/fhir+json"}).content,
                    queries,
                )
            )
            times.append(time.perf_counter() - started)
    cuts = statistics.quantiles(times, n=100, method="inclusive")
    return cuts[49] * 1000, cuts[98] * 1000


def _span(runs: list[Run]) -> str:
    rates = [r.rate for r in runs]
    return f"{min(rates):,.0f}-{max(rates):,.0f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each run")
    parser.add_argument("--repeat", type=int, default=3, help="runs per contender at 32 connections")
    parser.add_argument("--soak", type=float, default=0.0, help="seconds of the memory run (e.g. 600)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="threads per worker of ichis serve")
    parser.add_argument(
        "--also-threads",
        type=int,
        action="append",
        default=[],
        help="after the main runs, start ichis serve again with this many threads per worker and "
        "measure its no-card and card paths in the same run (repeatable)",
    )
    parser.add_argument("--fhir", help="a running FHIR server (default: start HAPI)")
    parser.add_argument(
        "--service-root",
        type=Path,
        default=ROOT,
        help="a checkout whose ichis serve is measured (e.g. a git worktree of an older commit, for "
        "a before/after table); default: this one",
    )
    parser.add_argument("--max-rate", type=float, default=4000.0, help="tokens signed per second of run")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("wrk is not installed: apt-get install wrk", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="ichis-bench-"))
    print(f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores, load average "
          f"{os.getloadavg()[0]:.2f}, load generator (wrk) on the same cores; work in {work}")  # fmt: skip
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
    bodies = {kind: work / f"{kind}.json" for kind in ("no-card", "prefetch", "fetch", "greeting", "feed")}
    for kind, path in bodies.items():
        if kind == "greeting":
            path.write_bytes(_greeting_body())
        else:
            made = _body("prefetch" if kind == "feed" else kind, fhir)
            path.write_bytes(_feed_shaped(made) if kind == "feed" else made)
    key = ec.generate_private_key(ec.SECP384R1())
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    # The contenders start from a clean environment: no ICHIS_* setting of this shell leaks in.
    env = {k: v for k, v in os.environ.items() if not k.startswith("ICHIS_")} | {
        "PYTHONDONTWRITEBYTECODE": "1"
    }
    results: dict[str, list[Run]] = {}
    single: dict[str, Run] = {}
    seconds, repeat = args.seconds, args.repeat
    try:
        print("Installing the reference services (npm ci)...")
        reference = reference_checkout(work)
        ref_port = free_port()
        ref_url = f"http://127.0.0.1:{ref_port}"
        with process(
            ["node", "server.js"], reference, {**env, "PORT": str(ref_port)}, ref_url, "reference", logs=work
        ):
            target = Target(ref_url, "/cds-services/patient-greeting", bodies["greeting"], work)
            results["reference"], single["reference"] = target.measure(seconds, repeat)
        (work / "flask_baseline.py").write_text(FLASK_BASELINE)
        flask_port = free_port()
        flask_url = f"http://127.0.0.1:{flask_port}"
        gunicorn = str(Path(sys.executable).parent / "gunicorn")
        command = [gunicorn, "-w", "2", "-k", "sync", "-b", f"127.0.0.1:{flask_port}", "flask_baseline:app"]
        with process(command, work, env, flask_url, "flask", logs=work):
            target = Target(flask_url, "/cds-services/x", bodies["prefetch"], work)
            results["bare Flask"], single["bare Flask"] = target.measure(seconds, repeat)
        per_run = int(args.max_rate * seconds)
        templates = prefetch_templates(load_mapping_config(), 100)
        queries = [t.replace("{{context.patientId}}", "ichis-bench") for t in templates.values()]
        public_pem = (
            key.public_key()
            .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
            .decode()
        )
        floor_fetch = measure_floors(
            results, single, work=work, env=env, bodies=bodies, key_pem=key_pem, public_pem=public_pem,
            seconds=seconds, repeat=repeat, per_run=per_run, workers=args.workers, threads=args.threads,
            fhir=fhir, templates=list(templates.values()), queries=queries,
        )  # fmt: skip
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        ours = {
            **env,
            "PYTHONPATH": str(args.service_root),
            "ICHIS_PORT": str(port), "ICHIS_WORKERS": str(args.workers), "ICHIS_THREADS": str(args.threads),
            "ICHIS_DATA_DIR": str(work / "service"), "ICHIS_PUBLIC_BASE_URL": base,
            "ICHIS_ALLOW_HTTP_FHIR": "true", "ICHIS_AUDIT_FHIR_URL": "", "ICHIS_LOG_LEVEL": "WARNING",
            "ICHIS_TRUSTED_ISSUERS": json.dumps([{"iss": ISS, "jwks": {"keys": [_jwk(key)]}}]),
        }  # fmt: skip
        scenarios = {
            "ours, no card (order-sign, non-ICI)": ("/cds-services/ichis-prognosis-sign", "no-card"),
            "ours, card, full prefetch": ("/cds-services/ichis-prognosis", "prefetch"),
        }
        print("Signing tokens...")
        token_files = {
            name: write_tokens(work / f"tokens-{kind}.txt", key_pem, base + endpoint, per_run * (repeat + 2))
            for name, (endpoint, kind) in scenarios.items()
        }
        select = "/cds-services/ichis-prognosis"
        fetch_tokens = write_tokens(work / "tokens-fetch.txt", key_pem, base + select, int(seconds * 200))
        command = [sys.executable, "-m", "ichis_cli", "serve"]
        with process(command, args.service_root, ours, f"{base}/healthz", "ours", logs=work) as pid:
            for name, (endpoint, kind) in scenarios.items():
                target = Target(base, endpoint, bodies[kind], work)
                results[name], single[name] = target.measure(seconds, repeat, token_files[name], per_run)
            # HAPI gets faster as its JIT warms: it is warmed first, then timed right before and
            # right after ours, so that neither side is measured on a colder server.
            hapi_time(fhir, queries, rounds=300)
            hapi_before = hapi_time(fhir, queries)
            fetched = Target(base, select, bodies["fetch"], work)
            single["ours, card, no prefetch (HAPI)"] = fetched.run(seconds, clients=1, tokens=fetch_tokens)
            hapi_after = hapi_time(fhir, queries)
            soak = None
            if args.soak:
                soak = run_soak(
                    base,
                    {
                        "/cds-services/ichis-prognosis-sign": bodies["no-card"],
                        "/cds-services/ichis-prognosis": bodies["feed"],
                    },
                    seconds=args.soak,
                    work=work,
                    key_pem=key_pem,
                    pid=pid,
                    rate=args.max_rate,
                )
        for threads in args.also_threads:
            # The same scenarios against another thread count, for a like-for-like choice.
            port = free_port()
            base = f"http://127.0.0.1:{port}"
            other = {
                **ours,
                "ICHIS_PORT": str(port),
                "ICHIS_THREADS": str(threads),
                "ICHIS_DATA_DIR": str(work / f"service-{threads}"),
                "ICHIS_PUBLIC_BASE_URL": base,
            }
            with process(command, args.service_root, other, f"{base}/healthz", f"ours-{threads}", logs=work):
                for name, (endpoint, kind) in scenarios.items():
                    tokens = write_tokens(
                        work / f"tokens-{kind}-{threads}.txt",
                        key_pem,
                        base + endpoint,
                        per_run * (repeat + 2),
                    )
                    target = Target(base, endpoint, bodies[kind], work)
                    label = f"{name} [{threads} threads]"
                    results[label], single[label] = target.measure(seconds, repeat, tokens, per_run)
    finally:
        if hapi is not None:
            hapi.stop()
    report(results, single, (hapi_before, hapi_after), floor_fetch, soak, args=args)
    return 0


#: The floor's levels (bench/floor_app.py), each adding to the one before: name -> (FLOOR, path, body).
FLOORS = {
    "floor: Flask + ES384, no card": ("es384", "/cds-services/ichis-prognosis-sign", "no-card"),
    "floor: + jti and audit row, no card": ("audited", "/cds-services/ichis-prognosis-sign", "no-card"),
    "floor: + card, full prefetch": ("card", "/cds-services/ichis-prognosis", "prefetch"),
}


def measure_floors(
    results: dict[str, list[Run]],
    single: dict[str, Run],
    *,
    work: Path,
    env: dict[str, str],
    bodies: dict[str, Path],
    key_pem: str,
    public_pem: str,
    seconds: float,
    repeat: int,
    per_run: int,
    workers: int,
    threads: int,
    fhir: str,
    templates: list[str],
    queries: list[str],
) -> tuple[Run, tuple[float, float], tuple[float, float]]:
    """The floor app at each level, under gunicorn with the worker model of ``ichis serve``; at
    the card level, also without a prefetch against HAPI, timed like ours. Returns that run and
    HAPI's own time before and after it."""
    print("Signing tokens for the floors...")
    tokens = write_tokens(work / "tokens-floor.txt", key_pem, "floor", per_run * (repeat + 2))
    fetch_tokens = write_tokens(work / "tokens-floor-fetch.txt", key_pem, "floor", int(seconds * 400))
    gunicorn = str(Path(sys.executable).parent / "gunicorn")
    fetched: tuple[Run, tuple[float, float], tuple[float, float]] | None = None
    for name, (level, path, kind) in FLOORS.items():
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        command = [gunicorn, "-w", str(workers), "-k", "gthread", "--threads", str(threads),
                   "--keep-alive", "5", "-b", f"127.0.0.1:{port}", "floor_app:app"]  # fmt: skip
        floor_env = {**env, "FLOOR": level, "FLOOR_PUBLIC_KEY": public_pem,
                     "FLOOR_QUERIES": json.dumps(templates),
                     "FLOOR_DB": str(work / f"floor-{level}.sqlite3")}  # fmt: skip
        # Each level keeps its own jti table: the same tokens serve every level, once each.
        own = work / f"tokens-floor-{level}.txt"
        shutil.copy(tokens, own)
        with process(command, ROOT / "bench", floor_env, url, f"floor-{level}", logs=work):
            results[name], single[name] = Target(url, path, bodies[kind], work).measure(
                seconds, repeat, own, per_run
            )
            if level == "card":
                hapi_time(fhir, queries, rounds=300)
                before = hapi_time(fhir, queries)
                run = Target(url, path, bodies["fetch"], work).run(seconds, clients=1, tokens=fetch_tokens)
                fetched = (run, before, hapi_time(fhir, queries))
    if fetched is None:
        raise RuntimeError("FLOORS has no card level to measure without a prefetch")
    return fetched


def _rest(tokens: Path, skip: int) -> Path:
    """The token file without its first ``skip`` lines (those a previous run may have used)."""
    lines = tokens.read_text().splitlines()[skip:]
    tokens.write_text("\n".join(lines) + "\n")
    return tokens


def run_soak(
    base: str, bodies: dict[str, Path], *, seconds: float, work: Path, key_pem: str, pid: int, rate: float
) -> tuple[int, int, float, int]:
    """One-minute runs with fresh tokens for ``seconds``, taking the paths in turn (the no-card
    path and a card from a feed-shaped prefetch, whose refusals are where memory once leaked);
    (RSS start, RSS end in KiB, mean req/s, errors)."""
    chunk = 60.0
    start = rss_kib(pid)
    rates, errors = [], 0
    remaining = seconds
    print(f"Soak: {seconds:.0f} s, {', '.join(bodies)} in turn; RSS at start {start / 1024:.0f} MiB")
    turn = 0
    while remaining > 0:
        length = min(chunk, remaining)
        path, body = list(bodies.items())[turn % len(bodies)]
        turn += 1
        tokens = write_tokens(work / "tokens-soak.txt", key_pem, base + path, int(rate * length))
        run = Target(base, path, body, work).run(length, tokens=tokens)
        rates.append(run.rate)
        errors += run.errors
        remaining -= length
        print(f"  {seconds - remaining:>5.0f} s: {path} {run.rate:,.0f} req/s, "
              f"RSS {rss_kib(pid) / 1024:.0f} MiB")  # fmt: skip
    return start, rss_kib(pid), statistics.mean(rates), errors


def report(
    results: dict[str, list[Run]],
    single: dict[str, Run],
    hapi: tuple[tuple[float, float], tuple[float, float]],
    floor_fetch: tuple[Run, tuple[float, float], tuple[float, float]],
    soak: tuple[int, int, float, int] | None,
    *,
    args: argparse.Namespace,
) -> None:
    reference = results["reference"]
    ref_low, ref_high = min(r.rate for r in reference), max(r.rate for r in reference)
    print(f"\n{CLIENTS} connections, {args.repeat} runs of {args.seconds:.0f} s; ichis serve with "
          f"{args.workers} workers x {args.threads} thread(s); {os.cpu_count()} cores\n")  # fmt: skip
    header = ("contender", "req/s (32)", "x reference", "p50 ms (1)", "p99 ms (1)")
    print(f"{header[0]:42} {header[1]:>14} {header[2]:>12} {header[3]:>11} {header[4]:>11} errors")
    for name, runs in results.items():
        low, high = min(r.rate for r in runs), max(r.rate for r in runs)
        ratio = f"{low / ref_high:.2f}-{high / ref_low:.2f}" if name != "reference" else ""
        one = single[name]
        errors = sum(r.errors for r in runs) + one.errors
        latency = f"{one.p50_ms or 0:>11.2f} {one.p99_ms or 0:>11.2f}"
        print(f"{name:42} {_span(runs):>14} {ratio:>12} {latency} {errors}")
    fetched = single["ours, card, no prefetch (HAPI)"]
    print(f"{'ours, card, no prefetch (HAPI), 1 connection':42} {'':>14} {'':>12} "
          f"{fetched.p50_ms or 0:>11.2f} {fetched.p99_ms or 0:>11.2f} {fetched.errors}")  # fmt: skip
    for when, (p50, p99) in zip(("before", "after"), hapi, strict=True):
        name = f"HAPI alone, same queries in parallel, {when}"
        print(f"{name:42} {'':>14} {'':>12} {p50:>11.2f} {p99:>11.2f}")
    floor_run, *floor_hapi = floor_fetch
    print(f"{'floor: card, no prefetch (HAPI), 1 conn.':42} {'':>14} {'':>12} "
          f"{floor_run.p50_ms or 0:>11.2f} {floor_run.p99_ms or 0:>11.2f} {floor_run.errors}")  # fmt: skip
    for when, (p50, p99) in zip(("before", "after"), floor_hapi, strict=True):
        name = f"HAPI alone, same queries, {when} the floor"
        print(f"{name:42} {'':>14} {'':>12} {p50:>11.2f} {p99:>11.2f}")
    hapi_p50 = statistics.mean(p50 for p50, _ in hapi)
    floor_hapi_p50 = statistics.mean(p50 for p50, _ in floor_hapi)
    print(f"\nno-prefetch card path minus HAPI's own time at p50 (mean of before and after): "
          f"ours {(fetched.p50_ms or 0) - hapi_p50:.2f} ms, "
          f"floor {(floor_run.p50_ms or 0) - floor_hapi_p50:.2f} ms")  # fmt: skip
    pairs = (
        ("ours, no card (order-sign, non-ICI)", "floor: + jti and audit row, no card"),
        ("ours, card, full prefetch", "floor: + card, full prefetch"),
    )
    for ours_name, floor_name in pairs:
        if ours_name in results and floor_name in results:
            ours_rate = statistics.mean(r.rate for r in results[ours_name])
            floor_rate = statistics.mean(r.rate for r in results[floor_name])
            print(
                f"{ours_name}: {ours_rate / floor_rate:.2f}x of its floor ({floor_name}), means of the runs"
            )
    if soak:
        start, end, rate, errors = soak
        print(f"soak: RSS {start / 1024:.0f} MiB at the start, {end / 1024:.0f} MiB at the end "
              f"({args.soak:.0f} s at {rate:,.0f} req/s, {errors} errors)")  # fmt: skip


if __name__ == "__main__":
    raise SystemExit(main())
