"""Recognising checkpoint-inhibitor orders by code, by name, and through medicationReference."""

from __future__ import annotations

from typing import Any

import pytest

from fhir_mappings.config import ConfigurationError
from fhir_mappings.medications import DrugTable, find_checkpoint_orders
from fhir_mappings.subjects import CallPatient

TABLE = DrugTable()
P1 = CallPatient("p1")
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
ATC = "http://www.whocc.no/atc"
FORMULARY = "http://hospital.example/formulary"
#: An RxNorm code the table does not list (products the table lacks are matched by their display).
UNLISTED_RXNORM = "9999999"


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


def drugs_of(medication: dict[str, Any], table: DrugTable = TABLE) -> list[str]:
    return [o.drug for o in find_checkpoint_orders([(order("mr1", medication), None)], table, patient=P1)]


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
    found = find_checkpoint_orders([(order("mr1", medication), None)], TABLE, patient=P1)
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
    assert find_checkpoint_orders([(order("mr1", medication), None)], TABLE, patient=P1) == []


def test_a_contained_medication_is_resolved() -> None:
    request = order(
        "mr1",
        medicationReference={"reference": "#med"},
        contained=[{"resourceType": "Medication", "id": "med", "code": coded(RXNORM, "1792776")}],
    )
    assert [o.drug for o in find_checkpoint_orders([(request, None)], TABLE, patient=P1)] == ["atezolizumab"]


def test_a_medication_in_the_same_bundle_is_resolved_by_full_url_or_id() -> None:
    medication = {"resourceType": "Medication", "id": "m7", "code": {"text": "Imfinzi 50 mg/mL"}}
    by_url = order("mr1", medicationReference={"reference": "urn:uuid:abc"})
    by_id = order("mr2", medicationReference={"reference": "Medication/m7"})
    found = find_checkpoint_orders(
        [(medication, "urn:uuid:abc"), (by_url, None), (by_id, None)], TABLE, patient=P1
    )
    assert [(o.order, o.drug) for o in found] == [
        ("MedicationRequest/mr1", "durvalumab"),
        ("MedicationRequest/mr2", "durvalumab"),
    ]


@pytest.mark.parametrize("reference", ["https://ehr.example/fhir/Medication/m7", "Medication/m7/_history/3"])
def test_a_medication_in_the_same_bundle_is_resolved_by_an_absolute_or_versioned_reference(
    reference: str,
) -> None:
    """The Medication came without fullUrl; the reference still ends in Medication/m7."""
    medication = {"resourceType": "Medication", "id": "m7", "code": {"text": "Imfinzi 50 mg/mL"}}
    request = order("mr1", medicationReference={"reference": reference})
    assert [
        o.drug for o in find_checkpoint_orders([(medication, None), (request, None)], TABLE, patient=P1)
    ] == ["durvalumab"]


def test_a_medication_ingredient_code_is_enough() -> None:
    medication = {
        "resourceType": "Medication",
        "id": "m",
        "code": {"text": "Compounded infusion"},
        "ingredient": [{"itemCodeableConcept": coded(RXNORM, "1597876")}],
    }
    request = order("mr1", medicationReference={"reference": "Medication/m"})
    assert [
        o.drug for o in find_checkpoint_orders([(medication, None), (request, None)], TABLE, patient=P1)
    ] == ["nivolumab"]


def test_only_selected_orders_are_considered_when_a_selection_is_given() -> None:
    first = order("a", coded(RXNORM, "1547545"))
    second = order("b", coded(RXNORM, "1597876"))
    found = find_checkpoint_orders(
        [(first, None), (second, None)], TABLE, only=["MedicationRequest/b"], patient=P1
    )
    assert [o.drug for o in found] == ["nivolumab"]
    absolute = ["https://ehr.example/fhir/MedicationRequest/b"]  # a selection written absolute
    assert [
        o.drug
        for o in find_checkpoint_orders([(first, None), (second, None)], TABLE, only=absolute, patient=P1)
    ] == ["nivolumab"]


