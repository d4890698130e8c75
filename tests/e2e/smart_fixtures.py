"""The real stack of tests/e2e/conftest.py with the SMART app configured for the sandbox EHR.

The service's ``create_app`` gets the SMART app's settings (the sandbox client's secret, the EHR
as trusted ``iss``). Stacks are kept for the whole test module (one per set of settings): each
test still gets a fresh browser context, hence its own EHR workspace and cookies.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.e2e.conftest import Running, Stack, start_stack


# Named with ``name=`` so that test modules import the function and take ``smart_stack`` as a
# parameter without shadowing the import.
@pytest.fixture(scope="module", name="smart_stack")
def smart_stack_fixture(
    demo_fhir: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[..., Stack]]:
    """Builds (or reuses) a stack; ``ehr`` and ``smart`` are settings of the EHR and of the app."""
    built: dict[str, Running] = {}

    def build(*, ehr: dict[str, Any] | None = None, smart: dict[str, Any] | None = None) -> Stack:
        key = repr((sorted((ehr or {}).items()), sorted((smart or {}).items())))
        if key not in built:
            built[key] = start_stack(demo_fhir, tmp_path_factory.mktemp("smart-stack"), smart=smart, ehr=ehr)
        return built[key].stack

    yield build
    for running in built.values():
        running.stop()
