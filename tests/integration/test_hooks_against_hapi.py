"""Real hooks, no prefetch, against the real HAPI FHIR server: the fetch path end to end."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from flask import Flask

from cds_service import close_app, create_app
from fhir_mappings.bundles import dumps
from sandbox import demo_data
from tests.http.conftest import hook_body, post_hook, prefetch_for
from tests.integration.proxy import RecordingProxy

pytestmark = pytest.mark.integration


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Callable[..., Flask]]:
    """The service with its real clock (the demo data is dated relative to now)."""
    apps: list[Flask] = []

    def build(**overrides: Any) -> Flask:
        overrides = {"data_dir": str(tmp_path), "auth_mode": "off", "allow_http_fhir": True, **overrides}
        app = create_app(overrides, environ={})
        apps.append(app)
        return app

    yield build
    for app in apps:
        close_app(app)


def card_summary(response: Any) -> str:
    assert response.status_code == 200, response.get_data(as_text=True)
    (card,) = response.get_json()["cards"]
    summary: str = card["summary"]
    return summary


@pytest.mark.parametrize("patient", demo_data.PATIENTS, ids=lambda p: p.id)
def test_each_demo_patient_gets_the_right_card_without_prefetch(
    service: Callable[..., Flask], demo_fhir: str, patient: demo_data.DemoPatient
) -> None:
    client = service().test_client()
    summary = card_summary(post_hook(client, hook_body(patient.id, prefetch=None, fhir_server=demo_fhir)))
    if "ichis" in patient.expected:
        assert summary.startswith(f"IChIS {patient.expected['ichis']} of 2")
    elif "lower" in patient.expected:
        assert summary.startswith(f"IChIS {patient.expected['lower']} to {patient.expected['upper']} of 2")
    else:
        assert summary.startswith("IChIS not available")


def test_fetched_and_prefetched_data_give_the_same_card(
    service: Callable[..., Flask], demo_fhir: str
) -> None:
    """What the service fetches itself equals what the client would have prefetched."""
    client = service().test_client()
    body = hook_body("ichis-demo-2", prefetch=None, fhir_server=demo_fhir)
    fetched = post_hook(client, body).get_json()["cards"][0]
    with requests.Session() as http:
        prefetch = {
            "labs": http.get(
                f"{demo_fhir}/Observation", params={"patient": "ichis-demo-2", "_count": 100}
            ).json(),
            "conditions": http.get(f"{demo_fhir}/Condition", params={"patient": "ichis-demo-2"}).json(),
        }
    body["prefetch"] = json.loads(json.dumps(prefetch))
    prefetched = post_hook(client, body).get_json()["cards"][0]
    assert fetched["summary"] == prefetched["summary"]
    assert fetched["detail"] == prefetched["detail"]


def test_only_the_absent_keys_are_fetched(service: Callable[..., Flask], demo_fhir: str) -> None:
    client = service().test_client()
    prefetch = {"labs": prefetch_for("ichis-demo-1")["labs"]}
    assert card_summary(
        post_hook(client, hook_body("ichis-demo-1", prefetch=prefetch, fhir_server=demo_fhir))
    ).startswith("IChIS 1 of 2")


def test_an_operation_outcome_in_prefetch_is_fetched_from_the_server(
    service: Callable[..., Flask], demo_fhir: str
) -> None:
    client = service().test_client()
    prefetch = prefetch_for("ichis-demo-0")
    prefetch["labs"] = {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": "timeout"}],
    }
    summary = card_summary(
        post_hook(client, hook_body("ichis-demo-0", prefetch=prefetch, fhir_server=demo_fhir))
    )
    assert summary.startswith("IChIS 0 of 2")


def test_paging_links_are_followed(service: Callable[..., Flask], demo_fhir: str) -> None:
    """With 3 Observations a page, the 20 results of the IChIS 2 patient come in 7 pages."""
    client = service(prefetch_lab_count=3).test_client()
    body = hook_body("ichis-demo-2", prefetch=None, fhir_server=demo_fhir)
    assert card_summary(post_hook(client, body)).startswith("IChIS 2 of 2")


def test_too_many_pages_is_412_rather_than_a_partial_answer(
    service: Callable[..., Flask], demo_fhir: str
) -> None:
    client = service(prefetch_lab_count=2, max_fhir_pages=3).test_client()
    response = post_hook(client, hook_body("ichis-demo-2", prefetch=None, fhir_server=demo_fhir))
    assert response.status_code == 412
    assert "more than 3 pages" in response.get_json()["issue"][0]["diagnostics"]


def test_an_unreachable_fhir_server_is_412(service: Callable[..., Flask]) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{probe.getsockname()[1]}/fhir"  # bound, never listening
        response = post_hook(service().test_client(), hook_body(prefetch=None, fhir_server=dead))
    assert response.status_code == 412
    assert response.get_json()["resourceType"] == "OperationOutcome"


def test_a_server_that_never_answers_is_412_within_the_deadline(service: Callable[..., Flask]) -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # accepts connections but never answers
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/fhir"
        response = post_hook(
            service(fhir_deadline_seconds=0.3).test_client(), hook_body(prefetch=None, fhir_server=url)
        )
    assert response.status_code == 412
    assert "deadline" in response.get_json()["issue"][0]["diagnostics"]


@pytest.fixture
def proxy(demo_fhir: str) -> Iterator[RecordingProxy]:
    recorder = RecordingProxy(demo_fhir)
    yield recorder
    recorder.close()


def test_the_access_token_is_forwarded_on_every_call_back_including_pages(
    service: Callable[..., Flask], proxy: RecordingProxy
) -> None:
    client = service(prefetch_lab_count=5).test_client()
    body = hook_body("ichis-demo-2", prefetch=None, fhir_server=proxy.base, token="token-for-this-call")  # noqa: S106
    assert card_summary(post_hook(client, body)).startswith("IChIS 2 of 2")
    paths = [path for _, path, _ in proxy.seen]
    assert any("_getpages" in p for p in paths), paths  # the paging links went through us too
    assert {auth for _, _, auth in proxy.seen} == {"Bearer token-for-this-call"}


def test_no_token_is_sent_when_the_client_gave_none(
    service: Callable[..., Flask], proxy: RecordingProxy
) -> None:
    client = service().test_client()
    assert (
        post_hook(client, hook_body("ichis-demo-0", prefetch=None, fhir_server=proxy.base)).status_code == 200
    )
    assert {auth for _, _, auth in proxy.seen} == {None}


@pytest.mark.parametrize(("severity", "status"), [("error", 412), ("warning", 200)])
def test_a_fetched_search_that_carries_an_error_outcome_is_not_taken_as_complete(
    service: Callable[..., Flask], demo_fhir: str, severity: str, status: int
) -> None:
    """HAPI's real answer to the lab search, with an OperationOutcome entry added on the way (as a
    server adds one for a partial search): an error means the labs may be partial, so no card;
    a warning leaves them whole."""

    def add_outcome(path: str, payload: bytes) -> bytes:
        if not path.startswith("/fhir/Observation?"):
            return payload
        bundle = json.loads(payload)
        issue = {"severity": severity, "code": "incomplete", "diagnostics": "search stopped early"}
        outcome = {"resourceType": "OperationOutcome", "issue": [issue]}
        bundle.setdefault("entry", []).append({"resource": outcome, "search": {"mode": "outcome"}})
        return json.dumps(bundle).encode()

    proxy = RecordingProxy(demo_fhir, alter=add_outcome)
    try:
        body = hook_body("ichis-demo-2", prefetch=None, fhir_server=proxy.base)
        response = post_hook(service().test_client(), body)
    finally:
        proxy.close()
    assert any(path.startswith("/fhir/Observation?") for _, path, _ in proxy.seen)
    assert response.status_code == status
    if status == 412:
        diagnostics = response.get_json()["issue"][0]["diagnostics"]
        assert "labs: the FHIR server reported an error in the results (search stopped early)" in diagnostics
    else:
        assert card_summary(response).startswith("IChIS 2 of 2")


def test_a_cross_origin_paging_link_is_not_followed_with_the_token(service: Callable[..., Flask]) -> None:
    """A next link to another host would carry the token away: the service refuses it (412)."""
    prefetch = prefetch_for("ichis-demo-2")
    prefetch["labs"]["link"] = [{"relation": "next", "url": "http://127.0.0.2:9/fhir?page=2"}]
    body = hook_body("ichis-demo-2", prefetch=prefetch, fhir_server="http://127.0.0.1:9/fhir", token="t")  # noqa: S106
    response = post_hook(service().test_client(), body)
    assert response.status_code == 412
    assert "another server" in response.get_json()["issue"][0]["diagnostics"]


def test_the_demo_bundle_is_accepted_by_hapi_twice_without_duplicates(demo_fhir: str) -> None:
    from datetime import UTC, datetime

    with requests.Session() as http:
        demo_data.load(demo_fhir, datetime.now(UTC), http)
        total = http.get(
            f"{demo_fhir}/Patient", params={"_id": ",".join(demo_data.BY_ID), "_summary": "count"}
        )
    assert total.json()["total"] == len(demo_data.PATIENTS)


def test_dumps_keeps_decimals_through_hapi(demo_fhir: str) -> None:
    with requests.Session() as http:
        obs = http.get(f"{demo_fhir}/Observation/ichis-demo-boundary-0-ig").json()
    assert obs["valueQuantity"]["value"] == 0.08
    assert dumps({"v": obs["valueQuantity"]["value"]}) == '{"v":0.08}'


def test_a_blood_count_sent_as_one_panel_with_components_is_fetched(
    service: Callable[..., Flask], demo_fhir: str
) -> None:
    """A search by code matches Observation.code only, not component codes: the service also asks
    for the CBC panel codes, so a count sent as one 57021-8 panel with components is read."""
    from datetime import UTC, datetime, timedelta

    patient = "ichis-panel-only"
    drawn = (datetime.now(UTC) - timedelta(days=1)).isoformat(timespec="seconds")

    def component(code: str, value: float, unit: str) -> dict[str, Any]:
        return {
            "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
            "valueQuantity": {
                "value": value,
                "unit": unit,
                "system": "http://unitsofmeasure.org",
                "code": unit,
            },
        }

    panel = {
        "resourceType": "Observation",
        "id": f"{patient}-cbc",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "57021-8"}]},
        "subject": {"reference": f"Patient/{patient}"},
        "effectiveDateTime": drawn,
        "component": [component("751-8", 12.3, "10*3/uL"), component("53115-2", 0.15, "10*3/uL")],
    }
    with requests.Session() as http:
        for resource in ({"resourceType": "Patient", "id": patient}, panel):
            url = f"{demo_fhir}/{resource['resourceType']}/{resource['id']}"
            http.put(url, json=resource, timeout=30).raise_for_status()
    body = hook_body(patient, prefetch=None, fhir_server=demo_fhir)
    assert card_summary(post_hook(service().test_client(), body)).startswith("IChIS 2 of 2")
