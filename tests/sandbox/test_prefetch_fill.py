"""Prefetch filled against a real HAPI server, with each outcome CDS Hooks 2.0.1 defines."""

from __future__ import annotations

import pytest

from sandbox.ehr.access import Access
from sandbox.ehr.prefetch import PrefetchResult, fill_prefetch
from sandbox.ehr.upstream import Upstream

pytestmark = pytest.mark.integration

PROXY = "http://ehr.example/fhir"
CONTEXT = {
    "userId": "Practitioner/ichis-sandbox-clinician",
    "patientId": "ehr-test-a",
    "encounterId": "gone-1",
}
SCOPE = "patient/Patient.rs patient/Observation.rs patient/Encounter.rs"


def fill(hapi: str, templates: dict[str, str], context: dict[str, str] | None = None) -> PrefetchResult:
    return fill_prefetch(
        templates, context or CONTEXT, Access.from_scope(SCOPE, "ehr-test-a"), Upstream(hapi, 10), PROXY
    )


def outcomes(result: PrefetchResult) -> dict[str, str]:
    return {note.key: note.outcome for note in result.notes}


def test_reads_and_searches_come_back_as_resource_and_bundle_with_proxy_urls(hapi: str) -> None:
    """A read gives the resource, a search its Bundle; URLs name the EHR's FHIR endpoint, not HAPI."""
    result = fill(
        hapi,
        {"patient": "Patient/{{context.patientId}}", "labs": "Observation?patient={{context.patientId}}"},
    )
    assert outcomes(result) == {"patient": "resource", "labs": "bundle"}
    assert result.values["patient"]["id"] == "ehr-test-a"
    labs = result.values["labs"]
    assert {e["resource"]["id"] for e in labs["entry"]} == {
        "ehr-a-neut",
        "ehr-a-ig",
        "ehr-a-neut-old",
        "ehr-a-panel",
    }
    assert all(e["fullUrl"].startswith(f"{PROXY}/Observation/") for e in labs["entry"])


def test_a_search_with_no_match_is_an_empty_bundle_and_a_missing_read_is_null(hapi: str) -> None:
    """No data: an empty searchset for a search, null for a read (the key is present either way)."""
    result = fill(
        hapi,
        {
            "nothing": "Observation?patient={{context.patientId}}&code=0000-0",
            "encounter": "Encounter/{{context.encounterId}}",
        },
    )
    assert outcomes(result) == {"nothing": "bundle", "encounter": "null"}
    assert result.values["nothing"].get("entry", []) == []
    assert result.values["encounter"] is None


def test_a_query_the_service_token_would_not_be_allowed_gets_an_operation_outcome(hapi: str) -> None:
    """Prefetch holds what the service could read itself: out of scope or compartment: OperationOutcome."""
    result = fill(
        hapi,
        {
            "conditions": "Condition?patient={{context.patientId}}",
            "everyone": "Observation?code=751-8",
            "user": "{{context.userId}}",
        },
    )
    assert set(outcomes(result).values()) == {"operation-outcome"}
    assert all(value["resourceType"] == "OperationOutcome" for value in result.values.values())


def test_a_query_hapi_refuses_gets_hapis_operation_outcome(hapi: str) -> None:
    """A search HAPI rejects (an unknown parameter) passes HAPI's own OperationOutcome on."""
    result = fill(hapi, {"bad": "Observation?patient={{context.patientId}}&no-such-parameter=1"})
    assert outcomes(result) == {"bad": "operation-outcome"}
    assert result.values["bad"]["resourceType"] == "OperationOutcome"


def test_unfillable_templates_and_an_unreachable_server_leave_the_key_out(hapi: str) -> None:
    """The key is omitted when its tokens have no value or the FHIR server cannot be reached."""
    result = fill(hapi, {"role": "PractitionerRole/{{userPractitionerRoleId}}"})
    assert result.values == {}
    assert outcomes(result) == {"role": "omitted"}
    unreachable = fill_prefetch(
        {"patient": "Patient/{{context.patientId}}"},
        CONTEXT,
        Access.from_scope(SCOPE, "ehr-test-a"),
        Upstream("http://127.0.0.1:9/fhir", 2),
        PROXY,
    )
    assert unreachable.values == {}
    assert unreachable.notes[0].outcome == "omitted"
