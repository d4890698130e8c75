"""CPU instructions per hook call, counted by valgrind's callgrind: a figure that does not move with
the load of a shared machine (wall-clock benchmarks on two shared cores do).

    .venv/bin/python bench/instructions.py [--calls 20] [--service-root DIR]

For each path (a no-card order-sign with full prefetch, a card with 40 prefetched Observations)
it runs the service's WSGI app in-process under callgrind twice, with ``--calls`` requests and
with none after the same warm-up, and prints the difference per request. Every request carries
its own ES384 JWT and hookInstance and writes its audit record, as in production. Run on purpose,
not by the test suite; ``--service-root`` measures another checkout (a worktree of an older
commit) for a before/after comparison.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec

# A command that reports (T201) and starts valgrind and Python with fixed arguments (S603/S607).
# ruff: noqa: T201, S603, S607
ROOT = Path(__file__).resolve().parent.parent

BASE = "http://127.0.0.1:1"
WARM_UP = 20
PATHS = {"no-card": "/cds-services/ichis-prognosis-sign", "card": "/cds-services/ichis-prognosis"}


def prepare(work: Path, calls: int) -> Path:
    """Request bodies and fresh tokens (valid for a day: the runs under valgrind are slow)."""
    # The wall-clock benchmark's bodies and key format; imported here only, so that the measured
    # process loads the service from the checkout under measurement, not from this one.
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import hooks  # noqa: PLC0415 - imported late on purpose (above)

    key = ec.generate_private_key(ec.SECP384R1())
    now = int(time.time())
    data: dict[str, Any] = {"jwks": hooks._jwk(key), "iss": hooks.ISS, "placeholder": hooks.PLACEHOLDER}
    data["paths"] = {}
    for name, path in PATHS.items():
        body = hooks._body("no-card" if name == "no-card" else "prefetch", f"{BASE}/fhir").decode()
        tokens = [
            jwt.encode(
                {
                    "iss": hooks.ISS,
                    "aud": BASE + path,
                    "iat": now,
                    "exp": now + 86400,
                    "jti": str(uuid.uuid4()),
                },
                key,
                algorithm="ES384",
                headers={"kid": hooks.KID},
            )
            for _ in range(WARM_UP + calls)
        ]
        data["paths"][name] = {"path": path, "body": body, "tokens": tokens}
    target = work / "requests.json"
    target.write_text(json.dumps(data))
    return target


def drive(requests_file: Path, name: str, calls: int) -> None:
    """The measured program: build the app, warm up, then make ``calls`` calls."""
    from cds_service import create_app  # noqa: PLC0415 - from the checkout under measurement (PYTHONPATH)

    data = json.loads(requests_file.read_text())
    settings = {
        "data_dir": tempfile.mkdtemp(prefix="ichis-instructions-"),
        "public_base_url": BASE,
        "auth_mode": "jwt",
        "trusted_issuers": [{"iss": data["iss"], "jwks": {"keys": [data["jwks"]]}}],
        "max_token_lifetime_seconds": 200000,  # the tokens were signed before the slow runs
    }
    try:
        app = create_app(settings, environ={})
    except ValueError:  # an older checkout, before tokens had a maximum lifetime
        del settings["max_token_lifetime_seconds"]
        app = create_app(settings, environ={})
    spec = data["paths"][name]
    for i in range(WARM_UP + calls):
        body = spec["body"].replace(data["placeholder"], str(uuid.UUID(int=i + 1))).encode()
        environ = {
            "REQUEST_METHOD": "POST", "PATH_INFO": spec["path"], "SERVER_NAME": "127.0.0.1",
            "SERVER_PORT": "1", "SERVER_PROTOCOL": "HTTP/1.1", "wsgi.url_scheme": "http",
            "wsgi.input": io.BytesIO(body), "wsgi.errors": sys.stderr, "CONTENT_TYPE": "application/json",
            "CONTENT_LENGTH": str(len(body)), "HTTP_AUTHORIZATION": f"Bearer {spec['tokens'][i]}",
        }  # fmt: skip
        status: list[str] = []

        def start_response(line: str, headers: Any, error: Any = None, seen: list[str] = status) -> Any:
            seen.append(line)

        b"".join(app.wsgi_app(environ, start_response))
        if not status[0].startswith("200"):
            raise SystemExit(f"{name}: call {i} answered {status[0]}")


def instructions(requests_file: Path, name: str, calls: int, root: Path, work: Path) -> int:
    out = work / f"callgrind.{name}.{calls}.out"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ICHIS_")} | {"PYTHONPATH": str(root)}
    run = subprocess.run(
        ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable, __file__,
         "--drive", name, "--requests-file", str(requests_file), "--calls", str(calls)],
        capture_output=True, text=True, env=env, cwd=root, check=False,
    )  # fmt: skip
    found = re.search(r"Collected : (\d+)", run.stderr)
    if run.returncode != 0 or found is None:
        raise SystemExit(f"callgrind run failed:\n{run.stderr[-2000:]}")
    out.unlink(missing_ok=True)
    return int(found[1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--service-root", type=Path, default=ROOT)
    parser.add_argument("--drive", help=argparse.SUPPRESS)
    parser.add_argument("--requests-file", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.drive:
        drive(args.requests_file, args.drive, args.calls)
        return 0
    if shutil.which("valgrind") is None:
        print("valgrind is not installed: apt-get install valgrind", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="ichis-instructions-"))
    requests_file = prepare(work, args.calls)
    print(f"{args.service_root}: instructions per call (callgrind, {args.calls} calls after {WARM_UP})")
    for name in PATHS:
        base = instructions(requests_file, name, 0, args.service_root, work)
        total = instructions(requests_file, name, args.calls, args.service_root, work)
        print(f"  {name:8} {(total - base) / args.calls / 1e6:6.2f} M")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
