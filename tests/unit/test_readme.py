"""The README's examples are run, so they stay true."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from fhir_mappings.config import load_mapping_config
from fhir_mappings.medications import DrugTable

README = (Path(__file__).parent.parent.parent / "README.md").read_text()


def test_the_configuration_example_loads() -> None:
    example = re.search(r"## Configuration.*?```toml\n(.*?)```", README, re.S)
    assert example is not None
    site = tomllib.loads(example[1])
    config = load_mapping_config(site)
    assert config.lookup("http://hospital.example/lab", "IG#") is not None
    assert DrugTable(site).codes[("http://hospital.example/formulary", "ONC-77")] == "pembrolizumab"
