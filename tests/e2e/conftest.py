"""The whole stack on real ports for browser tests: HAPI with the demo patients, the CDS service
(as ``ichis serve`` builds it, with JWT authentication on), and the sandbox EHR calling it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from cds_service import close_app, create_app
from sandbox.ehr import create_ehr_app

# The browser fixtures (browser, page with a screenshot on failure) are the sandbox tests'.
from tests.sandbox.conftest import browser, page, pytest_runtest_makereport  # noqa: F401
from tests.sandbox.standin import Served


@dataclass
class Stack:
    fhir: str
    service: Flask
    service_url: str
    ehr: Flask
    ehr_url: str


#: The sandbox EHR registers the SMART app with this documented secret (docs/sandbox.md).
SANDBOX_SECRET = "ichis-smart-sandbox-secret"  # noqa: S105


@dataclass
class Running:
    """A stack and the servers to stop after the test."""

    stack: Stack
    servers: tuple[Served, Served]

    def stop(self) -> None:
        for server in self.servers:
            server.stop()
        close_app(self.stack.service)


def start_stack(
    fhir: str,
    directory: Path,
    *,
    service: dict[str, Any] | None = None,
    smart: dict[str, Any] | None = None,
    ehr: dict[str, Any] | None = None,
) -> Running:
    """The service (JWT on, trusting the EHR's key set; SMART app registered with the EHR) and the
    sandbox EHR calling it, each on a real port; the keyword groups override their settings."""
    service_server, ehr_server = Served(), Served()
    jwks = f"{ehr_server.url}/.well-known/jwks.json"
    app = create_app(
        {
            "data_dir": str(directory / "service"),
            "public_base_url": service_server.url,
            "auth_mode": "jwt",
            "trusted_issuers": [{"iss": ehr_server.url, "jwks_url": jwks, "jku_allow": [jwks]}],
            # The sandbox EHR, its key set and HAPI speak plain http on loopback.
            "allow_http_fhir": True,
            "allow_http_jwks": True,
            "allow_http_audit": True,
            "audit_fhir_url": fhir,
            **(service or {}),
        },
        environ={},
        smart={"client_secret": SANDBOX_SECRET, "trusted_iss": [f"{ehr_server.url}/fhir"], **(smart or {})},
    )
    service_server.mount(app)
    ehr_app = create_ehr_app(
        {
            "public_base_url": ehr_server.url,
            "fhir_upstream": fhir,
            "cds_base_url": service_server.url,
            "data_dir": str(directory / "ehr"),
            "testing": True,
            **(ehr or {}),
        }
    )
    ehr_server.mount(ehr_app)
    return Running(
        Stack(fhir, app, service_server.url, ehr_app, ehr_server.url), (ehr_server, service_server)
    )


@pytest.fixture
def real_stack(demo_fhir: str, tmp_path: Path) -> Iterator[Callable[..., Stack]]:
    """Builds the stack; keyword arguments are service settings (e.g. ``scope_policy``)."""
    started: list[Running] = []

    def build(**service_settings: Any) -> Stack:
        started.append(start_stack(demo_fhir, tmp_path / str(len(started)), service=service_settings))
        return started[-1].stack

    yield build
    for running in started:
        running.stop()
