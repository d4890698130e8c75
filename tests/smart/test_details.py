"""The details page: the score from fhir_mappings.assessment, its inputs, strata, trends, problems,
the granted scopes honoured, and the negative paths that end on a clear page."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from datetime import timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
import requests

from cds_service.wiring import service_of
from fhir_mappings.assessment import assess, assessment_json
from fhir_mappings.bundles import dumps, loads
from fhir_mappings.config import load_mapping_config
from fhir_mappings.subjects import CallPatient
from tests.integration.proxy import RecordingProxy
from tests.smart.conftest import NOW, SmartEnv, app_context

RESEARCH = "http://hospital.example/sysmex-xn"


def text_of(html: str) -> str:
    """The page's text with tags and runs of white space removed, for matching sentences."""
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html)).replace("&gt;", ">").replace("&#39;", "'")


def test_the_ichis_2_page_shows_the_score_its_inputs_and_all_three_strata(
    smart_env: Callable[..., SmartEnv],
) -> None:
    """Both inputs as sent and normalised, their sources, the stratum, and the caveats."""
    env = smart_env()
    env.fhir.add_patient("ichis-demo-2")
    page = env.open("ichis-demo-2", appContext=app_context("ichis-demo-2"))
    text = text_of(page.text)
    assert 'data-testid="score-headline">IChIS 2 of 2<' in page.text
    assert "median overall survival 54 days (0.0-126.1)" in text
    neutrophils = text.split("Neutrophils (NEUT#)", 2)[1]
    drawn = (NOW - timedelta(days=1)).astimezone(timezone(timedelta(hours=-5))).strftime("%Y-%m-%d %H:%M %z")
    for expected in ("12.3", "10*9/L", "12,300/uL", "cut-off > 9,000/uL", drawn, "final"):
        assert expected in neutrophils
    assert "Observation/ichis-demo-2-0-neutrophils" in page.text
    assert "Observation/ichis-demo-2-0-ig" in page.text
    assert "150/uL" in text
    assert re.search(
        r'class="this-stratum" aria-current="true" data-testid="stratum-row" data-score="2"', page.text
    )
    assert page.text.count('data-testid="stratum-row"') == 3
    assert "305 days (203.1-406.9)" in text  # IChIS 0's published median OS, in the table
    assert "not a reason to withhold treatment" in text
    assert "not externally validated" in text
    assert "Tuberc Respir Dis (Seoul) 2024;87(4):483-493" in text
    assert "MedicationRequest/draft-1" in text
    assert f"reference time {NOW:%Y-%m-%d %H:%M} UTC" in text
    assert 'data-testid="patient-banner" data-patient-id="ichis-demo-2"' in page.text
    assert "Chloe Demo-Two" in text


def test_the_page_states_exactly_what_the_shared_assessment_computes(
    smart_env: Callable[..., SmartEnv],
) -> None:
    """The score and inputs are those of fhir_mappings.assessment.assess over the same resources."""
    env = smart_env()
    env.fhir.add_patient("ichis-demo-derived")
    page = env.open("ichis-demo-derived", appContext=app_context("ichis-demo-derived"))
    entries = [(r, None) for r in loads(dumps(env.fhir.resources))]
    expected = assessment_json(
        assess(entries, NOW, load_mapping_config(), patient=CallPatient("ichis-demo-derived"))
    )
    ig = expected["parts"]["immature_granulocytes"]
    assert (expected["ichis"], ig["value_per_uL"], ig["derived"]) == (1, "128.8", True)
    text = text_of(page.text)
    assert f"IChIS {expected['ichis']} of 2" in text
    assert "128.8/uL" in text
    assert "yes: IG% 1.4 % x WBC 9.2 /nL / 100" in text
    assert "Ask the laboratory to report IG# directly." in text


@pytest.mark.parametrize(
    ("patient", "expected"),
    [
        ("ichis-demo-0", ["IChIS 0 of 2", "4,210/uL", "20/uL"]),
        ("ichis-demo-1", ["IChIS 1 of 2", "10.4", "K/uL", "10,400/uL"]),
        ("ichis-demo-partial", ["IChIS 1 to 2 of 2", "no usable result", "no immature granulocyte count"]),
        ("ichis-demo-stale", ["IChIS not available", "older than the 14-day look-back window"]),
        ("ichis-demo-units", ["IChIS 2 of 2", "9050", "/mm3", "9,050/uL", "{cells}/uL", "85/uL"]),
        (
            "ichis-demo-boundary",
            ["IChIS 0 of 2", "9,000/uL is not above 9,000/uL", "80/uL is not above 80/uL"],
        ),
        ("ichis-demo-melanoma", ["IChIS 1 of 2", "Outside the study population: No lung cancer diagnosis"]),
        ("ichis-demo-sclc", ["IChIS 0 of 2", "Outside the study population: Small-cell lung cancer"]),
    ],
)
def test_each_demo_patient_shows_its_score_and_what_decided_it(
    smart_env: Callable[..., SmartEnv], patient: str, expected: list[str]
) -> None:
    """One case per demo patient: the headline and the values or problems that decided it."""
    env = smart_env()
    env.fhir.add_patient(patient)
    text = text_of(env.open(patient, appContext=app_context(patient)).text)
    for words in expected:
        assert words in text


