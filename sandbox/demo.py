"""``ichis demo``: the whole stack on this machine with one command.

Builds and starts the HAPI FHIR server (or uses ``--fhir``), loads the demo patients, starts the CDS
service (``ichis serve``, trusting the sandbox EHR's keys) and the sandbox EHR, waits until each
answers, prints the URL to open, and stops everything on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

import requests

from sandbox import demo_data
from sandbox.hapi_server import HapiError, HapiServer, build


class DemoError(Exception):
    """Why the demo could not start, in one line."""


@dataclass
class DemoStack:
    data_dir: Path
    hapi_port: int = 8090
    service_port: int = 8080
    ehr_port: int = 8070
    fhir: str | None = None  # an existing FHIR server to use instead of starting HAPI
    say: Callable[[str], None] = print
    fhir_url: str = ""  # the FHIR server in use, once started
    _hapi: HapiServer | None = None
    _processes: list[tuple[str, subprocess.Popen[bytes]]] = field(default_factory=list)
    _logs: list[IO[bytes]] = field(default_factory=list)

    @property
    def service_url(self) -> str:
        return f"http://127.0.0.1:{self.service_port}"

    @property
    def ehr_url(self) -> str:
        return f"http://127.0.0.1:{self.ehr_port}"

    def _spawn(self, name: str, argv: list[str], env: dict[str, str]) -> None:
        log = (self.data_dir / f"{name}.log").open("ab")
        self._logs.append(log)
        process = subprocess.Popen(  # noqa: S603 - our own interpreter and modules
            argv, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
        self._processes.append((name, process))

    def _wait(self, name: str, url: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        process = dict(self._processes).get(name)
        while time.monotonic() < deadline:
            if process is not None and process.poll() is not None:
                raise DemoError(f"{name} exited; see {self.data_dir / (name + '.log')}")
            try:
                if requests.get(url, timeout=2).status_code < 500:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.2)
        raise DemoError(f"{name} did not answer at {url} within {timeout:.0f} s")

    def start(self) -> str:
        """Start everything; returns the URL to open."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        fhir = self.fhir
        if fhir is None:
            self.say("Building the HAPI FHIR server (first time: a few minutes with Maven)...")
            try:
                build()
                self._hapi = HapiServer(self.hapi_port, self.data_dir / "hapi")
                self.say(f"Starting HAPI FHIR on port {self.hapi_port}...")
                fhir = self._hapi.start(timeout=600)
            except HapiError as error:
                raise DemoError(str(error).splitlines()[0]) from None
        self.fhir_url = fhir
        self.say("Loading the demo patients...")
        try:
            count = demo_data.load(fhir, datetime.now(UTC))
        except requests.RequestException as error:
            raise DemoError(f"cannot load the demo patients into {fhir}: {error}") from None
        self.say(f"  {count} resources, {len(demo_data.PATIENTS)} fictional patients")
        jwks = f"{self.ehr_url}/.well-known/jwks.json"
        self._spawn(
            "service",
            [sys.executable, "-m", "ichis_cli", "serve", "--port", str(self.service_port), "--workers", "2"],
            {
                "ICHIS_PUBLIC_BASE_URL": self.service_url,
                "ICHIS_TRUSTED_ISSUERS": json.dumps(
                    [{"iss": self.ehr_url, "jwks_url": jwks, "jku_allow": [jwks]}]
                ),
                # The sandbox speaks plain http on loopback: its FHIR endpoint, its key set and HAPI.
                "ICHIS_ALLOW_HTTP_FHIR": "true",
                "ICHIS_ALLOW_HTTP_JWKS": "true",
                "ICHIS_ALLOW_HTTP_AUDIT": "true",
                "ICHIS_AUDIT_FHIR_URL": fhir,
                "ICHIS_DATA_DIR": str(self.data_dir / "service"),
                # The SMART app is registered with the sandbox EHR under its documented secret.
                "ICHIS_SMART_CLIENT_SECRET": "ichis-smart-sandbox-secret",
                "ICHIS_SMART_TRUSTED_ISS": f"{self.ehr_url}/fhir",
            },
        )
        self._spawn(
            "sandbox-ehr",
            [
                sys.executable, "-m", "sandbox.ehr", "--port", str(self.ehr_port), "--fhir", fhir,
                "--cds", self.service_url, "--data-dir", str(self.data_dir / "ehr"),
            ],
            {},
        )  # fmt: skip
        self._wait("service", f"{self.service_url}/cds-services")
        self._wait("sandbox-ehr", f"{self.ehr_url}/")
        return f"{self.ehr_url}/"

    def stop(self) -> None:
        for _, process in reversed(self._processes):
            if process.poll() is None:
                process.terminate()
        for _, process in reversed(self._processes):
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
        self._processes.clear()
        if self._hapi is not None:
            self._hapi.stop()
        for log in self._logs:
            log.close()


def run(stack: DemoStack) -> int:
    """Start, print where to go, and keep running until interrupted."""
    started = time.monotonic()
    stopping = False

    def _stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, _stop)
    try:
        url = stack.start()
        stack.say(
            f"\nThe IChIS demo is running (ready in {time.monotonic() - started:.0f} s).\n"
            f"  Open the sandbox EHR:  {url}\n"
            f"  CDS service:           {stack.service_url}/cds-services\n"
            f"  FHIR server:           {stack.fhir_url}\n"
            "Pick a patient (ichis-demo-2 has IChIS 2), draft pembrolizumab, and read the card.\n"
            "Press Ctrl-C to stop."
        )
        while not stopping:
            time.sleep(0.5)
    except DemoError as error:
        stack.say(f"ichis demo: {error}")
        return 1
    except KeyboardInterrupt:
        pass
    finally:
        stack.stop()
    return 0
