"""Every launch and every page that reads patient data leaves an AuditEvent in the service's spool,
and a card -> launch -> page journey is found in the real HAPI server the way an auditor searches."""

from __future__ import annotations

import base64
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import pytest

from cds_service.audit import AuditSpool
from fhir_mappings.outbound import Destinations
from smart_app.auditing import audit_target
from tests.http.conftest import hook_body
from tests.integration.test_audit_trail import drain, search
from tests.smart.conftest import SmartEnv, app_context

USER = "Practitioner/ichis-sandbox-clinician"
EHR = "https://ehr.hospital.example/fhir"


def activity(record: dict[str, Any]) -> list[str]:
    return [c["code"] for c in record["subtype"] if c["system"] == "urn:ichis:audit:activity"]


def queries(record: dict[str, Any]) -> list[tuple[str, str]]:
    """The requests a record lists: (the query, its result)."""
    return [
        (base64.b64decode(e["query"]).decode(), e["detail"][0]["valueString"])
        for e in record["entity"]
        if e.get("query")
    ]


def identifiers(record: dict[str, Any]) -> list[str]:
    return [e["what"]["identifier"]["value"] for e in record["entity"] if "identifier" in e.get("what", {})]


def test_a_launch_and_its_page_are_each_recorded_with_user_app_ehr_patient_and_card(
    smart_env: Callable[..., SmartEnv],
) -> None:
    """The launch (Application Start) and the page (reads and searches) name who, from where, for
    which patient and which card, and the page lists each request with its result."""
    env = smart_env()
    env.fhir.add_patient("ichis-demo-2")
    assert env.open("ichis-demo-2", appContext=app_context("ichis-demo-2")).status_code == 200
    launch, page = env.spooled()
    assert (activity(launch), activity(page)) == (["smart-launch"], ["smart-page-view"])
    for record in (launch, page):
        assert record["outcome"] == "0"
        user, app, server = record["agent"]
        assert (user["altId"], user["who"]["reference"]) == (USER, USER)
        assert user["who"]["identifier"]["value"] == f"{env.iss}/{USER}"
        assert app["who"]["identifier"]["value"] == "ichis-smart"
        assert server["who"]["identifier"]["value"] == env.iss
        assert record["entity"][0]["what"] == {"reference": "Patient/ichis-demo-2"}
        assert "urn:uuid:hook-1" in identifiers(record)
    assert "granted scope: launch openid fhirUser" in launch["outcomeDesc"]
    assert "with a refresh token" in launch["outcomeDesc"]
    made = queries(page)
    assert [query.split("?")[0] for query, _ in made] == ["Patient/ichis-demo-2", "Observation", "Condition"]
    assert {result for _, result in made} == {"200"}
    assert page["action"] == "E"
    assert "12.3" not in str(page)  # a lab value never enters a record


@dataclass(frozen=True)
class PageCase:
    """How the environment is set up and the launch made, and what the page's record says."""

    settings: dict[str, Any]
    launch: dict[str, Any]
    outcome: str
    words: str
    results: dict[str, str]


@pytest.mark.parametrize(
    "case",
    [
        PageCase(
            {},
            {"deny_scopes": ["patient/Observation.rs"]},
            "4",
            "page shown; not read (scope not granted or refused): patient/Observation.rs",
            {"Patient": "200", "Condition": "200"},
        ),
        PageCase(
            {"ehr": {"access_token_ttl": 1}, "smart": {"refresh_scope": "none"}},
            {},
            "4",
            "token-expired: The access the EHR granted for this launch ended at",
            {},
        ),
        PageCase(
            {"ehr": {"fhir_upstream": "http://127.0.0.1:9/fhir"}},  # nothing listens there
            {},
            "8",
            "fhir-unavailable: Reading the record failed: the FHIR server answered 502",
            {"Patient": "502", "Observation": "502", "Condition": "502"},
        ),
    ],
    ids=["denied-scope", "expired-token", "fhir-error"],
)
def test_a_page_that_could_not_read_everything_is_recorded_with_what_went_wrong(
    smart_env: Callable[..., SmartEnv], case: PageCase
) -> None:
    """A denied scope is a minor failure with the scope named; an ended token a refusal with no
    request made; a failing FHIR server a serious failure with each request's answer."""
    env = smart_env(**case.settings)
    env.fhir.add_patient("ichis-demo-2")
    env.open("ichis-demo-2", appContext=app_context("ichis-demo-2"), **case.launch)
    page = env.spooled()[-1]
    assert activity(page) == ["smart-page-view"]
    assert page["outcome"] == case.outcome
    assert page["outcomeDesc"].startswith(case.words)
    assert {query.split("?")[0].split("/")[0]: result for query, result in queries(page)} == case.results


