"""The SMART app in Chromium through the sandbox EHR: card link, EHR launch, authorize, token, and
the details page for each demo patient; sessions renewed with the refresh token; the EHR's style
and banner choice; the audit trail of the journey in HAPI; the negative paths end on a clear page."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from urllib.parse import parse_qs, urlsplit

import pytest
from playwright.sync_api import ConsoleMessage, FrameLocator, Page, Route, expect

from sandbox.ehr.state import EXTENSION as EHR_STATE
from sandbox.ehr.state import EhrState
from smart_app.runtime import smart_runtime
from tests.e2e.conftest import Stack
from tests.e2e.smart_fixtures import smart_stack_fixture  # noqa: F401 - the smart_stack fixture
from tests.integration.test_audit_trail import drain, search
from tests.sandbox.conftest import ARTIFACTS

pytestmark = pytest.mark.integration

SCREENSHOT = ARTIFACTS / "smart-ichis2-details.png"


def launch_from_card(page: Page, stack: Stack, patient: str, *, deny: str = "") -> FrameLocator:
    """Open the chart, draft pembrolizumab, and click the card's SMART link; the app's frame."""
    page.goto(f"{stack.ehr_url}/")
    page.get_by_test_id("patient-picker").select_option(patient)
    page.get_by_test_id("open-chart").click()
    expect(page.get_by_test_id("patient-banner")).to_have_attribute("data-patient-id", patient)
    page.get_by_test_id("order-medication").select_option("pembrolizumab-product")
    page.get_by_test_id("draft-order").click()
    card = page.get_by_test_id("card")
    expect(card).to_have_count(1)
    if deny:
        card.get_by_text("launch options").click()
        card.get_by_test_id("deny-scopes").fill(deny)
    card.get_by_test_id("smart-link").click()
    return page.frame_locator('[data-testid="app-frame"]')


def app_url(page: Page) -> str:
    return next(frame.url for frame in page.frames if "/smart/app/" in frame.url)


@pytest.mark.parametrize(
    ("patient", "headline", "expected"),
    [
        ("ichis-demo-0", "IChIS 0 of 2", ["4,210/uL", "20/uL"]),
        ("ichis-demo-1", "IChIS 1 of 2", ["10,400/uL", "K/uL"]),
        ("ichis-demo-partial", "IChIS 1 to 2 of 2", ["9,600/uL", "no immature granulocyte count"]),
        ("ichis-demo-stale", "IChIS not available", ["older than the 14-day look-back window"]),
        ("ichis-demo-derived", "IChIS 1 of 2", ["128.8/uL", "yes: IG% 1.4 % x WBC 9.2 /nL / 100"]),
        ("ichis-demo-units", "IChIS 2 of 2", ["9,050/uL", "/mm3", "85/uL"]),
        (
            "ichis-demo-boundary",
            "IChIS 0 of 2",
            ["9,000/uL is not above 9,000/uL", "80/uL is not above 80/uL"],
        ),
        ("ichis-demo-melanoma", "IChIS 1 of 2", ["No lung cancer diagnosis is on record"]),
        ("ichis-demo-sclc", "IChIS 0 of 2", ["Small-cell lung cancer is on record"]),
    ],
)
def test_the_card_link_opens_the_details_of_each_demo_patient(
    smart_stack: Callable[..., Stack], page: Page, patient: str, headline: str, expected: list[str]
) -> None:
    """Card link, launch, authorize, token: the page shows the card's patient's score and inputs."""
    app = launch_from_card(page, smart_stack(), patient)
    expect(app.get_by_test_id("score-headline")).to_have_text(headline)
    expect(app.get_by_test_id("patient-banner")).to_have_attribute("data-patient-id", patient)
    for words in expected:
        expect(app.locator("main")).to_contain_text(words)


def test_the_ichis_2_details_page_shows_strata_trends_and_caveats_and_is_saved_as_a_screenshot(
    smart_stack: Callable[..., Stack], page: Page
) -> None:
    """The IChIS 2 page: its stratum highlighted, both charts with cut-offs and baseline, no errors."""
    stack = smart_stack()
    problems: list[str] = []

    def note(message: ConsoleMessage) -> None:
        if message.type == "error" and message.location.get("url", "").startswith(stack.service_url):
            problems.append(message.text)

    page.on("console", note)
    app = launch_from_card(page, stack, "ichis-demo-2")
    expect(app.get_by_test_id("score-headline")).to_have_text("IChIS 2 of 2")
    expect(app.get_by_test_id("stratum-line")).to_contain_text("median overall survival 54 days (0.0-126.1)")
    expect(app.locator('[data-testid="stratum-row"][aria-current="true"]')).to_have_attribute(
        "data-score", "2"
    )
    expect(app.get_by_test_id("strata-chart")).to_be_visible()
    expect(app.get_by_test_id("trend-chart")).to_have_count(2)
    expect(app.get_by_test_id("cutoff-line")).to_have_count(2)
    expect(app.get_by_test_id("baseline-marker")).to_have_count(2)
    neutrophils = app.locator('[data-testid="input-row"][data-part="neutrophils"]')
    expect(neutrophils.get_by_test_id("value-as-sent")).to_have_text("12.3")
    expect(neutrophils.get_by_test_id("unit-as-sent")).to_have_text("10*9/L")
    expect(neutrophils.get_by_test_id("normalised")).to_contain_text("12,300/uL")
    expect(neutrophils.get_by_test_id("source")).to_have_text("Observation/ichis-demo-2-0-neutrophils")
    expect(app.get_by_test_id("caveat")).to_contain_text("not a reason to withhold treatment")
    expect(app.get_by_test_id("citation")).to_contain_text("Tuberc Respir Dis (Seoul) 2024;87(4):483-493")
    assert problems == []  # the app's frame: no style or script blocked by its CSP, no failed load

    # The README's picture: the page alone, at the width of the EHR's pane.
    alone = page.context.new_page()
    alone.set_viewport_size({"width": 1024, "height": 900})
    alone.goto(app_url(page))
    expect(alone.get_by_test_id("score-headline")).to_have_text("IChIS 2 of 2")
    ARTIFACTS.mkdir(exist_ok=True)
    alone.screenshot(path=str(SCREENSHOT), full_page=True)
    assert SCREENSHOT.stat().st_size > 10_000
    alone.keyboard.press("Tab")  # keyboard users start at the skip link, then the sections
    expect(alone.locator(".skip-link")).to_be_focused()
    alone.keyboard.press("Tab")
    expect(alone.get_by_role("link", name="Score", exact=True)).to_be_focused()
    alone.close()


def test_a_callback_with_a_state_this_session_never_sent_ends_on_a_clear_page(
    smart_stack: Callable[..., Stack], page: Page
) -> None:
    """A forged callback in the app's frame is refused, with what to do."""
    stack = smart_stack()
    app = launch_from_card(page, stack, "ichis-demo-0")
    expect(app.get_by_test_id("score-headline")).to_have_text("IChIS 0 of 2")
    frame = next(frame for frame in page.frames if "/smart/app/" in frame.url)
    frame.goto(f"{stack.service_url}/smart/callback?code=forged&state=not-from-this-session")
    expect(app.get_by_test_id("error-page")).to_have_attribute("data-error", "state-mismatch")
    expect(app.get_by_test_id("error-advice")).to_contain_text("Open the app again from the IChIS card")