@pytest.mark.parametrize("status", ["cancelled", "entered-in-error", "stopped", "completed"])
def test_withdrawn_orders_are_not_orders_being_placed(status: str) -> None:
    assert (
        find_checkpoint_orders(
            [(order("a", coded(RXNORM, "1547545"), status=status), None)], TABLE, patient=P1
        )
        == []
    )


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
    assert [o.drug for o in find_checkpoint_orders([(request, None)], table, patient=P1)] == ["pembrolizumab"]


# --- FDA suffixes of nonproprietary names ---------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "drug", "matched"),
    [
        ("cemiplimab-rwlc 350 mg IV", "cemiplimab", "name 'cemiplimab-rwlc' in text"),
        ("dostarlimab-gxly 500 mg IV q3w", "dostarlimab", "name 'dostarlimab-gxly' in text"),
        ("DOSTARLIMAB-GXLY 500MG", "dostarlimab", "name 'DOSTARLIMAB-GXLY' in text"),
        ("toripalimab-tpzi 240 mg", "toripalimab", "name 'toripalimab-tpzi' in text"),
        ("tislelizumab-jsgr 200 mg", "tislelizumab", "name 'tislelizumab-jsgr' in text"),
        ("retifanlimab-dlwr 500 mg", "retifanlimab", "name 'retifanlimab-dlwr' in text"),
        ("tremelimumab-actl 300 mg once", "tremelimumab", "name 'tremelimumab-actl' in text"),
        ("cosibelimab-ipdl 1200 mg", "cosibelimab", "name 'cosibelimab-ipdl' in text"),
        ("Unloxcyt 1200 mg", "cosibelimab", "name 'Unloxcyt' in text"),
        ("penpulimab-kcqx 200 mg", "penpulimab", "name 'penpulimab-kcqx' in text"),
        # Fixed combinations: the suffix belongs to the partner, the inhibitor's name stands alone.
        ("nivolumab and relatlimab-rmbw", "nivolumab", "name 'nivolumab' in text"),
        ("atezolizumab and hyaluronidase-tqjs 1875 mg SC", "atezolizumab", "name 'atezolizumab' in text"),
        ("Tecentriq Hybreza 1875 mg", "atezolizumab", "name 'Tecentriq' in text"),
        ("nivolumab and hyaluronidase-nvhy", "nivolumab", "name 'nivolumab' in text"),
        ("Opdivo Qvantig 600 mg", "nivolumab", "name 'Opdivo' in text"),
        ("pembrolizumab and berahyaluronidase alfa-pmph", "pembrolizumab", "name 'pembrolizumab' in text"),
        ("Keytruda Qlex 790 mg", "pembrolizumab", "name 'Keytruda' in text"),
    ],
)
def test_a_name_with_its_fda_suffix_is_recognised(text: str, drug: str, matched: str) -> None:
    found = find_checkpoint_orders([(order("mr1", {"text": text}), None)], TABLE, patient=P1)
    assert [(o.drug, o.matched_by) for o in found] == [(drug, f"{matched} '{text}'")]


def test_every_name_is_recognised_with_each_of_its_drugs_fda_suffixes() -> None:
    for drug in TABLE.drugs.values():
        for suffix in drug.fda_suffixes:
            assert drugs_of({"text": f"{drug.name}-{suffix} 100 mg"}) == [drug.name]


@pytest.mark.parametrize(
    "text",
    [
        "dostarlimab-like investigational agent",  # a 4-letter ending that is no FDA suffix
        "cemiplimab-gxly",  # dostarlimab's suffix, not cemiplimab's
        "dostarlimab-gxlyz",
        "pembrolizumab-abcd",  # pembrolizumab has no FDA suffix
        "anti-dostarlimab-gxly antibody assay",
    ],
)
def test_a_hyphenated_ending_that_is_not_the_drugs_own_fda_suffix_is_not_recognised(text: str) -> None:
    assert drugs_of({"text": text}) == []


