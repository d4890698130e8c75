"""The subject rule: only the patient of the call's resources are read, in every reference form."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from fhir_mappings.assessment import assess
from fhir_mappings.config import load_mapping_config
from fhir_mappings.medications import DrugTable, find_checkpoint_orders
from fhir_mappings.scope import DiagnosisTable, Scope, assess_scope
from fhir_mappings.subjects import CallPatient, SubjectRule, Verdict, for_patient, patients_named
from tests.builders import IG_COUNT, NEUT, observation

AT = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)
EHR = "https://ehr.example/fhir"
P1 = CallPatient("p1", EHR)
CONFIG = load_mapping_config()


@pytest.mark.parametrize(
    ("reference", "verdict"),
    [
        ({"reference": "Patient/p1"}, Verdict.OWN),
        ({"reference": "Patient/p1/_history/3"}, Verdict.OWN),
        ({"reference": "https://ehr.example/fhir/Patient/p1"}, Verdict.OWN),
        ({"reference": "https://EHR.example:443/fhir/Patient/p1/_history/2"}, Verdict.OWN),
        ({"reference": "https://ehr.example/fhir/Patient/p1/"}, Verdict.UNTIED),  # not a literal reference
        ({"reference": "urn:uuid:aaaa-own"}, Verdict.OWN),  # resolves through the Bundle's Patient
        ({"reference": "Patient/p2"}, Verdict.FOREIGN),
        ({"reference": "https://ehr.example/fhir/Patient/p2"}, Verdict.FOREIGN),
        ({"reference": "https://other.example/fhir/Patient/p1"}, Verdict.FOREIGN),  # same id elsewhere
        ({"reference": "urn:uuid:bbbb-other"}, Verdict.FOREIGN),
        ({"reference": "urn:uuid:cccc-unknown"}, Verdict.UNTIED),  # resolves to nothing sent
        ({"reference": "Group/g1"}, Verdict.UNTIED),
        ({"reference": "Patient/p1", "type": "Group"}, Verdict.UNTIED),
        ({"reference": "p1"}, Verdict.UNTIED),  # a bare id is no literal reference
        ({"reference": "#pat"}, Verdict.UNTIED),
        ({"identifier": {"system": "urn:mrn", "value": "123"}}, Verdict.UNTIED),
        ({"display": "Ben Demo-One"}, Verdict.UNTIED),
        ({"reference": ""}, Verdict.UNTIED),
        ("Patient/p1", Verdict.UNTIED),  # not a Reference object
        (None, Verdict.UNTIED),
    ],
)
def test_each_reference_form_is_judged_against_the_patient_of_the_call(
    reference: Any, verdict: Verdict
) -> None:
    """Relative, absolute, versioned and urn:uuid references resolve; anything else is untied."""
    sent = [
        ({"resourceType": "Patient", "id": "p1"}, "urn:uuid:aaaa-own"),
        ({"resourceType": "Patient", "id": "p2"}, "urn:uuid:bbbb-other"),
    ]
    assert SubjectRule(P1, sent).reference(reference) is verdict


def test_without_a_known_server_an_absolute_reference_is_judged_by_its_type_and_id() -> None:
    """A file read by ``ichis score`` names no server: the Patient's id decides."""
    rule = SubjectRule(CallPatient("p1"))
    assert rule.reference({"reference": "https://any.example/fhir/Patient/p1"}) is Verdict.OWN


def foreign_and_own() -> list[tuple[dict[str, Any], str | None]]:
    return [
        (observation("n-own", NEUT, "5.0", patient="Patient/p1"), None),
        (observation("i-own", IG_COUNT, "0.02", patient="Patient/p1"), None),
        (observation("n-other", NEUT, "12.0", patient="Patient/p2", effective="2024-03-01T09:00:00Z"), None),
        (
            observation("i-other", IG_COUNT, "0.20", patient="Patient/p2", effective="2024-03-01T09:00:00Z"),
            None,
        ),
    ]


def test_another_patients_results_are_never_scored_and_are_counted() -> None:
    """A patient whose own counts give IChIS 0 stays at 0 beside another patient's IChIS 2."""
    assessment = assess(foreign_and_own(), AT, CONFIG, patient=P1)
    assert assessment.result.score == 0
    assert assessment.subjects.foreign == ("Observation/n-other", "Observation/i-other")
    assert "2 results of another patient were ignored" in "\n".join(assessment.reasons)


