"""The CDS Hooks service through its HTTP interface, for every shape of request it meets."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from fhir_mappings.config import ConfigurationError, load_mapping_config
from sandbox import demo_data
from tests.http.conftest import (
    CARBOPLATIN,
    NOW,
    hook_body,
    medication_request,
    post_hook,
    prefetch_for,
    searchset,
)
from tests.markdown import readable

TOKEN_PATTERN = re.compile(r"\{\{([^}]+)\}\}")


def card_of(response: Any) -> dict[str, Any]:
    """The one card of a reply, with its detail as a reader sees it (rendered, escapes resolved)."""
    assert response.status_code == 200, response.get_data(as_text=True)
    cards = response.get_json()["cards"]
    assert len(cards) == 1
    card: dict[str, Any] = cards[0]
    return {**card, "markdown": card["detail"], "detail": readable(card["detail"])}


# --- discovery ---------------------------------------------------------------------------------


def test_discovery_lists_one_service_per_order_hook(client: FlaskClient) -> None:
    services = client.get("/cds-services").get_json()["services"]
    assert [(s["id"], s["hook"]) for s in services] == [
        ("ichis-prognosis", "order-select"),
        ("ichis-prognosis-sign", "order-sign"),
    ]
    for service in services:
        assert service["title"]
        assert service["description"]
        assert set(service["prefetch"]) == {"labs", "conditions"}  # nothing the card does not read


def test_prefetch_templates_use_only_cds_hooks_2_tokens(client: FlaskClient) -> None:
    for service in client.get("/cds-services").get_json()["services"]:
        for template in service["prefetch"].values():
            assert set(TOKEN_PATTERN.findall(template)) <= {"context.patientId"}


def test_the_lab_template_is_bounded_and_covers_the_sites_codes(make_app: Callable[..., Flask]) -> None:
    site = {
        "lab_codes": {"immature_granulocytes": {"codes": [{"system": "http://lab.example", "code": "IG#"}]}},
        "lab_panels": {"codes": [{"system": "http://lab.example", "code": "CBC"}]},
    }
    labs = (
        make_app(site=site).test_client().get("/cds-services").get_json()["services"][0]["prefetch"]["labs"]
    )
    assert "http://loinc.org|751-8" in labs
    assert "http://lab.example|IG%23" in labs  # a '#' would end the query the EHR sends
    # Panels too: a search by code does not match the codes of their components.
    assert "http://loinc.org|57021-8" in labs
    assert "http://lab.example|CBC" in labs
    assert "_count=100" in labs


@pytest.mark.parametrize("panels", [{"codes": [{"system": "http://lab.example"}]}, {"codes": "CBC"}, ["x"]])
def test_a_malformed_panel_setting_is_refused(panels: Any) -> None:
    with pytest.raises(ConfigurationError, match="lab_panels"):
        load_mapping_config({"lab_panels": panels})


# --- cards for each demo patient with full prefetch ----------------------------------------------


@pytest.mark.parametrize("patient", [p for p in demo_data.PATIENTS], ids=lambda p: p.id)
def test_each_demo_patient_gets_the_right_card_from_prefetch(
    client: FlaskClient, patient: demo_data.DemoPatient
) -> None:
    card = card_of(post_hook(client, hook_body(patient.id)))
    assert len(card["summary"]) < 140
    assert card["indicator"] in ("info", "warning")
    if "ichis" in patient.expected:
        assert card["summary"].startswith(f"IChIS {patient.expected['ichis']} of 2")
    elif "lower" in patient.expected:
        assert card["summary"].startswith(
            f"IChIS {patient.expected['lower']} to {patient.expected['upper']} of 2"
        )
    else:
        assert card["summary"].startswith("IChIS not available")


def test_the_ichis_2_card_states_inputs_stratum_population_and_citation(client: FlaskClient) -> None:
    card = card_of(post_hook(client, hook_body("ichis-demo-2")))
    assert card["summary"] == (
        "IChIS 2 of 2: published median OS 54 days (PFS 30) in one NSCLC cohort; a research marker"
    )
    assert card["indicator"] == "warning"
    detail = card["detail"]
    for expected in [
        "12.3 10*9/L",  # value as sent, with its unit
        "12,300/uL",
        "0.15 10*9/L",
        "Observation/ichis-demo-2-0-neutrophils",
        "(24 h before)",
        "median progression-free survival 30 days (0.0-64.6)",
        "median overall survival 54 days (0.0-126.1)",
        "6.108 (2.766-13.487)",
        "143 patients with advanced non-small cell lung cancer on second-line PD-1/PD-L1 monotherapy",
        "not externally validated",
        "prognostic research marker",
        "Tuberc Respir Dis",
    ]:
        assert expected in detail, expected


def test_the_card_has_source_uuid_override_reasons_and_a_smart_link(client: FlaskClient) -> None:
    body = hook_body("ichis-demo-0")
    card = card_of(post_hook(client, body))
    assert card["source"]["label"]
    assert card["source"]["topic"]["code"] == "ichis-prognosis"
    assert re.fullmatch(r"[0-9a-f-]{36}", card["uuid"])
    assert all(reason["display"] for reason in card["overrideReasons"])
    (link,) = card["links"]
    assert link["type"] == "smart"
    assert link["url"] == "https://cds.example/smart/launch"
    context = json.loads(link["appContext"])
    assert context["hookInstance"] == body["hookInstance"]
    assert (context["patientId"], context["order"]) == ("ichis-demo-0", "MedicationRequest/draft-1")
    assert "suggestions" not in card  # a complete score needs no new blood count


def test_a_partial_score_states_bounds_and_proposes_a_cbc(client: FlaskClient) -> None:
    card = card_of(post_hook(client, hook_body("ichis-demo-partial")))
    assert card["summary"].startswith("IChIS 1 to 2 of 2: IG# missing")
    assert card["indicator"] == "info"
    assert card["selectionBehavior"] == "at-most-one"
    (suggestion,) = card["suggestions"]
    (action,) = suggestion["actions"]
    assert action["type"] == "create"
    assert action["resource"]["resourceType"] == "ServiceRequest"
    assert action["resource"]["code"]["coding"][0]["code"] == "57021-8"


def test_stale_data_gives_an_info_card_that_says_so_and_proposes_a_cbc(client: FlaskClient) -> None:
    card = card_of(post_hook(client, hook_body("ichis-demo-stale")))
    assert (
        card["summary"] == "IChIS not available: no usable blood count with differential in the last 14 days"
    )
    assert "older than the 14-day look-back window" in card["detail"]
    assert card["suggestions"]


def test_a_derived_ig_count_is_labelled_as_derived(client: FlaskClient) -> None:
    card = card_of(post_hook(client, hook_body("ichis-demo-derived")))
    assert "IG% 1.4 % x WBC 9.2 /nL (derived)" in card["detail"]
    assert "128.8/uL" in card["detail"]


# --- which orders get a card ----------------------------------------------------------------------


def test_a_non_checkpoint_order_gets_no_card(client: FlaskClient) -> None:
    order = medication_request("chemo", *CARBOPLATIN)
    response = post_hook(client, hook_body(orders=[order]))
    assert response.get_json() == {"cards": []}


def test_order_select_looks_only_at_the_selected_orders(client: FlaskClient) -> None:
    orders = [medication_request("ici"), medication_request("chemo", *CARBOPLATIN)]
    assert post_hook(client, hook_body(orders=orders, selections=["MedicationRequest/chemo"])).get_json() == {
        "cards": []
    }
    card = card_of(post_hook(client, hook_body(orders=orders, selections=["MedicationRequest/ici"])))
    assert json.loads(card["links"][0]["appContext"])["orders"] == ["MedicationRequest/ici"]


def test_order_sign_looks_at_all_draft_orders(client: FlaskClient) -> None:
    orders = [
        medication_request("chemo", *CARBOPLATIN),
        medication_request("ici"),
        medication_request("ipi", "1094833", "ipilimumab"),
    ]
    card = card_of(post_hook(client, hook_body(hook="order-sign", orders=orders), "ichis-prognosis-sign"))
    assert json.loads(card["links"][0]["appContext"])["orders"] == [
        "MedicationRequest/ici",
        "MedicationRequest/ipi",
    ]
    assert "ipilimumab (CTLA-4)" in card["detail"]


def test_a_re_sent_hook_instance_gives_the_same_card(client: FlaskClient) -> None:
    body = hook_body("ichis-demo-1")
    first, second = card_of(post_hook(client, body)), card_of(post_hook(client, body))
    assert first == second


# --- the derivation population --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("patient", "caveat"),
    [
        ("ichis-demo-melanoma", "No lung cancer diagnosis is on record"),
        ("ichis-demo-sclc", "Small-cell lung cancer is on record"),
    ],
)
def test_patients_outside_the_population_get_a_caveat_by_default(
    client: FlaskClient, patient: str, caveat: str
) -> None:
    card = card_of(post_hook(client, hook_body(patient)))
    assert caveat in card["detail"]
    assert "**Outside the study population:**" in card["markdown"]


def test_the_suppress_policy_gives_no_card_outside_the_population(make_app: Callable[..., Flask]) -> None:
    client = make_app(scope_policy="suppress").test_client()
    assert post_hook(client, hook_body("ichis-demo-melanoma")).get_json() == {"cards": []}
    assert len(post_hook(client, hook_body("ichis-demo-2")).get_json()["cards"]) == 1


# --- prefetch semantics ---------------------------------------------------------------------------


def test_a_null_prefetch_key_means_no_data_exists(client: FlaskClient) -> None:
    prefetch = prefetch_for("ichis-demo-2")
    prefetch["labs"] = None
    card = card_of(post_hook(client, hook_body(prefetch=prefetch)))
    assert card["summary"].startswith("IChIS not available")


def test_an_empty_bundle_means_nothing_matched(client: FlaskClient) -> None:
    prefetch = prefetch_for("ichis-demo-2")
    prefetch["labs"] = searchset([])
    assert card_of(post_hook(client, hook_body(prefetch=prefetch)))["summary"].startswith(
        "IChIS not available"
    )


def test_an_absent_prefetch_without_fhir_server_is_412_naming_the_keys(client: FlaskClient) -> None:
    response = post_hook(client, hook_body(prefetch=None))
    assert response.status_code == 412
    outcome = response.get_json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert "conditions, labs" in outcome["issue"][0]["diagnostics"]


def test_an_operation_outcome_in_prefetch_is_fetched_again_or_412(client: FlaskClient) -> None:
    prefetch = prefetch_for("ichis-demo-2")
    prefetch["labs"] = {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": "timeout"}],
    }
    response = post_hook(client, hook_body(prefetch=prefetch))
    assert response.status_code == 412
    assert "labs" in response.get_json()["issue"][0]["diagnostics"]


@pytest.mark.parametrize(("severity", "status"), [("error", 412), ("fatal", 412), ("warning", 200)])
def test_a_prefetched_bundle_that_carries_an_error_is_not_taken_as_complete(
    client: FlaskClient, severity: str, status: int
) -> None:
    """A searchset with an error OperationOutcome (search mode "outcome") may be partial: the
    service fetches the key itself, here 412 without a fhirServer; a warning leaves it whole."""
    prefetch = prefetch_for("ichis-demo-2")
    outcome = {"resourceType": "OperationOutcome", "issue": [{"severity": severity, "code": "incomplete"}]}
    prefetch["labs"]["entry"].append({"resource": outcome, "search": {"mode": "outcome"}})
    response = post_hook(client, hook_body(prefetch=prefetch))
    assert response.status_code == status
    if status == 412:
        assert "labs" in response.get_json()["issue"][0]["diagnostics"]


@pytest.mark.parametrize(
    "carrier",
    ["issue as one object", "in a Bundle nested in an entry"],
)
def test_an_error_outcome_is_found_in_the_shapes_servers_send(client: FlaskClient, carrier: str) -> None:
    """An error missed would be results silently missing: a malformed ``issue`` (one object, not a
    list) and a Bundle inside an entry are searched too."""
    prefetch = prefetch_for("ichis-demo-2")
    issue = {"severity": "error", "code": "incomplete", "diagnostics": "search timed out"}
    if carrier == "issue as one object":
        entry = {"resource": {"resourceType": "OperationOutcome", "issue": issue}}
    else:
        outcome = {"resourceType": "OperationOutcome", "issue": [issue]}
        nested = {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": outcome}]}
        entry = {"resource": nested}
    prefetch["labs"]["entry"].append(entry)
    response = post_hook(client, hook_body(prefetch=prefetch))
    assert response.status_code == 412
    assert "labs" in response.get_json()["issue"][0]["diagnostics"]


def test_a_paginated_prefetch_without_fhir_server_is_412(client: FlaskClient) -> None:
    prefetch = prefetch_for("ichis-demo-2")
    prefetch["labs"]["link"] = [{"relation": "next", "url": "http://ehr.example/fhir?page=2"}]
    assert post_hook(client, hook_body(prefetch=prefetch)).status_code == 412


def test_unknown_fields_and_extensions_are_tolerated(client: FlaskClient) -> None:
    body = hook_body("ichis-demo-0")
    body["extension"] = {"com.example.trace": {"id": 7}}
    body["context"]["extension"] = {"com.example": True}
    body["somethingNew"] = [1, 2]
    assert card_of(post_hook(client, body))["summary"].startswith("IChIS 0 of 2")


# --- malformed requests ---------------------------------------------------------------------------


def _without(path: str) -> dict[str, Any]:
    body = hook_body()
    target: Any = body
    *parents, last = path.split(".")
    for key in parents:
        target = target[key]
    del target[last]
    return body


def _with(path: str, value: Any) -> dict[str, Any]:
    body = hook_body()
    target: Any = body
    *parents, last = path.split(".")
    for key in parents:
        target = target.setdefault(key, {})
    target[last] = value
    return body


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (_without("hook"), "hook is required"),
        (_without("hookInstance"), "hookInstance is required"),
        (_without("context"), "context is required"),
        (_without("context.patientId"), "context.patientId is required"),
        (_without("context.draftOrders"), "context.draftOrders must be a FHIR Bundle"),
        (_with("context.selections", "MedicationRequest/1"), "context.selections must be a list"),
        (
            _with("context.draftOrders", {"resourceType": "Bundle", "entry": "x"}),
            "Bundle.entry must be a list",
        ),
        (_with("hook", "patient-view"), "answers the order-select and order-sign hooks"),
        (_with("hook", 42), "hook must be a non-empty string"),
        (_with("prefetch", [1]), "prefetch must be an object"),
        (_with("prefetch.labs", "Bundle"), "prefetch.labs is not a FHIR resource"),
        (_with("fhirAuthorization", {"token_type": "Bearer"}), "fhirAuthorization.access_token is required"),
        (_with("fhirAuthorization", {"access_token": "t", "token_type": "MAC"}), "must be Bearer"),
        (_with("context.patientId", ""), "context.patientId must be a non-empty string"),
    ],
)
def test_malformed_requests_get_400_with_an_operation_outcome(
    client: FlaskClient, body: Any, message: str
) -> None:
    response = post_hook(client, body)
    assert response.status_code == 400
    outcome = response.get_json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert message in outcome["issue"][0]["diagnostics"]


@pytest.mark.parametrize("raw", [b"", b"{", b"[]", b"null", b"\xff\xfe", b'"text"', b"[" * 5000])
def test_bodies_that_are_not_a_json_object_get_400(client: FlaskClient, raw: bytes) -> None:
    response = client.post("/cds-services/ichis-prognosis", data=raw, content_type="application/json")
    assert response.status_code == 400
    assert response.get_json()["resourceType"] == "OperationOutcome"


def test_a_non_json_content_type_gets_415(client: FlaskClient) -> None:
    response = client.post(
        "/cds-services/ichis-prognosis", data="hook=order-select", content_type="text/plain"
    )
    assert response.status_code == 415


def test_an_unknown_service_gets_404_and_a_wrong_method_405(client: FlaskClient) -> None:
    assert post_hook(client, hook_body(), "nope").status_code == 404
    response = client.get("/cds-services/ichis-prognosis")
    assert response.status_code == 405
    assert response.get_json()["resourceType"] == "OperationOutcome"


def test_the_order_time_is_the_clock_of_the_call(client: FlaskClient) -> None:
    card = card_of(post_hook(client, hook_body("ichis-demo-2")))
    assert json.loads(card["links"][0]["appContext"])["at"] == NOW.isoformat()


# --- orders that are not, or not only, what they seem -----------------------------------------------


def test_an_order_not_to_give_a_checkpoint_inhibitor_gets_no_card(client: FlaskClient) -> None:
    order = medication_request("ici") | {"doNotPerform": True}
    assert post_hook(client, hook_body(orders=[order])).get_json() == {"cards": []}


def test_a_premedication_that_mentions_a_checkpoint_inhibitor_gets_no_card(client: FlaskClient) -> None:
    order = medication_request("premed", "3264", "dexamethasone")
    order["medicationCodeableConcept"]["text"] = "Dexamethasone 8 mg IV, premedication for Keytruda"
    assert post_hook(client, hook_body(orders=[order])).get_json() == {"cards": []}


def test_a_combination_in_one_order_gets_the_ctla4_note(client: FlaskClient) -> None:
    order = medication_request("combo")
    order["medicationCodeableConcept"] = {"text": "Nivolumab 3 mg/kg + Ipilimumab 1 mg/kg"}
    card = card_of(post_hook(client, hook_body(orders=[order])))
    assert "ipilimumab (CTLA-4)" in card["detail"]
    assert "nivolumab (MedicationRequest/combo" in card["detail"]
    # The app is told about the order once, though it names two drugs.
    (link,) = card["links"]
    assert json.loads(link["appContext"])["orders"] == ["MedicationRequest/combo"]