def test_a_site_adds_an_fda_suffix() -> None:
    table = DrugTable({"checkpoint_inhibitors": {"pembrolizumab": {"fda_suffixes": ["abcd"]}}})
    assert drugs_of({"text": "pembrolizumab-abcd 200 mg"}, table) == ["pembrolizumab"]
    assert drugs_of({"text": "pembrolizumab-like"}, table) == []


@pytest.mark.parametrize("suffix", ["GXLY", "gxl", "-gxly", "gx1y", 4])
def test_an_fda_suffix_that_is_not_four_lowercase_letters_is_refused(suffix: Any) -> None:
    with pytest.raises(ConfigurationError, match=r"checkpoint_inhibitors\.dostarlimab\.fda_suffixes"):
        DrugTable({"checkpoint_inhibitors": {"dostarlimab": {"fda_suffixes": [suffix]}}})


# --- free text of a coded drug ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "medication",
    [
        {
            "coding": [{"system": RXNORM, "code": "3264", "display": "dexamethasone"}],
            "text": "Dexamethasone 8 mg IV, premedication for Keytruda",
        },
        {
            "coding": [
                {"system": "urn:oid:2.16.840.1.113883.6.88", "code": "3264", "display": "dexamethasone"}
            ],
            "text": "Dexamethasone 8 mg IV before nivolumab",
        },
        {
            "coding": [{"system": ATC, "code": "A04AA01", "display": "ondansetron"}],
            "text": "Ondansetron 8 mg, antiemetic with Opdivo/Yervoy",
        },
    ],
)
def test_a_drug_coded_in_a_standard_terminology_is_not_recognised_by_its_free_text(
    medication: dict[str, Any],
) -> None:
    assert drugs_of(medication) == []


def test_an_unlisted_standard_code_without_a_display_leaves_the_text_to_name_the_drug() -> None:
    """Orders mostly carry product codes the table does not list, often without a display: the
    order text still names the drug, so the order keeps its card."""
    medication = {
        "coding": [{"system": RXNORM, "code": UNLISTED_RXNORM}],
        "text": "pembrolizumab (KEYTRUDA) 200 mg IVPB",
    }
    assert drugs_of(medication) == ["pembrolizumab"]


def test_an_unlisted_standard_code_is_recognised_by_its_display() -> None:
    medication = {
        "coding": [
            {
                "system": RXNORM,
                "code": UNLISTED_RXNORM,
                "display": "10 ML dostarlimab-gxly 50 MG/ML Injection",
            }
        ],
        "text": "Jemperli 500 mg IV",
    }
    found = find_checkpoint_orders([(order("mr1", medication), None)], TABLE, patient=P1)
    assert [(o.drug, o.matched_by) for o in found] == [
        (
            "dostarlimab",
            f"name 'dostarlimab-gxly' in display '10 ML dostarlimab-gxly 50 MG/ML Injection' "
            f"of RxNorm {UNLISTED_RXNORM}",
        )
    ]


def test_a_local_display_beside_a_standard_code_is_still_read() -> None:
    medication = {
        "coding": [
            {"system": RXNORM, "code": UNLISTED_RXNORM},
            {"system": FORMULARY, "code": "ONC-12", "display": "Keytruda 200 mg/8 mL"},
        ],
        "text": "as per protocol",
    }
    found = find_checkpoint_orders([(order("mr1", medication), None)], TABLE, patient=P1)
    assert [o.matched_by for o in found] == [
        "name 'Keytruda' in display 'Keytruda 200 mg/8 mL' of " + FORMULARY + " ONC-12"
    ]


