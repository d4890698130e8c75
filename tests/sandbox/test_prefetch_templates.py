"""Prefetch templates filled as CDS Hooks 2.0.1 defines their tokens."""

from __future__ import annotations

from typing import Any

import pytest

from sandbox.ehr.prefetch import UnfillableTemplate, fill_template, user_tokens

CONTEXT: dict[str, Any] = {
    "userId": "Practitioner/doc-1",
    "patientId": "pat-1",
    "encounterId": "enc-9",
    "selections": ["MedicationRequest/m1"],
    "draftOrders": {"resourceType": "Bundle", "entry": []},
}
USERS = user_tokens("Practitioner/doc-1")


@pytest.mark.parametrize(
    ("template", "query"),
    [
        ("Patient/{{context.patientId}}", "Patient/pat-1"),
        (
            "Observation?patient={{context.patientId}}&code=http://loinc.org|751-8&_sort=-date&_count=50",
            "Observation?patient=pat-1&code=http://loinc.org|751-8&_sort=-date&_count=50",
        ),
        ("Encounter/{{context.encounterId}}", "Encounter/enc-9"),
        ("{{context.userId}}", "Practitioner/doc-1"),
        ("Practitioner/{{userPractitionerId}}", "Practitioner/doc-1"),
        ("Condition?patient={{ context.patientId }}", "Condition?patient=pat-1"),
        (
            "Observation?date=ge2024-01-01&patient={{context.patientId}}",
            "Observation?date=ge2024-01-01&patient=pat-1",
        ),
    ],
)
def test_context_and_user_tokens_are_replaced(template: str, query: str) -> None:
    """Root-level context fields and the user's ids fill their tokens; the rest stays as written."""
    assert query == fill_template(template, CONTEXT, USERS)


@pytest.mark.parametrize(
    ("template", "context", "reason"),
    [
        ("MedicationRequest?_id={{context.selections}}", CONTEXT, "root-level primitive"),
        ("Bundle/{{context.draftOrders.id}}", CONTEXT, "root-level primitive"),
        ("Encounter/{{context.encounterId}}", {**CONTEXT, "encounterId": None}, "no encounterId"),
        ("PractitionerRole/{{userPractitionerRoleId}}", CONTEXT, "not a PractitionerRole"),
        ("Patient/{{patientId}}", CONTEXT, "not a CDS Hooks prefetch token"),
        ("http://elsewhere.example/fhir/Patient/{{context.patientId}}", CONTEXT, "relative to the FHIR base"),
        ("Patient/{{context.patientId}", CONTEXT, "unbalanced"),
    ],
)
def test_a_template_the_call_cannot_fill_is_unfillable(
    template: str, context: dict[str, Any], reason: str
) -> None:
    """Tokens with no value here leave the key out of prefetch (the service then fetches it itself)."""
    with pytest.raises(UnfillableTemplate, match=reason):
        fill_template(template, context, user_tokens(str(context["userId"])))


def test_the_user_tokens_follow_the_type_of_the_user() -> None:
    """A Practitioner user has userPractitionerId only; a PractitionerRole user userPractitionerRoleId."""
    assert user_tokens("Practitioner/doc-1") == {"userPractitionerId": "doc-1"}
    assert user_tokens("PractitionerRole/r2") == {"userPractitionerRoleId": "r2"}
    assert user_tokens("") == {}