def test_trend_charts_draw_the_cutoffs_and_mark_the_baseline_sample(
    smart_env: Callable[..., SmartEnv],
) -> None:
    """Two SVG charts, each with its cut-off line, one baseline marker and every value in a table."""
    env = smart_env()
    env.fhir.add_patient("ichis-demo-2")
    html = env.open("ichis-demo-2", appContext=app_context("ichis-demo-2")).text
    assert html.count('data-testid="trend-chart"') == 2
    assert html.count('data-testid="cutoff-line"') == 2
    assert html.count('data-testid="baseline-marker"') == 2
    assert "cut-off &gt; 9,000/uL" in html
    assert "cut-off &gt; 80/uL" in html
    assert html.count("Observation/ichis-demo-2-3-neutrophils") >= 2  # a point's title and its table row
    assert 'role="img"' in html
    assert "<script" not in html  # the page works without JavaScript
    assert "style=" not in html  # nothing the Content-Security-Policy would block


def test_the_cards_order_time_is_the_reference_time(smart_env: Callable[..., SmartEnv]) -> None:
    """Scored 35 days before now, patient 1's older normal count gives IChIS 0, as the card would have."""
    env = smart_env()
    env.fhir.add_patient("ichis-demo-1")
    at = NOW - timedelta(days=35)
    text = text_of(env.open("ichis-demo-1", appContext=app_context("ichis-demo-1", at=at)).text)
    assert "IChIS 0 of 2" in text
    assert "8,200/uL" in text
    assert f"reference time {at:%Y-%m-%d %H:%M} UTC" in text
    assert "result(s) after the reference time are not shown" in text


def test_without_an_order_time_the_score_is_as_of_opening_and_says_so(
    smart_env: Callable[..., SmartEnv],
) -> None:
    """A launch without the card's context scores at the time the app is opened."""
    env = smart_env()
    env.fhir.add_patient("ichis-demo-2", now=NOW.now(NOW.tzinfo))
    text = text_of(env.open("ichis-demo-2").text)
    assert "IChIS 2 of 2" in text
    assert "no order time came with the launch" in text


def test_a_denied_observation_scope_means_no_lab_data_said_plainly(
    smart_env: Callable[..., SmartEnv],
) -> None:
    """Without patient/Observation.rs nothing is fetched and the page says why there is no score."""
    env = smart_env()
    env.fhir.add_patient("ichis-demo-2")
    page = env.open(
        "ichis-demo-2", appContext=app_context("ichis-demo-2"), deny_scopes=["patient/Observation.rs"]
    )
    assert page.status_code == 200
    text = text_of(page.text)
    assert "IChIS not available" in text
    assert "did not grant the app access to laboratory results (patient/Observation.rs)" in text
    assert "grant the app patient/Observation.rs (client ichis-smart)" in text
    assert 'data-testid="inputs"' not in page.text
    assert not [q for q in env.fhir_queries() if q.startswith("Observation")]


def test_a_denied_condition_scope_leaves_the_population_unknown(smart_env: Callable[..., SmartEnv]) -> None:
    """Without diagnoses the page cannot say whether the patient is in the study population, and says so."""
    env = smart_env()
    env.fhir.add_patient("ichis-demo-2")
    page = env.open(
        "ichis-demo-2", appContext=app_context("ichis-demo-2"), deny_scopes=["patient/Condition.rs"]
    )
    text = text_of(page.text)
    assert "IChIS 2 of 2" in text
    assert "Diagnoses could not be read" in text
    assert "patient/Condition.rs" in text


def test_a_denied_patient_scope_keeps_the_banner_with_the_id_only(smart_env: Callable[..., SmartEnv]) -> None:
    """The banner still names the patient id and says why the name is missing."""
    env = smart_env()
    env.fhir.add_patient("ichis-demo-2")
    page = env.open("ichis-demo-2", appContext=app_context("ichis-demo-2"), deny_scopes=["patient/Patient.r"])
    text = text_of(page.text)
    assert "name not available" in text
    assert "the EHR did not grant patient/Patient.r" in text


