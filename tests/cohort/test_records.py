"""One patient's resources become one row by the documented rules (pure: no engine involved)."""

from __future__ import annotations

import json
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import pytest

from cohort.covariates import age_in_years, ecog_value, pdl1_category
from cohort.dates import EventDate, event_date
from cohort.definition import CohortDefinition, load_definition
from cohort.doses import DoseCandidate, FirstDose, first_dose
from cohort.outcomes import survival
from cohort.records import patient_row
from fhir_mappings.assessment import assess
from fhir_mappings.subjects import CallPatient
from tests.cohort.conftest import CUTOFF, LOINC, SNOMED, administration, count, rxnorm

D0 = date(2022, 3, 2)


def dumps(resource: dict[str, Any]) -> str:
    return json.dumps(resource, default=lambda d: float(d) if isinstance(d, Decimal) else str(d))


def candidate(resource: dict[str, Any], medication: dict[str, Any] | None = None) -> DoseCandidate:
    time = resource.get("effectiveDateTime") or resource.get("authoredOn")
    return DoseCandidate(
        resource["resourceType"], time, dumps(resource), dumps(medication) if medication else None
    )


def dose(at: str = "2022-03-02T10:30:00+09:00") -> FirstDose:
    moment = datetime.fromisoformat(at)
    return FirstDose("p1", moment, moment.date(), at, "pembrolizumab", "PD-1", "x", "RxNorm")


@pytest.mark.parametrize(
    ("deaths", "progressions", "expected"),
    [
        # (pfs_days, pfs_event, os_days, os_event)
        ([], [], (547, 0, 547, 0)),
        ([date(2022, 9, 1)], [], (183, 1, 183, 1)),
        ([], [date(2022, 5, 1)], (60, 1, 547, 0)),
        ([date(2022, 9, 1)], [date(2022, 5, 1)], (60, 1, 183, 1)),
        ([], [D0], (547, 0, 547, 0)),  # a scan on the day of the dose is the progression that led to it
        ([D0], [], (0, 1, 0, 1)),  # death on the day of the dose counts
        ([date(2024, 1, 1)], [date(2023, 12, 1)], (547, 0, 547, 0)),  # events after the cut-off are unknown
        # A death before the dose is a data error: no event, and no longer at risk from a day unknown.
        ([date(2021, 1, 1)], [], (None, None, None, None)),
        ([date(2021, 1, 1)], [date(2022, 5, 1)], (60, 1, None, None)),
    ],
)
def test_survival_times_follow_the_paper_definitions(
    deaths: list[date], progressions: list[date], expected: tuple[int | None, ...]
) -> None:
    """PFS ends at progression or death, OS at death, both censored at the end of follow-up."""
    times = survival(
        D0,
        deaths=[EventDate.on(d) for d in deaths],
        progressions=[EventDate.on(d) for d in progressions],
        end=CUTOFF,
    )
    assert expected == (times.pfs_days, times.pfs_event, times.os_days, times.os_event)


def on(text: str) -> EventDate:
    found = event_date(text)
    assert found is not None
    return found


@pytest.mark.parametrize(
    ("deaths", "progressions", "expected"),
    [
        # (pfs_days, pfs_event, os_days, os_event): the dose is on 2022-03-02, the cut-off 2023-08-31.
        # A death known only by its month cannot give a time: OS and PFS unknown, not censored.
        (["2022-09"], [], (None, None, None, None)),
        # ... but a progression on a known day before that month still ends PFS.
        (["2022-09"], ["2022-05-01"], (60, 1, None, None)),
        # A month-only death with the day given elsewhere: the day counts.
        (["2022-09", "2022-09-14"], [], (196, 1, 196, 1)),
        # A progression known only by its month: PFS unknown, OS still censored.
        ([], ["2022-05"], (None, None, 547, 0)),
        # ... unless a known death came first.
        (["2022-04-20"], ["2022-05"], (49, 1, 49, 1)),
        # ... or it is a later progression than one on a known day, or holds that day.
        ([], ["2022-05-01", "2022-07"], (60, 1, 547, 0)),
        ([], ["2022-05-01", "2022-05"], (60, 1, 547, 0)),
        # A month wholly before a known day may be an earlier progression.
        ([], ["2022-05", "2022-06-10"], (None, None, 547, 0)),
        # A month that holds the day of the dose: before or after it, nobody knows.
        ([], ["2022-03"], (None, None, 547, 0)),
        # Months wholly before the dose or after the cut-off change nothing.
        ([], ["2022-02", "2023-09"], (547, 0, 547, 0)),
        # A year is a span too.
        (["2023"], [], (None, None, None, None)),
    ],
)
def test_an_event_dated_only_to_the_month_or_year_leaves_its_endpoint_unknown(
    deaths: list[str], progressions: list[str], expected: tuple[int | None, ...]
) -> None:
    """Registries send dates as "2023-05" (FHIR allows it); a time is never guessed from them."""
    times = survival(
        D0, deaths=[on(d) for d in deaths], progressions=[on(p) for p in progressions], end=CUTOFF
    )
    assert expected == (times.pfs_days, times.pfs_event, times.os_days, times.os_event)
    if None in expected:
        assert times.notes