def test_results_without_a_subject_are_not_used() -> None:
    bare = observation("n-bare", NEUT, "12.0")
    del bare["subject"]
    assessment = assess([(bare, None)], AT, CONFIG, patient=P1)
    assert (assessment.result.status.value, assessment.subjects.untied) == (
        "unavailable",
        ("Observation/n-bare",),
    )
    assert "1 result without a subject that resolves to this patient was not used" in "\n".join(
        assessment.reasons
    )


def test_a_result_contained_in_a_report_takes_the_reports_subject_unless_it_names_its_own() -> None:
    """Contained results without a subject are the report's; one naming another patient is not."""
    own = {**observation("n", NEUT, "9.5"), "id": "n"}
    del own["subject"]
    other = {**observation("i", IG_COUNT, "0.20", patient="Patient/p2"), "id": "i"}
    report = {
        "resourceType": "DiagnosticReport",
        "id": "dr1",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "57021-8"}]},
        "subject": {"reference": "Patient/p1"},
        "contained": [own, other],
        "result": [{"reference": "#n"}, {"reference": "#i"}],
    }
    assessment = assess([(report, None)], AT, CONFIG, patient=P1)
    assert assessment.result.parts[next(iter(assessment.result.parts))].points == 1
    assert (assessment.result.lower, assessment.result.upper) == (1, 2)
    assert assessment.subjects.foreign == ("DiagnosticReport/dr1#i",)


def test_a_report_of_another_patient_brings_none_of_its_results() -> None:
    inner = {**observation("n", NEUT, "12.0"), "id": "n"}
    del inner["subject"]
    report = {
        "resourceType": "DiagnosticReport",
        "id": "dr2",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "57021-8"}]},
        "subject": {"reference": "Patient/p2"},
        "contained": [inner],
        "result": [{"reference": "#n"}],
    }
    assessment = assess([(report, None)], AT, CONFIG, patient=P1)
    assert (assessment.result.status.value, assessment.subjects.foreign) == (
        "unavailable",
        ("DiagnosticReport/dr2",),
    )


def order(oid: str, subject: dict[str, Any] | None) -> dict[str, Any]:
    request: dict[str, Any] = {
        "resourceType": "MedicationRequest",
        "id": oid,
        "status": "draft",
        "intent": "order",
        "medicationCodeableConcept": {"text": "Keytruda 200 mg"},
    }
    if subject is not None:
        request["subject"] = subject
    return request


@pytest.mark.parametrize(
    ("subject", "found"),
    [
        ({"reference": "Patient/p1"}, ["pembrolizumab"]),
        ({"reference": f"{EHR}/Patient/p1"}, ["pembrolizumab"]),
        ({"reference": "Patient/p2"}, []),
        (None, []),
    ],
)
def test_a_draft_order_of_another_patient_is_never_this_patients_order(
    subject: dict[str, Any] | None, found: list[str]
) -> None:
    orders = find_checkpoint_orders([(order("mr1", subject), None)], DrugTable(), patient=P1)
    assert [o.drug for o in orders] == found


def test_another_patients_lung_cancer_does_not_put_this_patient_in_scope() -> None:
    condition = {
        "resourceType": "Condition",
        "id": "c-other",
        "subject": {"reference": "Patient/p2"},
        "code": {"coding": [{"system": "http://snomed.info/sct", "code": "254637007"}]},
    }
    assert assess_scope([(condition, None)], DiagnosisTable(), patient=P1).scope is Scope.UNKNOWN


def test_resources_that_are_not_about_a_patient_pass_unchanged() -> None:
    medication = {"resourceType": "Medication", "id": "m1"}
    check = for_patient([(medication, None)], P1)
    assert (check.kept, check.foreign, check.untied) == (((medication, None),), (), ())


@pytest.mark.parametrize(
    ("entries", "named"),
    [
        ([({"resourceType": "Patient", "id": "p1"}, None)], {"p1"}),
        ([(observation("n", NEUT, "5", patient="Patient/p1"), None)], {"p1"}),
        (
            [(observation("n", NEUT, "5", patient="https://x.example/fhir/Patient/p1/_history/1"), None)],
            {"p1"},
        ),
        (
            [
                ({"resourceType": "Patient"}, "urn:uuid:1"),
                (observation("n", NEUT, "5", patient="urn:uuid:1"), None),
            ],
            {"urn:uuid:1"},
        ),
        (
            [
                (observation("a", NEUT, "5", patient="Patient/p1"), None),
                (observation("b", NEUT, "5", patient="Patient/p2"), None),
            ],
            {"p1", "p2"},
        ),
    ],
)
def test_a_file_names_its_patients_by_patient_resources_and_subjects(
    entries: list[tuple[dict[str, Any], str | None]], named: set[str]
) -> None:
    assert patients_named(entries) == named
