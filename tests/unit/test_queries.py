"""The blood-count search is written once: sent by the SMART app, declared as a prefetch template."""

from __future__ import annotations

from datetime import date

from fhir_mappings.queries import condition_search, observation_search, observation_template

CODES = ["http://loinc.org|751-8", "http://lab.example|IG#"]


def test_the_apps_search_encodes_the_patient_and_what_would_break_a_code_and_is_bounded_by_date() -> None:
    assert observation_search("a/b", CODES, since=date(2024, 3, 1)) == (
        "Observation?patient=a%2Fb&code=http://loinc.org|751-8,http://lab.example|IG%23"
        "&date=ge2024-03-01&_sort=-date&_count=100"
    )
    assert condition_search("a/b") == "Condition?patient=a%2Fb&_count=100"


def test_the_template_asks_the_same_newest_first_with_the_patient_left_to_the_ehr() -> None:
    """A site code with '#' is encoded: the EHR sends the template as it is, and '#' ends a URL."""
    assert observation_template(CODES, count=50) == (
        "Observation?patient={{context.patientId}}&code=http://loinc.org|751-8,http://lab.example|IG%23"
        "&_sort=-date&_count=50"
    )