def test_a_death_without_a_date_leaves_overall_survival_unknown() -> None:
    """deceasedBoolean without a date cannot give a time, so OS stays empty rather than censored;
    PFS too, unless a progression came first (the patient was alive at it)."""
    times = survival(D0, deaths=[], progressions=[], end=CUTOFF, death_date_unknown=True)
    assert (times.pfs_days, times.pfs_event, times.os_days, times.os_event) == (None, None, None, None)
    progressed = survival(
        D0, deaths=[], progressions=[EventDate.on(date(2022, 5, 1))], end=CUTOFF, death_date_unknown=True
    )
    assert (progressed.pfs_days, progressed.pfs_event, progressed.os_days) == (60, 1, None)


@pytest.mark.parametrize(
    ("value", "comparator", "expected"),
    [
        ("0", None, "<1%"),
        ("0.9", None, "<1%"),
        ("1", None, "1-49%"),
        ("49.9", None, "1-49%"),
        ("50", None, ">=50%"),
        ("100", None, ">=50%"),
        ("1", "<", "<1%"),
        ("50", "<", None),  # could be below 1% or 1-49%
        ("50", ">=", ">=50%"),
        ("10", ">", None),
    ],
)
def test_pdl1_tps_falls_into_the_papers_three_groups(
    value: str, comparator: str | None, expected: str | None
) -> None:
    """TPS cut-offs of 1% and 50% (no, low, high expression), and bounds that leave the group open."""
    assert expected == pdl1_category(Decimal(value), comparator)


@pytest.mark.parametrize(
    ("resource", "expected"),
    [
        ({"valueInteger": 1}, 1),
        ({"valueQuantity": {"value": Decimal(2)}}, 2),
        ({"valueCodeableConcept": {"coding": [{"system": LOINC, "code": "LA9625-0"}]}}, 3),
        ({"valueInteger": 7}, None),
        ({"valueString": "1"}, None),
    ],
)
def test_ecog_is_read_from_integers_quantities_and_loinc_answers(
    resource: dict[str, Any], expected: int | None
) -> None:
    """mCODE sends valueInteger; LOINC answer list LL529-9 codes are read too; out-of-range is not ECOG."""
    assert expected == ecog_value(resource)


@pytest.mark.parametrize(
    ("birth", "on", "expected"),
    [(date(1950, 3, 2), D0, 72), (date(1950, 3, 3), D0, 71), (date(1952, 2, 29), date(2022, 2, 28), 69)],
)
def test_age_is_counted_in_whole_years_at_the_first_dose(birth: date, on: date, expected: int) -> None:
    """A birthday not yet reached on the day of the dose does not count."""
    assert expected == age_in_years(birth, on)


def test_the_first_dose_is_the_earliest_confirmed_administration(definition: CohortDefinition) -> None:
    """Administrations come before orders; a drug that is not a checkpoint inhibitor is passed over."""
    carboplatin = administration("a0", "Patient/p1", "2022-01-01T10:00:00+09:00", **rxnorm("40048"))
    first = administration("a1", "Patient/p1", "2022-03-02T10:30:00+09:00", **rxnorm("1547545"))
    later = administration("a2", "Patient/p1", "2022-03-23T10:30:00+09:00", **rxnorm("1547545"))
    order = {
        "resourceType": "MedicationRequest",
        "id": "r1",
        "authoredOn": "2022-02-01T09:00:00+09:00",
        **rxnorm("1547545"),
    }
    found = first_dose("p1", [candidate(r) for r in (order, later, carboplatin, first)], definition)
    assert found is not None
    assert (
        found.reference,
        found.agent,
        found.matched_by,
    ) == ("MedicationAdministration/a1", "pembrolizumab", "RxNorm 1547545")


