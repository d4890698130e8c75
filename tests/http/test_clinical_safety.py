"""Through the service with prefetch: another patient's data, impossible values and the feeds
hospitals send never give a wrong card."""

from __future__ import annotations

import copy
import json
import logging
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from flask.testing import FlaskClient

from cds_service.logs import JsonFormatter
from tests.http.conftest import NOW, hook_body, medication_request, post_hook, prefetch_for, searchset
from tests.markdown import readable

LOINC = "http://loinc.org"


def card_of(client: FlaskClient, body: dict[str, Any]) -> dict[str, Any]:
    """The card, with its detail as a reader sees it (rendered by a CommonMark renderer)."""
    reply = post_hook(client, body)
    assert reply.status_code == 200, reply.get_data(as_text=True)
    (card,) = reply.get_json()["cards"]
    return {**card, "detail": readable(card["detail"])}


def result(oid: str, code: str, value: str, unit: str, patient: str, **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": oid,
        "status": "final",
        "code": {"coding": [{"system": LOINC, "code": code}]},
        "subject": {"reference": patient},
        "effectiveDateTime": (NOW - timedelta(hours=3)).isoformat(),
        "valueQuantity": {"value": Decimal(value), "unit": unit},
        **extra,
    }


def labs(*resources: dict[str, Any]) -> dict[str, Any]:
    return {"labs": searchset(list(resources)), "conditions": prefetch_for("ichis-demo-0")["conditions"]}


@pytest.mark.parametrize(
    "subject",
    [
        "Patient/ichis-demo-2",
        "http://ehr.example/fhir/Patient/ichis-demo-2",
        "Patient/ichis-demo-2/_history/1",
    ],
)
def test_another_patients_results_in_the_prefetch_never_change_this_patients_card(
    client: FlaskClient, subject: str, caplog: pytest.LogCaptureFixture
) -> None:
    """IChIS 0 from this patient's own counts stays 0 beside another patient's IChIS 2 results."""
    prefetch = prefetch_for("ichis-demo-0")
    for entry in copy.deepcopy(prefetch_for("ichis-demo-2")["labs"]["entry"]):
        entry["resource"]["subject"] = {"reference": subject}
        prefetch["labs"]["entry"].append(entry)
    body = hook_body("ichis-demo-0", prefetch=prefetch)
    with caplog.at_level(logging.WARNING, logger="ichis.cds"):
        card = card_of(client, body)
    assert card["summary"].startswith("IChIS 0 of 2")
    assert "results of another patient were ignored" in card["detail"]
    warning = next(r for r in caplog.records if "another patient" in r.getMessage())
    line = json.loads(JsonFormatter().format(warning))
    assert "Observation/ichis-demo-2-0-neutrophils" in line["other_patient"]
    assert line["hookInstance"] == body["hookInstance"]
    assert "12.3" not in json.dumps(line)  # ids only: the other patient's value is not logged


def test_results_without_a_subject_are_not_scored(client: FlaskClient) -> None:
    bare = [result("n", "751-8", "12.0", "10*3/uL", ""), result("i", "53115-2", "0.2", "10*3/uL", "")]
    for observation in bare:
        del observation["subject"]
    card = card_of(client, hook_body("ichis-demo-0", prefetch=labs(*bare)))
    assert card["summary"].startswith("IChIS not available")
    assert "without a subject that resolves to this patient were not used" in card["detail"]


@pytest.mark.parametrize("hook", ["order-select", "order-sign"])
def test_a_draft_order_of_another_patient_gets_no_card(client: FlaskClient, hook: str) -> None:
    foreign = medication_request("draft-other", patient="ichis-demo-0")
    reply = post_hook(client, hook_body("ichis-demo-2", hook=hook, orders=[foreign]))
    assert reply.get_json() == {"cards": []}


@pytest.mark.parametrize(
    ("value", "unit", "summary", "detail"),
    [
        ("9500", "10*3/uL", "IChIS 0 to 1 of 2", "was it sent in /uL"),
        ("9500", "x10E3/mcL", "IChIS 0 to 1 of 2", "was it sent in /uL"),
        ("9.5", "K/mcL", "IChIS 1 of 2", None),
        ("9500", "cells/mcL", "IChIS 1 of 2", None),
        ("9.5", "x 10 9/L", "IChIS 1 of 2", None),
        ("9.5", "g/l", "IChIS 0 to 1 of 2", "UCUM is case-sensitive"),
    ],
)
def test_units_and_impossible_values_as_feeds_send_them(
    client: FlaskClient, value: str, unit: str, summary: str, detail: str | None
) -> None:
    patient = "Patient/ichis-demo-0"
    card = card_of(
        client,
        hook_body(
            "ichis-demo-0",
            prefetch=labs(
                result("n", "751-8", value, unit, patient),
                result("i", "53115-2", "0.02", "10*3/uL", patient),
                result("w", "6690-2", "12.0", "10*3/uL", patient),
            ),
        ),
    )
    assert card["summary"].startswith(summary)
    if detail:
        assert detail in card["detail"]


def test_a_neutrophil_count_above_its_samples_wbc_is_not_scored(client: FlaskClient) -> None:
    patient = "Patient/ichis-demo-0"
    body = hook_body(
        "ichis-demo-0",
        prefetch=labs(
            result("n", "751-8", "9.5", "10*3/uL", patient),
            result("i", "53115-2", "0.02", "10*3/uL", patient),
            result("w", "6690-2", "7.1", "10*3/uL", patient),
        ),
    )
    card = card_of(client, body)
    assert card["summary"].startswith("IChIS 0 to 1 of 2")
    assert "above the WBC of the same sample" in card["detail"]


def test_results_contained_in_a_diagnostic_report_in_the_prefetch_are_read(client: FlaskClient) -> None:
    def inner(oid: str, code: str, value: str) -> dict[str, Any]:
        contained = result(oid, code, value, "10*3/uL", "")
        del contained["subject"], contained["effectiveDateTime"]
        return contained

    report = {
        "resourceType": "DiagnosticReport",
        "id": "cbc-report",
        "status": "final",
        "code": {"coding": [{"system": LOINC, "code": "57021-8"}]},
        "subject": {"reference": "Patient/ichis-demo-0"},
        "effectiveDateTime": (NOW - timedelta(hours=3)).isoformat(),
        "contained": [
            inner("n", "751-8", "9.5"),
            inner("i", "53115-2", "0.09"),
            inner("w", "6690-2", "12.0"),
        ],
        "result": [{"reference": "#n"}, {"reference": "#i"}, {"reference": "#w"}],
    }
    card = card_of(client, hook_body("ichis-demo-0", prefetch=labs(report)))
    assert card["summary"].startswith("IChIS 2 of 2")
    assert "DiagnosticReport/cbc-report#n" in card["detail"]


@pytest.mark.parametrize("patient_id", ["a/b/c", " ichis-demo-0", "ichis-demo-0 "])
def test_a_patient_id_that_is_no_fhir_id_is_a_400(client: FlaskClient, patient_id: str) -> None:
    body = hook_body("ichis-demo-0")
    body["context"]["patientId"] = patient_id
    reply = post_hook(client, body)
    assert reply.status_code == 400
    assert reply.get_json()["resourceType"] == "OperationOutcome"
