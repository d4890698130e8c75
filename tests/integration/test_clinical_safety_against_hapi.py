"""The fetch path against the real HAPI server: wrong-patient answers, impossible values and the
unit spellings feeds send never give a wrong card."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests
from flask import Flask

from cds_service.wiring import service_of
from tests.http.conftest import hook_body, post_hook
from tests.integration.proxy import RecordingProxy
from tests.integration.test_hooks_against_hapi import card_summary, service

pytestmark = pytest.mark.integration
__all__ = ["service"]

LOINC = "http://loinc.org"


def store(fhir: str, *resources: dict[str, Any]) -> None:
    with requests.Session() as http:
        for resource in resources:
            url = f"{fhir}/{resource['resourceType']}/{resource['id']}"
            http.put(url, json=resource, timeout=30).raise_for_status()


def count(patient: str, name: str, code: str, value: float, unit: str) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": f"{patient}-{name}",
        "status": "final",
        "code": {"coding": [{"system": LOINC, "code": code}]},
        "subject": {"reference": f"Patient/{patient}"},
        "effectiveDateTime": (datetime.now(UTC) - timedelta(hours=5)).isoformat(timespec="seconds"),
        "valueQuantity": {"value": value, "unit": unit},
    }


def test_a_server_that_answers_with_another_patients_results_does_not_change_the_card(
    service: Callable[..., Flask], demo_fhir: str
) -> None:
    """The search for this patient's labs comes back with another patient's too (a server or proxy
    bug): they are left out, and the audit record names them."""

    def add_ichis_2_results(path: str, body: bytes) -> bytes:
        if not path.startswith("/fhir/Observation?patient=ichis-demo-0"):
            return body
        bundle = json.loads(body)
        other = requests.get(
            f"{demo_fhir}/Observation", params={"patient": "ichis-demo-2"}, timeout=30
        ).json()
        bundle["entry"] = bundle.get("entry", []) + other.get("entry", [])
        return json.dumps(bundle).encode()

    proxy = RecordingProxy(demo_fhir, alter=add_ichis_2_results)
    try:
        app = service()
        client = app.test_client()
        reply = post_hook(client, hook_body("ichis-demo-0", prefetch=None, fhir_server=proxy.base))
        assert card_summary(reply).startswith("IChIS 0 of 2")
        assert "of another patient were ignored" in reply.get_json()["cards"][0]["detail"]
    finally:
        proxy.close()
    spool = service_of(app).spool
    (record,) = [
        r for _, r, _, _ in spool.claim(100, 60, with_default_target=True) if "ichis-demo-0" in str(r)
    ]
    codes = {coding["code"] for coding in record["subtype"]}
    left_out = [e for e in record["entity"] if e.get("description", "").startswith("left out")]
    assert "other-patient-data" in codes
    assert f"{proxy.base}/Observation/ichis-demo-2-0-neutrophils" in [
        e["what"]["identifier"]["value"] for e in left_out
    ]


@pytest.mark.parametrize(
    ("patient", "neutrophils", "summary"),
    [
        ("ichis-safety-thousands", (9500, "10*3/uL"), "IChIS 0 to 1 of 2"),  # a /uL number as thousands
        ("ichis-safety-mcl", (9.5, "K/mcL"), "IChIS 1 of 2"),
        ("ichis-safety-spaced", (9.5, "x 10 9/L"), "IChIS 1 of 2"),
        ("ichis-safety-cells", (9500, "cells/mcL"), "IChIS 1 of 2"),
    ],
)
def test_values_fetched_from_the_server_are_checked_and_read_in_every_spelling(
    service: Callable[..., Flask], demo_fhir: str, patient: str, neutrophils: tuple[float, str], summary: str
) -> None:
    store(
        demo_fhir,
        {"resourceType": "Patient", "id": patient},
        count(patient, "neut", "751-8", *neutrophils),
        count(patient, "ig", "53115-2", 0.02, "10*3/uL"),
        count(patient, "wbc", "6690-2", 12.0, "10*3/uL"),
    )
    reply = post_hook(service().test_client(), hook_body(patient, prefetch=None, fhir_server=demo_fhir))
    assert card_summary(reply).startswith(summary)