def test_a_printout_is_recorded_as_a_page_view_and_a_print_view(smart_env: Callable[..., SmartEnv]) -> None:
    """The print view reads the record again: its own record, found among page views."""
    env = smart_env()
    env.fhir.add_patient("ichis-demo-0")
    page = env.open("ichis-demo-0", appContext=app_context("ichis-demo-0"))
    assert env.client.get(page.request.path + "/print").status_code == 200
    assert [activity(r) for r in env.spooled()] == [
        ["smart-launch"],
        ["smart-page-view"],
        ["smart-page-view", "smart-print-view"],
    ]


def test_a_refused_launch_is_recorded_with_what_the_ehr_had_said(smart_env: Callable[..., SmartEnv]) -> None:
    """A card for another patient than the launch: refused, and the record names both the user and
    the patient the EHR opened the app for."""
    env = smart_env()
    started = env.start("ichis-demo-2", appContext=app_context("ichis-demo-0"))
    assert env.callback(env.authorize(started.headers["Location"])).status_code == 409
    (record,) = env.spooled()
    assert activity(record) == ["smart-launch"]
    assert record["outcome"] == "4"
    assert record["outcomeDesc"].startswith(
        "context-mismatch: The card was computed for patient ichis-demo-0"
    )
    assert record["agent"][0]["altId"] == USER
    assert record["entity"][0]["what"] == {"reference": "Patient/ichis-demo-2"}


def test_an_authorization_the_ehr_denied_is_recorded_without_a_patient(
    smart_env: Callable[..., SmartEnv],
) -> None:
    """error=access_denied: the EHR said nothing of whom, so the record names the EHR and the app."""
    env = smart_env()
    location = env.start("ichis-demo-2").headers["Location"]
    state = dict(part.split("=", 1) for part in location.split("?", 1)[1].split("&"))["state"]
    env.client.get("/smart/callback?" + urlencode({"error": "access_denied", "state": state}))
    (record,) = env.spooled()
    assert (record["outcome"], record["outcomeDesc"]) == (
        "4",
        "authorization-denied: The EHR answered: access_denied.",
    )
    assert record["agent"][0]["who"] == {"display": "user not identified (the EHR sent no fhirUser)"}
    assert "entity" not in record  # no patient, no card: and FHIR allows no empty list


def test_requests_that_name_no_launch_of_this_browser_leave_no_record(
    smart_env: Callable[..., SmartEnv],
) -> None:
    """A forged callback or another browser's page address reads nothing and records nothing."""
    env = smart_env()
    env.fhir.add_patient("ichis-demo-2")
    page = env.open("ichis-demo-2", appContext=app_context("ichis-demo-2"))
    before = len(env.spooled())
    assert env.client.get("/smart/callback?code=x&state=forged").status_code == 400
    assert env.app.test_client().get(page.request.path).status_code == 404
    assert env.spooled()[before:] == []


