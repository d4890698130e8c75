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


def test_every_service_setting_is_in_the_configuration_reference() -> None:
    from dataclasses import fields

    from cds_service.settings import Settings

    for field in fields(Settings):
        if field.name == "site":
            continue
        assert f"| `{field.name}` | `ICHIS_{field.name.upper()}`" in README, field.name


def test_the_worked_hospital_example_is_a_valid_configuration(tmp_path: Path) -> None:
    from cds_service.settings import build_runtime, load_settings

    example = re.search(r"### A worked example: a hospital.*?```toml\n(.*?)```", README, re.S)
    assert example is not None
    site = tmp_path / "site.toml"
    site.write_text(example[1])
    runtime = build_runtime(load_settings({"config_file": str(site)}, environ={}))
    assert runtime.settings.public_base_url == "https://cds.st-example.org"
    assert [issuer.iss for issuer in runtime.issuers] == ["https://ehr.st-example.org"]
    assert runtime.mapping.lookup("https://lab.st-example.org/fhir/CodeSystem/local", "IG#") is not None
    assert (
        runtime.mapping.lookup("https://lab.st-example.org/fhir/CodeSystem/sysmex-xn", "NEUT-SFL") is not None
    )
