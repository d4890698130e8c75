"""The [cohort] section of the site configuration: defaults, overrides, and errors that name the setting."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest

from cohort.definition import EventRule, load_definition
from cohort.errors import CohortConfigError

CUTOFF = date(2023, 8, 31)
SNOMED = "http://snomed.info/sct"


def test_the_lab_codes_come_from_the_sites_mapping_tables() -> None:
    """A code a site adds to a concept is filtered on by the engines too (one code list, not two)."""
    site = {
        "lab_codes": {"immature_granulocytes": {"codes": [{"system": "urn:lab", "code": "IG#", "rank": 0}]}}
    }
    codes = load_definition(site, CUTOFF).lab_codes()
    assert {("urn:lab", "IG#"), ("http://loinc.org", "751-8")} <= set(codes)


def test_research_codes_are_expanded_under_the_sites_code_systems() -> None:
    """NEUT-SFL and friends only match under the analyser systems the site lists."""
    site = {"research_code_systems": ["urn:sysmex"]}
    assert ("urn:sysmex", "NEUT-SFL") in load_definition(site, CUTOFF).lab_codes()
    assert all(system != "urn:sysmex" for system, _ in load_definition({}, CUTOFF).lab_codes())


def test_drug_codes_include_every_spelling_of_a_system() -> None:
    """An alias of the RxNorm system URI is searched for as well as the canonical one."""
    definition = load_definition({}, CUTOFF)
    aliases = [a for a, c in definition.drugs.system_aliases.items() if "rxnorm" in c]
    codes = set(definition.drug_codes())
    assert all((alias, "1547545") in codes for alias in aliases)


def test_defaults_read_progression_from_mcode_disease_status() -> None:
    """Without configuration: progression is mCODE 'condition worsened'; death from Patient.deceased."""
    definition = load_definition({}, CUTOFF)
    (rule,) = definition.progression_rules
    assert ("Observation", ("http://loinc.org", "97509-4") in rule.codes, rule.values) == (
        "Observation",
        True,
        frozenset({(SNOMED, "271299001")}),
    )
    assert (
        definition.death_from_patient,
        definition.death_rules,
        definition.follow_up,
    ) == (True, (), "cutoff")


def test_a_site_replaces_the_event_rules() -> None:
    """[[cohort.progression.rules]] and [[cohort.death.rules]] replace the defaults."""
    site = {
        "cohort": {
            "follow_up": "last-contact",
            "progression": {
                "rules": [{"resource": "Condition", "codes": [{"system": "urn:x", "code": "PD"}]}]
            },
            "death": {"rules": [{"codes": [{"system": SNOMED, "code": "419620001"}]}]},
        }
    }
    definition = load_definition(site, CUTOFF)
    expected = (
        (EventRule("Condition", frozenset({("urn:x", "PD")})),),
        (EventRule("Observation", frozenset({(SNOMED, "419620001")})),),
        "last-contact",
    )
    assert expected == (definition.progression_rules, definition.death_rules, definition.follow_up)


@pytest.mark.parametrize(
    ("cohort", "setting"),
    [
        ({"follow_up": "forever"}, "cohort.follow_up"),
        ({"dose_sources": ["Procedure"]}, "cohort.dose_sources"),
        (
            {"progression": {"rules": [{"resource": "Encounter", "codes": [{"system": "s", "code": "c"}]}]}},
            "cohort.progression.rules[1].resource",
        ),
        ({"progression": {"rules": [{"codes": []}]}}, "cohort.progression.rules[1].codes"),
        (
            {
                "death": {
                    "rules": [
                        {
                            "resource": "Condition",
                            "codes": [{"system": "s", "code": "c"}],
                            "values": [{"system": "s", "code": "v"}],
                        }
                    ]
                }
            },
            "cohort.death.rules[1].values",
        ),
        ({"ecog_window_days": -1}, "cohort.ecog_window_days"),
        ({"histology": {"squamous": [{"code": "x"}]}}, "cohort.histology.squamous"),
    ],
)
def test_a_bad_setting_is_named_in_the_error(cohort: dict[str, Any], setting: str) -> None:
    """Each mistake raises CohortConfigError whose message starts with the setting's name."""
    with pytest.raises(CohortConfigError) as error:
        load_definition({"cohort": cohort}, CUTOFF)
    assert str(error.value).startswith(setting)


def test_a_bad_mapping_setting_is_a_cohort_configuration_error() -> None:
    """Errors of the shared mapping tables reach the cohort CLI in its own exception family."""
    with pytest.raises(CohortConfigError):
        load_definition({"baseline": {"lookback_days": 0}}, CUTOFF)
