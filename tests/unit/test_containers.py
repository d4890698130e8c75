"""What can be checked of the container files without a Docker engine: the Dockerfile lints clean
(hadolint, from PyPI), copies only what exists, runs as non-root with a HEALTHCHECK; the compose
file parses and wires HAPI, the service and the sandbox with healthchecks and a state volume."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).parent.parent.parent
DOCKERFILE = ROOT / "docker" / "Dockerfile"
COMPOSE = ROOT / "docker" / "compose.yaml"


def test_the_dockerfile_passes_hadolint() -> None:
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    done = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True, check=False)  # noqa: S603
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_dockerfile_is_multi_stage_non_root_with_a_healthcheck() -> None:
    text = DOCKERFILE.read_text()
    assert len(re.findall(r"^FROM ", text, re.M)) == 2
    assert re.search(r"^USER 10001:10001$", text, re.M)
    assert "HEALTHCHECK" in text
    assert 'ENTRYPOINT ["ichis"]' in text
    assert 'CMD ["serve"]' in text


def test_every_path_the_dockerfile_copies_exists() -> None:
    for line in DOCKERFILE.read_text().splitlines():
        if line.startswith("COPY ") and "--from=" not in line:
            *sources, _ = line.split()[1:]
            for source in sources:
                assert (ROOT / source).exists(), source


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return document


def test_compose_runs_hapi_the_service_and_the_sandbox_with_healthchecks(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert services["hapi"]["image"].startswith("hapiproject/hapi:")
    for name in ("hapi", "service", "sandbox"):
        assert "test" in services[name]["healthcheck"], name
    assert services["service"]["depends_on"]["hapi"]["condition"] == "service_healthy"


def test_the_service_state_lives_in_a_volume_and_is_configured_by_environment(
    compose: dict[str, Any],
) -> None:
    service = compose["services"]["service"]
    assert "ichis-state:/var/lib/ichis" in service["volumes"]
    assert "ichis-state" in compose["volumes"]
    assert all(key.startswith("ICHIS_") for key in service["environment"])
