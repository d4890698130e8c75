"""ICIS runs only on cut-offs a site configures; none are shipped."""

from __future__ import annotations

from decimal import Decimal

import pytest

from fhir_mappings.config import ConfigurationError, load_mapping_config
from ichis.icis import IcisValue, score_icis

SITE = {
    "icis": {
        name: {
            "unit": unit,
            "bands": [{"above": a, "points": 1}, {"above": b, "points": 2}, {"above": c, "points": 4}],
        }
        for name, unit, a, b, c in [
            ("neut_sfl", "ch", "49", "50", "51"),
            ("delta_he", "pg", "0", "1", "2"),
            ("neutrophils", "/uL", "9000", "12000", "15000"),
            ("as_lymp", "/uL", "0", "10", "20"),
            ("immature_granulocytes", "/uL", "80", "160", "320"),
        ]
    }
}


def test_no_icis_without_site_cutoffs() -> None:
    """The published cut-off table is not available to us, so nothing is invented."""
    assert load_mapping_config().icis is None


def test_configured_icis_sums_band_points() -> None:
    config = load_mapping_config(SITE).icis
    assert config is not None
    values = {
        "neut_sfl": IcisValue(Decimal("50.5")),  # 2
        "delta_he": IcisValue(Decimal("-0.4")),  # 0
        "neutrophils": IcisValue(Decimal("16000")),  # 4
        "as_lymp": IcisValue(Decimal("0")),  # 0
        "immature_granulocytes": IcisValue(Decimal("90")),  # 1
    }
    result = score_icis(config, values)
    assert (result.score, result.lower, result.upper) == (7, 7, 7)


def test_a_missing_icis_parameter_widens_the_bounds() -> None:
    config = load_mapping_config(SITE).icis
    assert config is not None
    result = score_icis(config, {"neutrophils": IcisValue(Decimal("16000"))})
    assert result.score is None
    assert (result.lower, result.upper) == (4, 4 + 4 * 4)
    assert "neut_sfl" in result.missing


@pytest.mark.parametrize(
    ("site", "message"),
    [
        ({"icis": {"neut_sfl": {"unit": "ch", "bands": [{"above": "1", "points": 1}]}}}, "missing"),
        (
            {"icis": {n: {"unit": "x", "bands": [{"above": 0.5, "points": 1}]} for n in SITE["icis"]}},
            "string",
        ),
        (
            {
                "icis": {
                    n: {"unit": "x", "bands": [{"above": "2", "points": 1}, {"above": "1", "points": 2}]}
                    for n in SITE["icis"]
                }
            },
            "increase",
        ),
    ],
)
def test_bad_icis_configuration_is_refused_with_a_clear_message(site: dict, message: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(ConfigurationError, match=message):
        load_mapping_config(site)