def test_the_banner_follows_need_patient_banner_but_a_printout_always_names_the_patient(
    smart_env: Callable[..., SmartEnv],
) -> None:
    """need_patient_banner false hides it in the EHR's frame; paper has no EHR around it."""
    env = smart_env(ehr={"need_patient_banner": False})
    env.fhir.add_patient("ichis-demo-2")
    page = env.open("ichis-demo-2", appContext=app_context("ichis-demo-2"))
    assert 'data-testid="patient-banner"' not in page.text
    printed = env.client.get(page.request.path + "/print")
    assert printed.status_code == 200
    assert 'data-testid="patient-banner"' in printed.text
    assert 'class="print-view"' in printed.text
    assert "print.js" in printed.text


def _research_observation(oid: str, code: str, value: str, unit: str, when: str) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": oid,
        "status": "final",
        "code": {"coding": [{"system": RESEARCH, "code": code}]},
        "subject": {"reference": "Patient/ichis-demo-2"},
        "effectiveDateTime": when,
        "valueQuantity": {"value": Decimal(value), "unit": unit},
    }


def test_research_parameters_and_icis_appear_when_the_site_configured_them(
    smart_env: Callable[..., SmartEnv],
) -> None:
    """NEUT-SFL, Delta-He and AS-LYMP of the baseline sample, and ICIS from the site's cut-offs."""
    bands = [{"above": "1", "points": 1}, {"above": "2", "points": 2}, {"above": "3", "points": 4}]
    icis = {name: {"unit": "", "bands": bands} for name in ("neut_sfl", "delta_he", "neutrophils", "as_lymp")}
    icis["immature_granulocytes"] = {"unit": "/uL", "bands": bands}
    env = smart_env(service={"site": {"research_code_systems": [RESEARCH], "icis": icis}})
    env.fhir.add_patient("ichis-demo-2")
    baseline_time = next(
        r["effectiveDateTime"] for r in env.fhir.resources if r["id"] == "ichis-demo-2-0-neutrophils"
    )
    env.fhir.add(
        [
            _research_observation("smart-test-sfl", "NEUT-SFL", "50.2", "ch", baseline_time),
            _research_observation("smart-test-dhe", "Delta-He", "1.4", "pg", baseline_time),
            _research_observation("smart-test-asl", "AS-LYMP", "0.02", "10*3/uL", baseline_time),
        ]
    )
    text = text_of(env.open("ichis-demo-2", appContext=app_context("ichis-demo-2")).text)
    assert "Mean fluorescence of mature neutrophils (NEUT-SFL) 50.2 ch" in text
    assert "Delta-He (RET-He minus RBC-He) 1.4 pg" in text
    assert "Antibody-secreting lymphocytes (AS-LYMP#) 20/uL" in text
    assert "ICIS 17 (site-configured cut-offs)" in text  # 4 + 4 + 4 + 1 + 4


def test_without_a_research_code_system_the_page_says_none_can_be_recognised(
    smart_env: Callable[..., SmartEnv],
) -> None:
    """The research section explains the configuration it needs rather than staying silent."""
    env = smart_env()
    env.fhir.add_patient("ichis-demo-0")
    text = text_of(env.open("ichis-demo-0", appContext=app_context("ichis-demo-0")).text)
    assert "research_code_systems" in text


def test_a_failing_fhir_server_ends_on_a_clear_page(smart_env: Callable[..., SmartEnv]) -> None:
    """A 5xx behind the EHR's FHIR endpoint is reported, with what to do, and no stack trace."""
    env = smart_env(ehr={"fhir_upstream": "http://127.0.0.1:9/fhir"})  # nothing listens there
    page = env.open("ichis-demo-2", appContext=app_context("ichis-demo-2"))
    assert page.status_code == 502
    assert 'data-error="fhir-unavailable"' in page.text
    assert "Traceback" not in page.text


