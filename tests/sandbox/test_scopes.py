"""SMART scopes: what is granted, and what a token may read through the FHIR endpoint."""

from __future__ import annotations

from typing import Any

import pytest

from sandbox.ehr.access import (
    Access,
    check_request,
    filter_response,
    grant_scopes,
    interaction_of,
    parse_scope,
)
from sandbox.ehr.errors import Forbidden, NotSupported

REGISTERED = ["launch", "openid", "fhirUser", "patient/*.rs", "user/Practitioner.rs"]
PATIENT_TOKEN = Access.from_scope("patient/Patient.rs patient/Observation.rs patient/Medication.r", "p1")
USER_TOKEN = Access.from_scope("user/Observation.rs", None)


@pytest.mark.parametrize(
    ("scope", "parsed"),
    [
        ("patient/Observation.rs", ("patient", "Observation", "rs", None)),
        ("user/*.cruds", ("user", "*", "cruds", None)),
        ("patient/Observation.read", ("patient", "Observation", "rs", None)),  # v1 read is v2 rs
        ("patient/*.*", ("patient", "*", "cruds", None)),
        (
            "patient/Observation.rs?category=laboratory",
            ("patient", "Observation", "rs", "category=laboratory"),
        ),
        ("patient/Observation.sr", None),  # out of order: undefined
        ("patient/Observation.dus", None),
        ("launch/patient", None),
        ("openid", None),
    ],
)
def test_scopes_parse_by_the_smart_v2_grammar(scope: str, parsed: tuple[Any, ...] | None) -> None:
    """Resource scopes parse with v1 suffixes translated; everything else is not a resource scope."""
    result = parse_scope(scope)
    actual = (
        None if result is None else (result.context, result.resource_type, result.permissions, result.query)
    )
    assert parsed == actual


@pytest.mark.parametrize(
    ("requested", "denied", "granted"),
    [
        (
            "launch openid fhirUser patient/Observation.rs",
            (),
            "launch openid fhirUser patient/Observation.rs",
        ),
        ("patient/Observation.cruds", (), "patient/Observation.rs"),
        ("patient/Observation.read", (), "patient/Observation.read"),
        ("patient/*.rs user/*.rs system/*.rs", (), "patient/*.rs"),
        ("user/Practitioner.r user/Patient.rs", (), "user/Practitioner.r"),
        ("launch offline_access", (), "launch"),
        ("launch patient/Observation.rs", ("patient/Observation.rs",), "launch"),
        ("patient/Observation.rs patient/Observation.rs", (), "patient/Observation.rs"),
        ("patient/Observation.c", (), ""),
    ],
)
def test_the_grant_is_the_registered_subset_less_the_denied(
    requested: str, denied: tuple[str, ...], granted: str
) -> None:
    """Scopes are granted as far as the registration covers them, and never when denied."""
    assert granted == grant_scopes(requested, REGISTERED, denied)


def test_granting_twice_changes_nothing() -> None:
    """The token endpoint re-applies the grant to the code's scope: that must be a no-op."""
    once = grant_scopes("launch patient/*.cruds user/Practitioner.rs", REGISTERED)
    assert once == grant_scopes(once, REGISTERED)


@pytest.mark.parametrize(
    ("method", "path", "query", "kind"),
    [
        ("GET", "Patient/p1", {}, ("read", "Patient", "p1")),
        ("GET", "Observation/o1/_history/2", {}, ("read", "Observation", "o1")),
        ("GET", "Observation", {"patient": ["p1"]}, ("search", "Observation", None)),
        ("POST", "Observation/_search", {}, ("search", "Observation", None)),
        ("GET", "", {"_getpages": ["abc"]}, ("page", None, None)),
    ],
)
def test_read_interactions_are_recognised(
    method: str, path: str, query: dict[str, list[str]], kind: tuple[Any, ...]
) -> None:
    """Reads, searches and HAPI's paging links are the interactions the proxy serves."""
    found = interaction_of(method, [s for s in path.split("/") if s], query)
    assert kind == (found.kind, found.resource_type, found.resource_id)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("PUT", "Patient/p1"),
        ("DELETE", "Observation/o1"),
        ("POST", "Observation"),
        ("GET", "Patient/p1/$everything"),
        ("GET", "Patient/p1/Observation"),
        ("GET", ""),
        ("GET", "Patient/../metadata"),
    ],
)
def test_writes_operations_and_system_calls_are_not_offered(method: str, path: str) -> None:
    """The sandbox's FHIR endpoint is read-only and serves no operations or system-level calls."""
    with pytest.raises(NotSupported):
        interaction_of(method, [s for s in path.split("/") if s], {})


