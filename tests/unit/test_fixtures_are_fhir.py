"""The golden records are valid FHIR, checked with fhir.resources (R4B models, the closest to R4).

The mappers do not validate what they read (real data is messier than the models allow); the test
data, at least, must be what a conformant server could send.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from fhir_mappings.bundles import parse_document

GOLDEN = Path(__file__).parent.parent / "golden"


def model(resource_type: str) -> type:
    module = importlib.import_module(f"fhir.resources.R4B.{resource_type.lower()}")
    cls: type = getattr(module, resource_type)
    return cls


@pytest.mark.parametrize("path", sorted(GOLDEN.glob("*.input.*")), ids=lambda p: p.name)
def test_golden_inputs_validate_as_fhir(path: Path) -> None:
    entries = parse_document(path.read_text())
    assert entries
    for resource, _ in entries:
        model(resource["resourceType"]).model_validate(resource)  # type: ignore[attr-defined]