def test_plans_proposals_drafts_and_withdrawn_orders_are_not_a_first_dose(
    definition: CohortDefinition,
) -> None:
    """Without an administration the first signed order counts; a treatment plan made earlier, or an
    order not to give the drug (doNotPerform), does not."""

    def request(rid: str, authored: str, **fields: str) -> dict[str, Any]:
        body = {"resourceType": "MedicationRequest", "id": rid, "status": "active", "intent": "order"}
        return body | {"authoredOn": authored, **rxnorm("1547545")} | fields

    found = first_dose(
        "p1",
        [
            candidate(r)
            for r in (
                request("plan", "2021-12-01T09:00:00+09:00", intent="plan"),
                request("proposal", "2021-12-02T09:00:00+09:00", intent="proposal"),
                request("draft", "2021-12-03T09:00:00+09:00", status="draft"),
                request("withdrawn", "2021-12-04T09:00:00+09:00", status="entered-in-error"),
                request("forbidden", "2021-12-05T09:00:00+09:00") | {"doNotPerform": True},
                request("signed", "2022-01-10T09:00:00+09:00"),
            )
        ],
        definition,
    )
    assert found is not None
    assert found.reference == "MedicationRequest/signed"


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        # Given only after the cut-off: the first dose is after it, so not in the cohort.
        (administration("a1", "Patient/p1", "2024-01-04T10:00:00+09:00", **rxnorm("1547545")), None),
        # Not done: the order was never given.
        (
            administration(
                "a1", "Patient/p1", "2022-03-02T10:00:00+09:00", status="not-done", **rxnorm("1547545")
            ),
            None,
        ),
        # Given later, after one that was not done: that later one is the first dose.
        (
            administration(
                "a1", "Patient/p1", "2022-03-02T10:00:00+09:00", status="completed", **rxnorm("1547545")
            ),
            "MedicationAdministration/a1",
        ),
        # Withdrawn as an error: as if never recorded, so the order counts.
        (
            administration(
                "a1",
                "Patient/p1",
                "2022-03-02T10:00:00+09:00",
                status="entered-in-error",
                **rxnorm("1547545"),
            ),
            "MedicationRequest/r1",
        ),
        # Another drug: the patient's checkpoint-inhibitor administrations are not recorded.
        (
            administration("a1", "Patient/p1", "2022-03-02T10:00:00+09:00", **rxnorm("40048")),
            "MedicationRequest/r1",
        ),
    ],
)
def test_an_order_is_a_first_dose_only_for_a_patient_without_recorded_administrations(
    definition: CohortDefinition, given: dict[str, Any], expected: str | None
) -> None:
    """An order signed before the cut-off is no dose when the administrations say when (or that) it
    was given: after the cut-off, or not at all."""
    order = {
        "resourceType": "MedicationRequest",
        "id": "r1",
        "status": "active",
        "intent": "order",
        "authoredOn": "2022-03-01T09:00:00+09:00",
        **rxnorm("1547545"),
    }
    found = first_dose("p1", [candidate(order), candidate(given)], definition)
    assert (found.reference if found else None) == expected


def test_a_referenced_medication_names_the_drug(definition: CohortDefinition) -> None:
    """medicationReference to a Medication resource is resolved through the engine's join."""
    medication = {"resourceType": "Medication", "id": "m1", "code": {"text": "Opdivo 240 mg"}}
    given = administration(
        "a1", "Patient/p1", "2022-03-02T10:30:00+09:00", medicationReference={"reference": "Medication/m1"}
    )
    found = first_dose("p1", [candidate(given, medication)], definition)
    assert found is not None
    assert found.agent == "nivolumab"


def test_an_order_for_another_drug_gives_no_first_dose(definition: CohortDefinition) -> None:
    """Without a recognised checkpoint inhibitor the patient is not in the cohort."""
    given = administration("a1", "Patient/p1", "2022-03-02T10:30:00+09:00", **rxnorm("40048"))
    assert first_dose("p1", [candidate(given)], definition) is None


def blood(neut: str, ig: str) -> list[tuple[str, str]]:
    when = "2022-03-02T08:00:00+09:00"
    return [
        ("Observation", dumps(count("n", "Patient/p1", "751-8", neut, "10*3/uL", when=when))),
        ("Observation", dumps(count("i", "Patient/p1", "53115-2", ig, "10*3/uL", when=when))),
    ]


def test_the_row_scores_exactly_as_the_service_does(definition: CohortDefinition) -> None:
    """IChIS in the table is the result of fhir_mappings' assess() at the first dose, nothing else."""
    lines = blood("9.00", "0.09")
    row = patient_row(dose(), lines, definition)
    assert row is not None
    expected = assess(
        [(json.loads(text), None) for _, text in lines],
        dose().at,
        definition.mapping,
        patient=CallPatient("p1"),
    ).result
    assert (expected.score, "9000", "90", 0, 1) == (
        row["ichis"],
        row["neutrophils_per_uL"],
        row["ig_per_uL"],
        row["neutrophils_points"],
        row["ig_points"],
    )