@pytest.mark.parametrize(
    "medication",
    [
        {"coding": [{"system": FORMULARY, "code": "ONC-12"}], "text": "Keytruda 200 mg"},
        {"coding": [{"system": RXNORM, "display": "no code"}], "text": "Keytruda 200 mg"},
        {"text": "Keytruda 200 mg"},
    ],
)
def test_a_drug_with_only_local_codes_or_none_is_recognised_by_its_free_text(
    medication: dict[str, Any],
) -> None:
    assert drugs_of(medication) == ["pembrolizumab"]


def test_a_reference_display_does_not_make_a_coded_medication_a_checkpoint_inhibitor() -> None:
    dexamethasone = {
        "resourceType": "Medication",
        "id": "dex",
        "code": coded(RXNORM, "3264", "dexamethasone"),
    }
    request = order(
        "mr1",
        medicationReference={"reference": "#dex", "display": "Dexamethasone, premedication for Keytruda"},
    )
    request["contained"] = [dexamethasone]
    assert find_checkpoint_orders([(request, None)], TABLE, patient=P1) == []


def test_a_reference_display_names_the_drug_when_the_medication_cannot_be_found() -> None:
    request = order(
        "mr1", medicationReference={"reference": "Medication/elsewhere", "display": "Keytruda 200 mg"}
    )
    assert [o.drug for o in find_checkpoint_orders([(request, None)], TABLE, patient=P1)] == ["pembrolizumab"]


# --- combinations ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "drugs"),
    [
        ("nivolumab+ipilimumab", ["nivolumab", "ipilimumab"]),
        ("Nivolumab / Ipilimumab 3 mg/kg + 1 mg/kg", ["nivolumab", "ipilimumab"]),
        ("Imfinzi 1500 mg and Imjudo 300 mg (STRIDE)", ["durvalumab", "tremelimumab"]),
        ("Keytruda 200 mg (pembrolizumab)", ["pembrolizumab"]),
    ],
)
def test_every_drug_named_in_one_order_is_reported(text: str, drugs: list[str]) -> None:
    found = find_checkpoint_orders([(order("mr1", {"text": text}), None)], TABLE, patient=P1)
    assert [(o.order, o.drug) for o in found] == [("MedicationRequest/mr1", d) for d in drugs]


def test_every_ingredient_of_a_combined_medication_is_reported() -> None:
    medication = {
        "resourceType": "Medication",
        "id": "m",
        "code": {"text": "Combination infusion"},
        "ingredient": [
            {"itemCodeableConcept": coded(RXNORM, "1597876")},
            {"itemCodeableConcept": coded(RXNORM, "1094833")},
        ],
    }
    request = order("mr1", medicationReference={"reference": "Medication/m"})
    found = find_checkpoint_orders([(medication, None), (request, None)], TABLE, patient=P1)
    assert [(o.drug, o.target) for o in found] == [("nivolumab", "PD-1"), ("ipilimumab", "CTLA-4")]


def test_match_codeable_gives_the_first_drug_named() -> None:
    """One drug is what a first dose needs (the cohort): the first code, else the first name."""
    assert TABLE.match_codeable({"text": "Nivolumab / Ipilimumab"}) == (
        "nivolumab",
        "name 'Nivolumab' in text 'Nivolumab / Ipilimumab'",
    )
    assert TABLE.match_codeable({"coding": [{"system": RXNORM, "code": "1094833"}]}) == (
        "ipilimumab",
        "RxNorm 1094833",
    )
    assert TABLE.match_codeable({"text": "carboplatin"}) is None


# --- orders not to give the drug -------------------------------------------------------------------


def test_an_order_not_to_give_the_drug_is_not_a_checkpoint_inhibitor_order() -> None:
    forbidden = order("a", coded(RXNORM, "1547545"), doNotPerform=True)
    allowed = order("b", coded(RXNORM, "1547545"), doNotPerform=False)
    found = find_checkpoint_orders([(forbidden, None), (allowed, None)], TABLE, patient=P1)
    assert [o.order for o in found] == ["MedicationRequest/b"]
