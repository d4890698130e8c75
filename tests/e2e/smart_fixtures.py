"""The real stack of tests/e2e/conftest.py with the SMART app configured for the sandbox EHR.

The service's ``create_app`` gets the SMART app's settings (the sandbox client's secret, the EHR
as trusted ``iss``). Stacks are kept for the whole test module (one per set of settings): each
test still gets a fresh browser context, hence its own EHR workspace and cookies.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from cds_service import close_app, create_app
from sandbox.ehr import create_ehr_app
from tests.e2e.conftest import Stack
from tests.sandbox.standin import Served

SANDBOX_SECRET = "ichis-smart-sandbox-secret"  # noqa: S105 - the sandbox's documented default secret


# Named with ``name=`` so that test modules import the function and take ``smart_stack`` as a
# parameter without shadowing the import.
@pytest.fixture(scope="module", name="smart_stack")
def smart_stack_fixture(
    demo_fhir: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[..., Stack]]:
    """Builds (or reuses) a stack; ``ehr`` and ``smart`` are settings of the EHR and of the app."""
    built: dict[str, tuple[Stack, Served, Served]] = {}

    def build(*, ehr: dict[str, Any] | None = None, smart: dict[str, Any] | None = None) -> Stack:
        key = repr((sorted((ehr or {}).items()), sorted((smart or {}).items())))
        if key in built:
            return built[key][0]
        tmp: Path = tmp_path_factory.mktemp("smart-stack")
        service_server, ehr_server = Served(), Served()
        jwks = f"{ehr_server.url}/.well-known/jwks.json"
        service = create_app(
            {
                "data_dir": str(tmp / "service"),
                "public_base_url": service_server.url,
                "auth_mode": "jwt",
                "trusted_issuers": [{"iss": ehr_server.url, "jwks_url": jwks, "jku_allow": [jwks]}],
                "allow_http_fhir": True,
                "audit_fhir_url": demo_fhir,
            },
            environ={},
            smart={
                "client_secret": SANDBOX_SECRET,
                "trusted_iss": [f"{ehr_server.url}/fhir"],
                **(smart or {}),
            },
        )
        service_server.mount(service)
        ehr_app: Flask = create_ehr_app(
            {
                "public_base_url": ehr_server.url,
                "fhir_upstream": demo_fhir,
                "cds_base_url": service_server.url,
                "data_dir": str(tmp / "ehr"),
                "testing": True,
                **(ehr or {}),
            }
        )
        ehr_server.mount(ehr_app)
        stack = Stack(demo_fhir, service, service_server.url, ehr_app, ehr_server.url)
        built[key] = (stack, service_server, ehr_server)
        return stack

    yield build
    for stack, service_server, ehr_server in built.values():
        ehr_server.stop()
        service_server.stop()
        close_app(stack.service)
