"""Fixtures shared by every test layer: the real HAPI FHIR server with the demo patients.

One HAPI per test session. If ``ICHIS_TEST_FHIR_URL`` is set (``.ci/run`` starts HAPI once and
sets it), that server is used; otherwise the fixture builds the jar if needed, starts HAPI on a free
port with a fresh H2 database, and stops it at the end.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
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


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of a real Redis server (Debian's ``redis-server``), empty at the start of the session.

    ``ICHIS_TEST_REDIS_URL`` (set by ``.ci/run``) names a running one; otherwise the fixture starts
    ``redis-server`` on a free loopback port with no persistence and stops it at the end.
    """
    external = os.environ.get("ICHIS_TEST_REDIS_URL")
    if external:
        yield external
        return
    executable = shutil.which("redis-server")
    if executable is None:
        pytest.fail("redis-server is not installed: run `make bootstrap` (Debian package redis-server)")
    port = free_port()
    directory = tmp_path_factory.mktemp("redis")
    process = subprocess.Popen(  # noqa: S603 - the installed redis-server, fixed arguments
        [executable, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(directory)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"redis://127.0.0.1:{port}/0"
    try:
        _wait_for_redis(port, process)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


def _wait_for_redis(port: int, process: subprocess.Popen[bytes]) -> None:
    for _ in range(100):
        if process.poll() is not None:
            pytest.fail(f"redis-server exited with code {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as connection:
                connection.sendall(b"PING\r\n")
                if connection.recv(16).startswith(b"+PONG"):
                    return
        except OSError:
            time.sleep(0.05)
    pytest.fail("redis-server did not answer PING")
