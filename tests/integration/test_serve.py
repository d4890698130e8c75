"""`ichis serve` as an operator starts it: gunicorn, settings from ICHIS_* variables, and the
README's curl example answered with a card."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from sandbox.hapi_server import free_port

pytestmark = pytest.mark.integration
ROOT = Path(__file__).parent.parent.parent


def wait_until_up(base: str, log: Path, attempts: int = 150) -> None:
    """Poll /healthz until ``ichis serve`` answers; fail with its log otherwise."""
    for _ in range(attempts):
        try:
            if requests.get(f"{base}/healthz", timeout=1).status_code == 200:
                return
        except requests.ConnectionError:
            time.sleep(0.1)
    pytest.fail("ichis serve did not answer: " + log.read_text())


@pytest.fixture
def served(tmp_path: Path) -> Iterator[str]:
    port = free_port()
    env = {
        **os.environ,
        "ICHIS_AUTH_MODE": "off",
        "ICHIS_ALLOW_HTTP_FHIR": "true",
        "ICHIS_DATA_DIR": str(tmp_path),
        "ICHIS_PORT": str(port),
        "ICHIS_WORKERS": "2",
    }
    log = (tmp_path / "serve.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "ichis_cli", "serve"], env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=log
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(base, tmp_path / "serve.log")
        yield base
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


def test_the_readme_curl_example_gets_the_ichis_2_card(served: str, demo_fhir: str) -> None:
    readme = (ROOT / "README.md").read_text()
    command = re.search(r"^curl .*cds-services/ichis-prognosis.*$", readme, re.M)
    assert command is not None, "the README shows the curl example"
    assert "-d @examples/order-select.json" in command[0]
    body = json.loads((ROOT / "examples/order-select.json").read_text())
    # The example names the README's HAPI port (8090, also what .ci/run uses); a test run with its
    # own HAPI on another port points the example there.
    body["fhirServer"] = demo_fhir
    response = requests.post(f"{served}/cds-services/ichis-prognosis", json=body, timeout=30)
    assert response.status_code == 200
    (card,) = response.json()["cards"]
    assert card["summary"].startswith("IChIS 2 of 2")
    assert response.headers["X-Request-ID"]


def test_a_bad_configuration_stops_the_start_with_one_line(tmp_path: Path) -> None:
    config = tmp_path / "site.toml"
    config.write_text("[service]\nscope_policy = 'sometimes'\n")
    done = subprocess.run(  # noqa: S603
        [sys.executable, "-m", "ichis_cli", "serve", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 4
    assert done.stderr.strip() == "ichis: configuration: scope_policy must be one of caveat, suppress"


def test_the_container_entry_point_runs_outside_docker_against_hapi(demo_fhir: str, tmp_path: Path) -> None:
    """`ichis serve` (the image's ENTRYPOINT and CMD) with the compose file's environment, HAPI's
    address swapped for the test server's, answers health, readiness and metrics."""
    import yaml

    compose = yaml.safe_load((ROOT / "docker" / "compose.yaml").read_text())
    env = {key: str(value) for key, value in compose["services"]["service"]["environment"].items()}
    port = free_port()
    env.update({
        "ICHIS_AUDIT_FHIR_URL": demo_fhir,
        "ICHIS_PORT": str(port),
        "ICHIS_DATA_DIR": str(tmp_path),
        "ICHIS_PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
        # The compose issuer is the sandbox container; here an inline key set stands for it.
        "ICHIS_TRUSTED_ISSUERS": json.dumps([{"iss": "http://localhost:8070", "jwks": {"keys": []}}]),
    })  # fmt: skip
    log = (tmp_path / "serve.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "ichis_cli", "serve"], env={**os.environ, **env}, cwd=ROOT, stderr=log
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(base, tmp_path / "serve.log")
        ready = requests.get(f"{base}/readyz", timeout=10)
        assert ready.status_code == 200, ready.text
        assert f"audit FHIR server {demo_fhir}" in ready.json()["ok"]
        metrics = requests.get(f"{base}/metrics", timeout=10)
        assert "ichis_audit_spool_depth" in metrics.text
    finally:
        process.terminate()
        assert process.wait(timeout=30) == 0  # graceful: gunicorn stops its workers and exits 0
        log.close()


def test_the_access_log_shows_paths_but_never_an_oauth_code_or_state(tmp_path: Path) -> None:
    """`ICHIS_ACCESS_LOG=1` logs each request line without its query string or referrer."""
    port = free_port()
    env = {
        **os.environ,
        "ICHIS_AUTH_MODE": "off",
        "ICHIS_DATA_DIR": str(tmp_path),
        "ICHIS_PORT": str(port),
        "ICHIS_WORKERS": "1",
        "ICHIS_ACCESS_LOG": "1",
    }
    log = tmp_path / "serve.log"
    with log.open("wb") as handle:
        process = subprocess.Popen(
            [sys.executable, "-m", "ichis_cli", "serve"], env=env, cwd=ROOT, stdout=handle, stderr=handle
        )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(base, log)
        requests.get(
            f"{base}/smart/callback?code=CODE-SECRET-1&state=STATE-SECRET-2",
            headers={"Referer": "https://ehr.example/authorize?launch=LAUNCH-SECRET-3"},
            timeout=10,
        )
    finally:
        process.terminate()
        process.wait(timeout=30)
    text = log.read_text()
    assert '"GET /smart/callback HTTP/1.1"' in text  # gunicorn's access line, path only
    for secret in ("CODE-SECRET-1", "STATE-SECRET-2", "LAUNCH-SECRET-3"):
        assert secret not in text