def test_a_launch_whose_pkce_verifier_went_missing_ends_on_a_clear_page(
    smart_stack: Callable[..., Stack], page: Page
) -> None:
    """The verifier is removed from the server-side session before the EHR answers: no token is asked for."""
    stack = smart_stack()
    runtime = smart_runtime(stack.service)

    def drop_verifier(route: Route) -> None:
        # Playwright does not route the requests of a redirect chain, so the app's own launch
        # response is fetched here, the verifier dropped, and the response handed to the browser.
        response = route.fetch(max_redirects=0)
        state = parse_qs(urlsplit(response.headers["location"]).query)["state"][0]
        cookie = re.search(r"ichis_smart=([^;]+)", response.headers["set-cookie"])
        session = runtime.codec.loads(cookie.group(1) if cookie else None)
        assert session is not None
        pending = runtime.store.take_pending(session, state)
        assert pending is not None
        del pending["code_verifier"]
        runtime.store.put_pending(session, state, pending)
        route.fulfill(response=response)

    page.route(re.compile(r"/smart/launch\?"), drop_verifier)
    app = launch_from_card(page, stack, "ichis-demo-2")
    expect(app.get_by_test_id("error-page")).to_have_attribute("data-error", "pkce-verifier-missing")
    expect(app.get_by_test_id("error-title")).to_have_text("The launch cannot be completed securely")


def test_a_denied_observation_scope_shows_no_lab_data_and_says_why(
    smart_stack: Callable[..., Stack], page: Page
) -> None:
    """The EHR's launch options deny patient/Observation.rs: no score, and the page says plainly why."""
    app = launch_from_card(page, smart_stack(), "ichis-demo-2", deny="patient/Observation.rs")
    expect(app.get_by_test_id("score-headline")).to_have_text("IChIS not available")
    expect(app.get_by_test_id("problems")).to_contain_text(
        "did not grant the app access to laboratory results (patient/Observation.rs)"
    )
    expect(app.get_by_test_id("granted-scopes")).not_to_contain_text("patient/Observation.rs")
    expect(app.get_by_test_id("inputs")).to_have_count(0)


def test_an_access_that_cannot_be_renewed_ends_on_a_page_that_says_so(
    smart_stack: Callable[..., Stack], page: Page
) -> None:
    """One-second tokens and online_access denied in the launch options: no refresh token, so the
    page says access ended, that it cannot be renewed, and how to get it back."""
    app = launch_from_card(
        page, smart_stack(ehr={"access_token_ttl": 1}), "ichis-demo-2", deny="online_access"
    )
    expect(app.get_by_test_id("error-page")).to_have_attribute("data-error", "token-expired")
    expect(app.get_by_test_id("error-title")).to_have_text(
        "Access to the record has ended and cannot be renewed"
    )
    expect(app.get_by_test_id("error-detail")).to_contain_text("the EHR granted no refresh token")
    expect(app.get_by_test_id("error-advice")).to_contain_text("Open the app again from the IChIS card")