def status(day: str, value: str) -> tuple[str, str]:
    return (
        "Observation",
        dumps(
            {
                "resourceType": "Observation",
                "id": f"s{day}",
                "status": "final",
                "code": {"coding": [{"system": LOINC, "code": "97509-4"}]},
                "effectiveDateTime": day,
                "valueCodeableConcept": {"coding": [{"system": SNOMED, "code": value}]},
            }
        ),
    )


def test_progression_is_the_first_worsened_disease_status(definition: CohortDefinition) -> None:
    """mCODE disease status counts as progression only with the value 'condition worsened'."""
    lines = [*blood("4.00", "0.02"), status("2022-04-13", "359746009"), status("2022-05-25", "271299001")]
    row = patient_row(dose(), lines, definition)
    assert row is not None
    assert (date(2022, 5, 25), 84, 1, 0) == (
        row["progression_date"],
        row["pfs_days"],
        row["pfs_event"],
        row["os_event"],
    )


def test_a_site_can_read_progression_and_death_from_conditions() -> None:
    """Configured Condition codes record events; the Patient's deceased date can be switched off."""
    site = {
        "cohort": {
            "progression": {
                "rules": [{"resource": "Condition", "codes": [{"system": "urn:local", "code": "PD"}]}]
            },
            "death": {
                "patient_deceased": False,
                "rules": [{"resource": "Condition", "codes": [{"system": SNOMED, "code": "419620001"}]}],
            },
        }
    }
    definition = load_definition(site, CUTOFF)

    def condition(code: str, system: str, onset: str) -> tuple[str, str]:
        body = {
            "resourceType": "Condition",
            "id": code,
            "code": {"coding": [{"system": system, "code": code}]},
        }
        return ("Condition", dumps(body | {"onsetDateTime": onset}))

    patient = {"resourceType": "Patient", "id": "p1", "deceasedDateTime": "2022-04-01"}
    lines = [
        ("Patient", dumps(patient)),
        condition("PD", "urn:local", "2022-05-01"),
        condition("419620001", SNOMED, "2022-06-01"),
    ]
    row = patient_row(dose(), lines, definition)
    assert row is not None
    assert (date(2022, 5, 1), date(2022, 6, 1), 60, 91) == (
        row["progression_date"],
        row["death_date"],
        row["pfs_days"],
        row["os_days"],
    )


def test_covariates_are_taken_at_the_first_dose(definition: CohortDefinition) -> None:
    """Age, sex, the latest ECOG and PD-L1 before the dose, smoking and histology from Conditions."""
    patient = {"resourceType": "Patient", "id": "p1", "gender": "female", "birthDate": "1955-03-03"}

    def observation(oid: str, code: str, day: str, **value: Any) -> tuple[str, str]:
        body = {"resourceType": "Observation", "id": oid, "status": "final", "effectiveDateTime": day}
        return ("Observation", dumps(body | {"code": {"coding": [{"system": LOINC, "code": code}]}} | value))

    squamous = {
        "resourceType": "Condition",
        "id": "c",
        "code": {"coding": [{"system": SNOMED, "code": "254634000"}]},
    }
    lines = [
        ("Patient", dumps(patient)),
        observation("e1", "89247-1", "2022-01-01", valueInteger=2),  # outside the 30-day window
        observation("e2", "89247-1", "2022-02-28", valueInteger=1),
        observation("p", "83053-9", "2021-11-01", valueQuantity={"value": 60, "unit": "%"}),
        observation(
            "s",
            "72166-2",
            "2022-02-01",
            valueCodeableConcept={"coding": [{"system": SNOMED, "code": "8517006"}]},
        ),
        ("Condition", dumps(squamous)),
    ]
    row = patient_row(dose(), lines, definition)
    assert row is not None
    actual = {
        k: row[k] for k in ("age_years", "sex", "ecog", "pdl1_tps", "pdl1_category", "smoking", "histology")
    }
    expected = {
        "age_years": 66,
        "sex": "female",
        "ecog": 1,
        "pdl1_tps": "60",
        "pdl1_category": ">=50%",
        "smoking": "Former or current",
        "histology": "SqCC",
    }
    assert expected == actual


