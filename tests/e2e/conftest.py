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


@pytest.fixture
def real_stack(demo_fhir: str, tmp_path: Path) -> Iterator[Callable[..., Stack]]:
    """Builds the stack; keyword arguments are service settings (e.g. ``scope_policy``)."""
    started: list[tuple[Served, Served, Flask]] = []

    def build(**service_settings: Any) -> Stack:
        service_server, ehr_server = Served(), Served()
        jwks = f"{ehr_server.url}/.well-known/jwks.json"
        service = create_app(
            {
                "data_dir": str(tmp_path / "service"),
                "public_base_url": service_server.url,
                "auth_mode": "jwt",
                "trusted_issuers": [{"iss": ehr_server.url, "jwks_url": jwks, "jku_allow": [jwks]}],
                "allow_http_fhir": True,
                "audit_fhir_url": demo_fhir,
                **service_settings,
            },
            environ={},
        )
        service_server.mount(service)
        ehr = create_ehr_app(
            {
                "public_base_url": ehr_server.url,
                "fhir_upstream": demo_fhir,
                "cds_base_url": service_server.url,
                "data_dir": str(tmp_path / "ehr"),
                "testing": True,
            }
        )
        ehr_server.mount(ehr)
        started.append((service_server, ehr_server, service))
        return Stack(demo_fhir, service, service_server.url, ehr, ehr_server.url)

    yield build
    for service_server, ehr_server, service in started:
        ehr_server.stop()
        service_server.stop()
        close_app(service)