def test_a_session_outlives_its_access_token_by_renewing_it(
    smart_stack: Callable[..., Stack], page: Page
) -> None:
    """An hour later, as the app's clock sees it, a reload renews the token with the refresh token
    from the sandbox's authorization server and shows the page again."""
    # A stack of its own: its clock is moved.
    stack = smart_stack(smart={"refresh_scope": "online_access"})
    app = launch_from_card(page, stack, "ichis-demo-1")
    expect(app.get_by_test_id("score-headline")).to_have_text("IChIS 1 of 2")
    expect(app.get_by_test_id("session-status")).to_contain_text(
        "renews its access to the record automatically"
    )
    runtime = smart_runtime(stack.service)
    state: EhrState = stack.ehr.extensions[EHR_STATE]
    before = {entry.token for entry in state.fhir_log()}
    runtime.store.clock = lambda: time.time() + 3600
    frame = next(frame for frame in page.frames if "/smart/app/" in frame.url)
    frame.goto(frame.url)
    expect(app.get_by_test_id("score-headline")).to_have_text("IChIS 1 of 2")
    renewed = {entry.token for entry in state.fhir_log() if entry.client_id == "ichis-smart"} - before
    assert len(renewed) == 1  # the reload read the record with one new, renewed token


def test_an_ehr_launch_without_the_patient_banner_leaves_it_to_the_ehr_but_a_printout_names_the_patient(
    smart_stack: Callable[..., Stack], page: Page
) -> None:
    """need_patient_banner false: the EHR's chart shows who the patient is, the app does not repeat
    it; its print view, which leaves the EHR behind, does."""
    stack = smart_stack(ehr={"need_patient_banner": False})
    app = launch_from_card(page, stack, "ichis-demo-2")
    expect(app.get_by_test_id("score-headline")).to_have_text("IChIS 2 of 2")
    expect(app.get_by_test_id("patient-banner")).to_have_count(0)
    expect(page.get_by_test_id("patient-banner")).to_have_attribute("data-patient-id", "ichis-demo-2")
    app.get_by_test_id("print-link").click()
    expect(app.get_by_test_id("patient-banner")).to_have_attribute("data-patient-id", "ichis-demo-2")
    expect(app.get_by_test_id("patient-name")).to_have_text("Chloe Demo-Two")


def test_the_page_wears_the_ehrs_style_within_its_content_security_policy(
    smart_stack: Callable[..., Stack], page: Page
) -> None:
    """The sandbox's smart_style_url colours the page (its background #f7f7f4, its highlight on
    links), from the app's own stylesheet: the browser blocks nothing."""
    stack = smart_stack()
    blocked: list[str] = []
    page.on("console", lambda message: blocked.append(message.text) if message.type == "error" else None)
    app = launch_from_card(page, stack, "ichis-demo-0")
    expect(app.get_by_test_id("score-headline")).to_have_text("IChIS 0 of 2")
    expect(app.locator("body")).to_have_css("background-color", "rgb(247, 247, 244)")
    expect(app.get_by_test_id("print-link")).to_have_css("color", "rgb(29, 95, 168)")
    expect(app.locator("body")).to_have_css(
        "font-family", 'system-ui, -apple-system, "Segoe UI", Roboto, sans-serif'
    )
    assert [text for text in blocked if "Content Security Policy" in text] == []


def test_a_card_to_page_journey_leaves_the_trail_an_auditor_finds_in_hapi(
    smart_stack: Callable[..., Stack], page: Page
) -> None:
    """Card, launch and page in Chromium; then the README's auditor searches on HAPI find who opened
    the patient's page, and the card's whole trail by its hookInstance."""
    stack = smart_stack()
    app = launch_from_card(page, stack, "ichis-demo-partial")
    expect(app.get_by_test_id("score-headline")).to_have_text("IChIS 1 to 2 of 2")
    hook = f"urn:uuid:{app.get_by_test_id('card-hook-instance').inner_text()}"
    drain(stack.service)
    views = search(
        stack.fhir,
        patient="Patient/ichis-demo-partial",
        subtype="urn:ichis:audit:activity|smart-page-view",
        _sort="-date",
    )
    (view,) = [r for r in views if hook in str(r["entity"])]
    assert view["agent"][0]["altId"] == "Practitioner/ichis-sandbox-clinician"
    assert view["outcome"] == "0"
    trail = search(stack.fhir, identifier=f"urn:ietf:rfc:3986|{hook}", _sort="date")
    activities = [
        next(c["code"] for c in r["subtype"] if c["system"] == "urn:ichis:audit:activity") for r in trail
    ]
    assert activities == ["cds-hook-call", "smart-launch", "smart-page-view"]
