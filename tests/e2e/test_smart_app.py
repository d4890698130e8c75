"""The SMART app in Chromium through the sandbox EHR (issue 7): card link, EHR launch, authorize,
token, and the details page for each demo patient; the negative paths end on a clear page."""

from __future__ import annotations

import re
from collections.abc import Callable
from urllib.parse import parse_qs, urlsplit

import pytest
from playwright.sync_api import ConsoleMessage, FrameLocator, Page, Route, expect

from smart_app.views import EXTENSION, SmartRuntime
from tests.e2e.conftest import Stack
from tests.e2e.smart_fixtures import smart_stack_fixture  # noqa: F401 - the smart_stack fixture
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
    runtime: SmartRuntime = stack.service.extensions[EXTENSION]

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


def test_an_expired_token_ends_on_a_clear_page(smart_stack: Callable[..., Stack], page: Page) -> None:
    """With one-second tokens the page says access expired and how to get it back."""
    app = launch_from_card(page, smart_stack(ehr={"access_token_ttl": 1}), "ichis-demo-2")
    expect(app.get_by_test_id("error-page")).to_have_attribute("data-error", "token-expired")
    expect(app.get_by_test_id("error-title")).to_have_text("Access to the record has expired")
