"""Searches run side by side against one FHIR server keep each key's answer or failure apart."""

from __future__ import annotations

import json
import time
from typing import Any

import requests

from fhir_mappings.client import FhirClient, FhirRefused

BASE = "https://ehr.example.org/fhir"


class Server(requests.adapters.BaseAdapter):
    """A FHIR server in-process: a Patient, a searchset of one page, and a refused search."""

    def send(self, request: requests.PreparedRequest, **kwargs: object) -> requests.Response:
        url = str(request.url)
        body: dict[str, Any]
        if "/Patient/1" in url:
            status, body = 200, {"resourceType": "Patient", "id": "1"}
        elif "/Observation" in url:
            status, body = 200, {"resourceType": "Bundle", "type": "searchset", "entry": []}
        else:
            status, body = 403, {"resourceType": "OperationOutcome", "issue": []}
        response = requests.Response()
        response.status_code = status
        response.headers["Content-Type"] = "application/fhir+json"
        response._content = json.dumps(body).encode()
        response.url = url
        return response

    def close(self) -> None:
        pass


def client() -> FhirClient:
    session = requests.Session()
    session.mount("https://ehr.example.org", Server())
    return FhirClient(BASE, "token", session, deadline=time.monotonic() + 5)


def test_one_refused_search_does_not_hide_what_the_others_found() -> None:
    heard: list[str] = []
    gathered = client().gather(
        {"patient": "Patient/1", "labs": "Observation?patient=1", "conditions": "Condition?patient=1"},
        timing=lambda key, seconds: heard.append(key),
    )
    assert gathered.values["patient"] == {"resourceType": "Patient", "id": "1"}
    assert gathered.values["labs"]["resourceType"] == "Bundle"
    assert isinstance(gathered.failures["conditions"], FhirRefused)
    assert gathered.failures["conditions"].status == 403
    assert set(gathered.values) | set(gathered.failures) == {"patient", "labs", "conditions"}
    assert sorted(heard) == ["conditions", "labs", "patient"]


def test_a_first_page_sent_along_is_followed_not_searched_again() -> None:
    first = {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": {"id": "a"}}]}
    gathered = client().gather({"labs": first})
    assert gathered.values["labs"]["entry"] == [{"resource": {"id": "a"}}]
    assert not gathered.failures
