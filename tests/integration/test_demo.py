"""`ichis demo`: one command brings up the service and the sandbox EHR and prints where to go."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from sandbox.hapi_server import free_port

pytestmark = pytest.mark.integration
ROOT = Path(__file__).parent.parent.parent


def test_the_demo_starts_prints_the_url_and_stops_cleanly(demo_fhir: str, tmp_path: Path) -> None:
    """With --fhir the demo reuses the test HAPI; starting HAPI itself is covered by the fixtures."""
    service_port, ehr_port = free_port(), free_port()
    demo = subprocess.Popen(  # noqa: S603 - our own command
        [sys.executable, "-m", "ichis_cli", "demo", "--fhir", demo_fhir, "--data-dir", str(tmp_path),
         "--service-port", str(service_port), "--ehr-port", str(ehr_port)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    assert demo.stdout is not None
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = demo.stdout.readline()
            lines.append(line)
            if "Open the sandbox EHR:" in line or not line:
                break
        url = lines[-1].split("Open the sandbox EHR:")[-1].strip()
        assert url == f"http://127.0.0.1:{ehr_port}/", "".join(lines)
        page = requests.get(url, timeout=10)
        assert page.status_code == 200
        assert "ichis-demo-2" in page.text  # the demo patients are there to pick
        services = requests.get(f"http://127.0.0.1:{service_port}/cds-services", timeout=10).json()
        assert [s["id"] for s in services["services"]] == ["ichis-prognosis", "ichis-prognosis-sign"]
    finally:
        demo.send_signal(signal.SIGTERM)
        code = demo.wait(timeout=60)
        demo.stdout.close()
    assert code == 0
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{service_port}/cds-services", timeout=2)