@pytest.mark.parametrize(
    ("path", "query"),
    [
        ("Patient/p1", {}),
        ("Patient", {"_id": ["p1"]}),
        ("Observation", {"patient": ["p1"]}),
        ("Observation", {"subject": ["Patient/p1"], "code": ["751-8"]}),
        ("Observation/o9", {}),  # the resource itself is checked once read
        ("Medication/m1", {}),  # outside every patient's compartment
    ],
)
def test_a_patient_token_may_read_its_patients_data(path: str, query: dict[str, list[str]]) -> None:
    """Reads and searches pinned to the token's patient pass."""
    assert (
        check_request(PATIENT_TOKEN, interaction_of("GET", path.split("/"), query), query) is None
    )  # allowed


@pytest.mark.parametrize(
    ("path", "query", "reason"),
    [
        ("Patient/p2", {}, "another"),
        ("Patient", {}, "_id=p1"),
        ("Observation", {}, "patient=p1"),
        ("Observation", {"patient": ["p2"]}, "names another"),
        ("Observation", {"patient": ["p1,p2"]}, "names another"),
        ("Condition", {"patient": ["p1"]}, "does not permit"),
    ],
)
def test_a_patient_token_may_not_read_other_patients_or_other_types(
    path: str, query: dict[str, list[str]], reason: str
) -> None:
    """Another patient, an unpinned search or a type outside the scopes is Forbidden."""
    with pytest.raises(Forbidden, match=reason):
        check_request(PATIENT_TOKEN, interaction_of("GET", path.split("/"), query), query)


def test_a_user_token_searches_without_a_patient() -> None:
    """User-level scopes carry no compartment: a search needs no patient parameter."""
    assert check_request(USER_TOKEN, interaction_of("GET", ["Observation"], {}), {}) is None  # allowed


def _observation(oid: str, patient: str) -> dict[str, Any]:
    return {"resourceType": "Observation", "id": oid, "subject": {"reference": f"Patient/{patient}"}}


def test_entries_outside_the_compartment_are_dropped_from_a_bundle() -> None:
    """A Bundle keeps the token's patient's resources and loses the rest (and its now wrong total)."""
    bundle = {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": 4,
        "entry": [
            {"resource": _observation("o1", "p1")},
            {"resource": _observation("o2", "p2")},
            {"resource": {"resourceType": "Patient", "id": "p2"}},
            {"resource": {"resourceType": "Condition", "id": "c1", "subject": {"reference": "Patient/p1"}}},
            {"resource": {"resourceType": "OperationOutcome", "issue": []}},
        ],
    }
    kept = filter_response(PATIENT_TOKEN, bundle)
    assert [e["resource"].get("id") for e in kept["entry"]] == ["o1", None]
    assert "total" not in kept


def test_a_single_resource_of_another_patient_is_forbidden() -> None:
    """Reading an Observation by id still checks whose it is."""
    assert filter_response(PATIENT_TOKEN, _observation("o1", "p1"))["id"] == "o1"
    elsewhere = {**_observation("o2", "p2"), "subject": {"reference": "http://other.example/fhir/Patient/p2"}}
    with pytest.raises(Forbidden):
        filter_response(PATIENT_TOKEN, elsewhere)
