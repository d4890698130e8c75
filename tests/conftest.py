"""Fixtures shared by every test layer: the real HAPI FHIR server with the demo patients.

One HAPI per test session. If ``ICHIS_TEST_FHIR_URL`` is set (``.ci/run`` starts HAPI once and
sets it), that server is used; otherwise the fixture builds the jar if needed, starts HAPI on a free
port with a fresh H2 database, and stops it at the end.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import requests

from sandbox import demo_data
from sandbox.hapi_server import HapiServer, free_port


@pytest.fixture(scope="session")
def hapi_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Base URL of a running HAPI FHIR JPA server (R4)."""
    external = os.environ.get("ICHIS_TEST_FHIR_URL")
    if external:
        yield external.rstrip("/")
        return
    data_dir: Path = tmp_path_factory.mktemp("hapi")
    server = HapiServer(free_port(), data_dir)
    try:
        yield server.start(timeout=600)
    finally:
        server.stop()


@pytest.fixture(scope="session")
def demo_fhir(hapi_url: str) -> str:
    """The HAPI base URL after the demo patients were loaded, dated relative to now."""
    with requests.Session() as session:
        demo_data.load(hapi_url, datetime.now(UTC), session)
    return hapi_url