def test_a_page_whose_record_cannot_be_kept_is_not_shown(
    smart_env: Callable[..., SmartEnv], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Answered means audited: when the spool cannot take the record the clinician gets the error
    page, without the patient's data. (A full disk cannot be made here: the spool's write fails
    as SQLite would report it.)"""
    env = smart_env()
    env.fhir.add_patient("ichis-demo-2")
    page = env.open("ichis-demo-2", appContext=app_context("ichis-demo-2"))
    assert page.status_code == 200

    def disk_full(*_: Any) -> None:
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(AuditSpool, "put", disk_full)
    again = env.client.get(page.request.path)
    assert again.status_code == 500
    assert 'data-error="internal"' in again.text
    assert "Demo-Two" not in again.text
    assert "IChIS 2" not in again.text


def test_a_card_its_launch_and_its_page_view_are_found_in_hapi_the_way_an_auditor_searches(
    smart_env: Callable[..., SmartEnv], hapi_url: str
) -> None:
    """The hook call, the launch from its card and the page view reach HAPI through the spool; the
    README's searches find who opened the patient's page, and the card's whole trail."""
    env = smart_env(
        service={"audit_fhir_url": hapi_url, "allow_http_audit": True, "audit_poll_seconds": 0.05}
    )
    env.fhir.add_patient("ichis-demo-2")
    body = hook_body("ichis-demo-2", prefetch=None, fhir_server=hapi_url)
    reply = env.client.post("/cds-services/ichis-prognosis", json=body)
    assert reply.status_code == 200, reply.get_json()
    (link,) = reply.get_json()["cards"][0]["links"]
    assert env.open("ichis-demo-2", appContext=link["appContext"]).status_code == 200
    drain(env.app)
    hook = f"urn:uuid:{body['hookInstance']}"

    # Who opened this patient's page (and when, from which card):
    views = search(
        hapi_url,
        patient="Patient/ichis-demo-2",
        subtype="urn:ichis:audit:activity|smart-page-view",
        _sort="-date",
    )
    (view,) = [r for r in views if hook in identifiers(r)]
    assert view["agent"][0]["altId"] == USER
    assert view["recorded"]
    # The card's trail, by its hookInstance: the hook call, the launch, the page view.
    trail = search(hapi_url, identifier=f"urn:ietf:rfc:3986|{hook}")
    assert sorted(activity(r)[0] for r in trail) == ["cds-hook-call", "smart-launch", "smart-page-view"]
    # Everything this user did, hook records and page views alike.
    assert view["id"] in {r["id"] for r in search(hapi_url, altid=USER, _id=view["id"])}


@pytest.mark.parametrize(
    ("audit_fhir_url", "allowed_hosts", "iss", "target"),
    [
        ("", (), EHR, ""),
        ("https://audit.hospital.example/fhir", ("ehr.hospital.example",), EHR, ""),
        ("ehr", ("ehr.hospital.example",), EHR, EHR),
        ("ehr", ("EHR.hospital.example:443",), EHR, EHR),
        ("ehr", ("other.example",), EHR, ""),
        ("ehr", (), EHR, ""),
        ("ehr", ("ehr.hospital.example",), "http://ehr.hospital.example/fhir", ""),  # https only
    ],
)
def test_a_record_goes_where_the_services_rule_sends_hook_records(
    audit_fhir_url: str, allowed_hosts: tuple[str, ...], iss: str, target: str
) -> None:
    """The configured repository (empty target), or with "ehr" the launch's EHR when it passes the
    rules of FHIR call-backs (https, fhir_allowed_hosts); otherwise the record stays in the spool."""
    destinations = Destinations("fhirServer", allow_http=False, allowed_hosts=allowed_hosts)
    assert audit_target(audit_fhir_url, iss, destinations) == target


def test_a_token_request_the_ehr_refused_is_recorded_as_a_refusal(smart_env: Callable[..., SmartEnv]) -> None:
    """A wrong client secret: the EHR answers 401 invalid_client; the launch's record says refused (4)."""
    env = smart_env(smart={"client_secret": "not-the-secret"})
    assert env.callback(env.authorize(env.start("ichis-demo-2").headers["Location"])).status_code == 502
    (record,) = env.spooled()
    assert record["outcome"] == "4"
    assert (
        record["outcomeDesc"] == "token-failed: The EHR refused the token request (HTTP 401, invalid_client)."
    )
