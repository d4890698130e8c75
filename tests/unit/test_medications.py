"""Recognising checkpoint-inhibitor orders by code, by name, and through medicationReference."""

from __future__ import annotations

from typing import Any

import pytest

from fhir_mappings.medications import DrugTable, find_checkpoint_orders

TABLE = DrugTable()
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
ATC = "http://www.whocc.no/atc"


def order(
    oid: str, medication: dict[str, Any] | None = None, status: str = "draft", **extra: Any
) -> dict[str, Any]:
    request: dict[str, Any] = {
        "resourceType": "MedicationRequest",
        "id": oid,
        "status": status,
        "intent": "order",
        "subject": {"reference": "Patient/p1"},
    }
    if medication is not None:
        request["medicationCodeableConcept"] = medication
    request.update(extra)
    return request


def coded(system: str, code: str, display: str = "") -> dict[str, Any]:
    return {"coding": [{"system": system, "code": code, "display": display}]}


@pytest.mark.parametrize(
    ("medication", "drug", "matched"),
    [
        (coded(RXNORM, "1547545"), "pembrolizumab", "RxNorm 1547545"),
        (coded(RXNORM, "1657750"), "pembrolizumab", "RxNorm 1657750"),  # a clinical drug (SCD)
        (coded(ATC, "L01FF02"), "pembrolizumab", "ATC L01FF02"),
        (coded(ATC, "L01XC18"), "pembrolizumab", "ATC L01XC18"),  # ATC before 2022
        (coded("urn:oid:2.16.840.1.113883.6.73", "L01FF05"), "atezolizumab", "ATC L01FF05"),
        (coded("http://snomed.info/sct", "704191007"), "nivolumab", "SNOMED CT 704191007"),
        ({"text": "Keytruda 200 mg IV q3w"}, "pembrolizumab", "name 'Keytruda'"),
        ({"text": "TECENTRIQ 1200MG/20ML"}, "atezolizumab", "name 'TECENTRIQ'"),
        (
            coded("http://hospital.example/formulary", "X1", "Nivolumab 240 mg"),
            "nivolumab",
            "name 'Nivolumab'",
        ),
        (coded(ATC, "L01FX04"), "ipilimumab", "ATC L01FX04"),
    ],
)
def test_checkpoint_inhibitor_orders_are_recognised(
    medication: dict[str, Any], drug: str, matched: str
) -> None:
    found = find_checkpoint_orders([(order("mr1", medication), None)], TABLE)
    assert [(o.order, o.drug) for o in found] == [("MedicationRequest/mr1", drug)]
    assert found[0].matched_by.startswith(matched)


@pytest.mark.parametrize(
    "medication",
    [
        coded(RXNORM, "1049502", "oxycodone"),
        {"text": "carboplatin AUC5"},
        {"text": "pembrolizumab-like investigational agent"},  # no whole-word match for a compound word
        {"text": "Opdivoxx"},
    ],
)
def test_other_drugs_are_not_checkpoint_inhibitors(medication: dict[str, Any]) -> None:
    assert find_checkpoint_orders([(order("mr1", medication), None)], TABLE) == []


def test_a_contained_medication_is_resolved() -> None:
    request = order(
        "mr1",
        medicationReference={"reference": "#med"},
        contained=[{"resourceType": "Medication", "id": "med", "code": coded(RXNORM, "1792776")}],
    )
    assert [o.drug for o in find_checkpoint_orders([(request, None)], TABLE)] == ["atezolizumab"]


def test_a_medication_in_the_same_bundle_is_resolved_by_full_url_or_id() -> None:
    medication = {"resourceType": "Medication", "id": "m7", "code": {"text": "Imfinzi 50 mg/mL"}}
    by_url = order("mr1", medicationReference={"reference": "urn:uuid:abc"})
    by_id = order("mr2", medicationReference={"reference": "Medication/m7"})
    found = find_checkpoint_orders([(medication, "urn:uuid:abc"), (by_url, None), (by_id, None)], TABLE)
    assert [(o.order, o.drug) for o in found] == [
        ("MedicationRequest/mr1", "durvalumab"),
        ("MedicationRequest/mr2", "durvalumab"),
    ]


def test_a_medication_ingredient_code_is_enough() -> None:
    medication = {
        "resourceType": "Medication",
        "id": "m",
        "code": {"text": "Compounded infusion"},
        "ingredient": [{"itemCodeableConcept": coded(RXNORM, "1597876")}],
    }
    request = order("mr1", medicationReference={"reference": "Medication/m"})
    assert [o.drug for o in find_checkpoint_orders([(medication, None), (request, None)], TABLE)] == [
        "nivolumab"
    ]


def test_only_selected_orders_are_considered_when_a_selection_is_given() -> None:
    first = order("a", coded(RXNORM, "1547545"))
    second = order("b", coded(RXNORM, "1597876"))
    found = find_checkpoint_orders([(first, None), (second, None)], TABLE, only=["MedicationRequest/b"])
    assert [o.drug for o in found] == ["nivolumab"]


@pytest.mark.parametrize("status", ["cancelled", "entered-in-error", "stopped", "completed"])
def test_withdrawn_orders_are_not_orders_being_placed(status: str) -> None:
    assert find_checkpoint_orders([(order("a", coded(RXNORM, "1547545"), status=status), None)], TABLE) == []


def test_a_site_adds_its_own_formulary_codes() -> None:
    table = DrugTable(
        {
            "checkpoint_inhibitors": {
                "pembrolizumab": {
                    "codes": [{"system": "http://hospital.example/formulary", "code": "ONC-77"}]
                }
            }
        }
    )
    request = order("a", coded("http://hospital.example/formulary", "ONC-77"))
    assert [o.drug for o in find_checkpoint_orders([(request, None)], table)] == ["pembrolizumab"]