def test_a_lab_search_the_server_marks_as_failed_shows_no_score(
    smart_env: Callable[..., SmartEnv], hapi_url: str
) -> None:
    """HAPI's real answer with an error OperationOutcome entry added on the way (HAPI cannot be
    made to send one): the results may be partial, so the page says so instead of a score that
    would look complete."""

    def add_outcome(path: str, payload: bytes) -> bytes:
        if "/Observation?" not in path:
            return payload
        bundle = json.loads(payload)
        issue = {"severity": "error", "code": "incomplete", "diagnostics": "search stopped early"}
        outcome = {"resourceType": "OperationOutcome", "issue": [issue]}
        bundle.setdefault("entry", []).append({"resource": outcome, "search": {"mode": "outcome"}})
        return json.dumps(bundle).encode()

    proxy = RecordingProxy(hapi_url, alter=add_outcome)
    try:
        env = smart_env(ehr={"fhir_upstream": proxy.base})
        env.fhir.add_patient("ichis-demo-2")
        page = env.open("ichis-demo-2", appContext=app_context("ichis-demo-2"))
    finally:
        proxy.close()
    assert any("/Observation?" in path for _, path, _ in proxy.seen)
    assert page.status_code == 502
    assert 'data-error="fhir-unavailable"' in page.text
    assert "reported an error in the observations it sent (search stopped early)" in text_of(page.text)
    assert "IChIS 2 of 2" not in page.text


def test_an_unexpected_failure_ends_on_the_error_page_without_a_trace(
    smart_env: Callable[..., SmartEnv], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug is logged for the administrators; the clinician sees what to do, not the trace."""
    env = smart_env()
    env.fhir.add_patient("ichis-demo-2")

    def broken(*_: Any) -> None:
        raise RuntimeError("a bug with a secret-looking message")

    monkeypatch.setattr("smart_app.views.assess", broken)
    page = env.open("ichis-demo-2", appContext=app_context("ichis-demo-2"))
    assert page.status_code == 500
    assert 'data-error="internal"' in page.text
    assert "secret-looking" not in page.text
    assert "Traceback" not in page.text


def test_a_launch_page_opened_by_another_browser_shows_nothing(smart_env: Callable[..., SmartEnv]) -> None:
    """The page's address alone is not enough: it belongs to the session that launched it."""
    env = smart_env()
    env.fhir.add_patient("ichis-demo-2")
    page = env.open("ichis-demo-2", appContext=app_context("ichis-demo-2"))
    stranger = env.app.test_client().get(page.request.path)
    assert stranger.status_code == 404
    assert 'data-error="unknown-launch"' in stranger.text
    assert "Demo-Two" not in stranger.text


def test_tokens_stay_on_the_server_and_out_of_logs(
    smart_env: Callable[..., SmartEnv], caplog: pytest.LogCaptureFixture
) -> None:
    """The access token is in no cookie, page or log line, and not readable in the session database."""
    caplog.set_level(logging.DEBUG)
    env = smart_env()
    env.fhir.add_patient("ichis-demo-2")
    page = env.open("ichis-demo-2", appContext=app_context("ichis-demo-2"))
    log = requests.get(f"{env.ehr_url}/_testing/fhir-requests", timeout=10).json()
    (token,) = {entry["token"] for entry in log if entry["client_id"] == "ichis-smart"}
    cookie = env.client.get_cookie("ichis_smart", path="/smart")
    assert cookie is not None
    assert token not in cookie.value
    assert token not in page.text
    logged = " ".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    assert "smart launch" in logged
    assert token not in logged
    assert "12,300" not in logged
    # The database and its write-ahead log: with kept connections the newest writes are in the log.
    data_dir = service_of(env.app).runtime.settings.data_dir
    database = b"".join(path.read_bytes() for path in data_dir.glob("smart.sqlite*"))
    assert token.encode() not in database


def test_a_result_of_another_patient_inside_this_patients_panel_is_left_out_of_the_page(
    smart_env: Callable[..., SmartEnv],
) -> None:
    """HAPI returns this patient's panel; the count contained in it names another patient: the page
    keeps IChIS 0 from the patient's own counts and says what was ignored."""
    env = smart_env()
    env.fhir.add_patient("ichis-demo-0")
    foreign_count = {
        "resourceType": "Observation",
        "id": "n",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "751-8"}]},
        "subject": {"reference": "Patient/ichis-demo-2"},
        "valueQuantity": {"value": 12.3, "unit": "10*3/uL"},
    }
    panel = {
        "resourceType": "Observation",
        "id": "ichis-demo-0-mixed-panel",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "57021-8"}]},
        "subject": {"reference": "Patient/ichis-demo-0"},
        "effectiveDateTime": (NOW - timedelta(hours=2)).isoformat(),
        "contained": [foreign_count],
        "hasMember": [{"reference": "#n"}],
    }
    env.fhir.add([panel])
    text = text_of(env.open("ichis-demo-0", appContext=app_context("ichis-demo-0")).text)
    assert "IChIS 0 of 2" in text
    assert "1 result of another patient was ignored (Observation/ichis-demo-0-mixed-panel#n)" in text
