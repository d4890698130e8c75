"""The shared jti replay store against a real Redis server: a token is used once across hosts."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
import requests

from cds_service.auth import RedisReplayCache
from fhir_mappings.bundles import dumps
from sandbox.hapi_server import free_port
from tests.http.conftest import hook_body
from tests.http.test_auth import ISS, JWKS, token
from tests.integration.test_serve import ROOT, wait_until_up

pytestmark = pytest.mark.integration


def test_a_jti_is_first_used_once_and_expires_with_its_token(redis_url: str) -> None:
    cache = RedisReplayCache(redis_url)
    jti = str(uuid.uuid4())
    assert cache.first_use(ISS, jti, time.time() + 30) is True
    assert cache.first_use(ISS, jti, time.time() + 30) is False
    assert cache.first_use("https://other-ehr.example", jti, time.time() + 30) is True
    ttl = redis.Redis.from_url(redis_url).ttl(f"ichis:jti:{ISS}:{jti}")
    assert 0 < ttl <= 31


@pytest.fixture
def start_service(tmp_path: Path, redis_url: str) -> Iterator[Callable[[str], str]]:
    """Starts `ichis serve` processes that share one Redis replay store, each with its own data
    directory (as on two hosts); returns each one's base URL."""
    processes: list[subprocess.Popen[bytes]] = []

    def start(name: str) -> str:
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        data = tmp_path / name
        data.mkdir()
        env = {
            **os.environ,
            "ICHIS_PORT": str(port),
            "ICHIS_WORKERS": "1",
            "ICHIS_DATA_DIR": str(data),
            "ICHIS_PUBLIC_BASE_URL": "https://cds.example",  # the one name both hosts serve
            "ICHIS_TRUSTED_ISSUERS": dumps([{"iss": ISS, "jwks": JWKS}]),
            "ICHIS_REPLAY_STORE": redis_url,
        }
        log = data / "serve.log"
        with log.open("wb") as handle:
            processes.append(
                subprocess.Popen(
                    [sys.executable, "-m", "ichis_cli", "serve"],
                    env=env,
                    cwd=ROOT,
                    stdout=subprocess.DEVNULL,
                    stderr=handle,
                )
            )
        wait_until_up(base, log)
        return base

    yield start
    for process in processes:
        process.terminate()
        process.wait(timeout=30)


def test_a_token_replayed_to_another_service_process_sharing_redis_is_refused(
    start_service: Callable[[str], str],
) -> None:
    first, second = start_service("host-a"), start_service("host-b")
    bearer = token()
    body = dumps(hook_body("ichis-demo-2"))
    headers = {"Authorization": f"Bearer {bearer}", "Content-Type": "application/json"}
    url = "/cds-services/ichis-prognosis"
    assert requests.post(first + url, data=body, headers=headers, timeout=30).status_code == 200
    assert requests.post(second + url, data=body, headers=headers, timeout=30).status_code == 401
    fresh = {**headers, "Authorization": f"Bearer {token()}"}
    assert requests.post(second + url, data=body, headers=fresh, timeout=30).status_code == 200