@pytest.mark.parametrize(
    ("conditions", "detail"),
    [
        # Duplicated problem-list entries: the latest diagnosis wins, whatever the order sent.
        (
            [("254626006", "2022-01-01"), ("254634000", "2021-01-01"), ("254626006", "2019-01-01")],
            "adenocarcinoma",
        ),
        ([("254626006", "2019-01-01"), ("254634000", "2021-01-01")], "squamous"),
        # A later staging code that says only "NSCLC" does not undo the squamous diagnosis.
        ([("254634000", "2021-01-10"), ("423121009", "2022-06-01")], "squamous"),
        ([("423121009", "2022-06-01")], "nsclc_nos"),
    ],
)
def test_histology_is_the_latest_specific_diagnosis(
    definition: CohortDefinition, conditions: list[tuple[str, str]], detail: str
) -> None:
    lines = [
        (
            "Condition",
            dumps(
                {
                    "resourceType": "Condition",
                    "id": f"c{number}",
                    "code": {"coding": [{"system": SNOMED, "code": code}]},
                    "onsetDateTime": onset,
                }
            ),
        )
        for number, (code, onset) in enumerate(conditions)
    ]
    row = patient_row(dose(), lines, definition)
    assert row is not None
    assert row["histology_detail"] == detail


def test_a_diagnosis_filter_leaves_out_patients_without_the_diagnosis() -> None:
    """With cohort.diagnosis_codes set, a patient without such a Condition has no row."""
    site = {"cohort": {"diagnosis_codes": [{"system": SNOMED, "code": "254637007"}]}}
    assert patient_row(dose(), blood("4.0", "0.02"), load_definition(site, CUTOFF)) is None


def test_covariate_codes_configured_under_the_loinc_oid_match_data_coded_http_loinc() -> None:
    """A site may write LOINC as its OID in [cohort]; results coded http://loinc.org still count."""
    oid = "urn:oid:2.16.840.1.113883.6.1"
    site = {"cohort": {"ecog_codes": [{"system": oid, "code": "89247-1"}]}}
    ecog = {
        "resourceType": "Observation",
        "id": "e",
        "status": "final",
        "code": {"coding": [{"system": LOINC, "code": "89247-1"}]},
        "effectiveDateTime": "2022-02-28",
        "valueInteger": 1,
    }
    row = patient_row(dose(), [("Observation", dumps(ecog))], load_definition(site, CUTOFF))
    assert row is not None
    assert row["ecog"] == 1


@pytest.mark.parametrize(
    ("birth", "age", "noted"),
    [("1950-03-02", 72, False), ("1950-07", 71, False), ("1950-02", 72, False), ("1950-03", None, True)],
)
def test_a_birth_month_gives_the_age_when_every_day_of_it_does(
    definition: CohortDefinition, birth: str, age: int | None, noted: bool
) -> None:
    """The first dose is on 2022-03-02: born in July 1950 is 71 whatever the day, March 1950 is 71 or 72."""
    patient = {"resourceType": "Patient", "id": "p1", "birthDate": birth}
    row = patient_row(dose(), [("Patient", dumps(patient))], definition)
    assert row is not None
    assert row["age_years"] == age
    assert ("birthDate" in (row["notes"] or "")) is noted


def test_a_progression_later_entered_in_error_does_not_end_pfs(definition: CohortDefinition) -> None:
    """Incremental exports hold both versions of the disease-status Observation; the current one
    withdraws it, as the card's path withdraws a lab result."""
    status = {
        "resourceType": "Observation",
        "id": "s1",
        "code": {"coding": [{"system": LOINC, "code": "97509-4"}]},
        "valueCodeableConcept": {"coding": [{"system": SNOMED, "code": "271299001"}]},
        "effectiveDateTime": "2022-05-25",
    }
    versions = [
        status | {"status": "final", "meta": {"versionId": "1"}},
        status | {"status": "entered-in-error", "meta": {"versionId": "2"}},
    ]
    row = patient_row(dose(), [("Observation", dumps(v)) for v in versions], definition)
    assert row is not None
    assert (row["progression_date"], row["pfs_event"]) == (None, 0)


def test_with_last_contact_a_death_known_only_by_its_month_leaves_os_unknown() -> None:
    """The month after the last contact is still follow-up: not an alive-at-the-end censoring."""
    site = load_definition({"cohort": {"follow_up": "last-contact"}}, CUTOFF)
    patient = {"resourceType": "Patient", "id": "p1", "deceasedDateTime": "2022-07"}
    row = patient_row(dose(), [("Patient", dumps(patient))], site, last_contact=date(2022, 6, 10))
    assert row is not None
    assert (row["os_days"], row["os_event"]) == (None, None)
    assert "death recorded only as 2022-07" in row["notes"]
