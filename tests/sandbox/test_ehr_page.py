"""The EHR page in Chromium: chart, labs, orders, cards, feedback and a SMART launch.

The CDS service and SMART app here are the stand-ins of ``standin.py``: they serve fixed,
spec-valid answers until the end-to-end tests (issue 6, item 4) drive the real ones.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from playwright.sync_api import Page, expect

from tests.sandbox.standin import StandIn

pytestmark = pytest.mark.integration

Stack = Callable[..., tuple[Flask, str, StandIn]]


def open_chart(page: Page, url: str, patient: str = "ehr-test-a") -> None:
    page.goto(f"{url}/")
    page.get_by_test_id("patient-picker").select_option(patient)
    page.get_by_test_id("open-chart").click()
    expect(page.get_by_test_id("patient-banner")).to_have_attribute("data-patient-id", patient)


def draft(page: Page, medication: str = "pembrolizumab-product") -> None:
    page.get_by_test_id("order-medication").select_option(medication)
    page.get_by_test_id("draft-order").click()


def test_picking_a_patient_shows_the_chart_with_labs_newest_first(stack: Stack, page: Page) -> None:
    """The banner names the patient; labs list value, unit and date, newest first, panel parts included."""
    _, url, _ = stack()
    open_chart(page, url)
    expect(page.get_by_test_id("patient-banner")).to_contain_text("Ann Alpha")
    expect(page.get_by_test_id("patient-banner")).to_contain_text("Encounter/ehr-test-a-visit")
    rows = page.get_by_test_id("lab-row")
    expect(rows).to_have_count(4)
    expect(rows.nth(0)).to_contain_text("2026-01-09")
    expect(rows.nth(2)).to_contain_text("6.1")
    expect(rows.nth(2)).to_contain_text("10*3/uL")
    expect(rows.nth(3)).to_contain_text("Lymphocytes")
    expect(rows.nth(3)).to_contain_text("2025-11-01")


def test_a_checkpoint_order_shows_the_card_rendered_faithfully(stack: Stack, page: Page) -> None:
    """Indicator, summary, markdown detail (no raw HTML), source, topic, suggestion, reasons and links."""
    _, url, _ = stack()
    open_chart(page, url)
    expect(page.get_by_test_id("prefetch-switch")).to_be_checked()
    draft(page)
    card = page.get_by_test_id("card")
    expect(card).to_have_count(1)
    expect(card).to_have_attribute("data-indicator", "warning")
    expect(card.get_by_test_id("card-indicator")).to_have_text("warning")
    expect(card.get_by_test_id("card-summary")).to_have_text(
        "Stand-in: checkpoint inhibitor ordered; baseline counts reviewed"
    )
    detail = card.get_by_test_id("card-detail")
    expect(detail.locator("table td").first).to_have_text("neutrophils")
    expect(detail.locator("strong")).to_have_text("Baseline")
    expect(detail.locator("script")).to_have_count(0)
    expect(detail).to_contain_text("<script>alert('x')</script>")  # shown as text, never run
    source = card.get_by_test_id("card-source")
    expect(source.locator("a")).to_have_attribute("href", "https://example.org/standin")
    expect(source.locator("a")).to_have_attribute("target", "_blank")
    expect(card.get_by_test_id("card-topic")).to_contain_text("Prognosis")
    expect(card.get_by_test_id("card-suggestion")).to_contain_text("Add a CBC with differential")
    expect(card.get_by_test_id("accept-suggestion")).to_have_count(1)
    expect(card.get_by_test_id("override-reason").locator("option")).to_have_count(3)
    expect(card.get_by_test_id("smart-link")).to_have_text("Open the stand-in app")
    expect(card.get_by_test_id("card-link")).to_have_attribute("target", "_blank")
    expect(page.get_by_test_id("http-status")).to_have_attribute("data-status", "200")


def test_with_prefetch_switched_off_the_service_fetches_the_labs_itself(stack: Stack, page: Page) -> None:
    """Unticking the prefetch switch sends no prefetch; the service reads through the EHR's FHIR endpoint."""
    _, url, standin = stack()
    open_chart(page, url)
    page.get_by_test_id("prefetch-switch").uncheck()
    draft(page)
    expect(page.get_by_test_id("card-detail")).to_contain_text("Fetched labs from fhirServer: HTTP 200.")
    expect(page.get_by_test_id("prefetch-summary")).to_contain_text("switched off")
    expect(page.get_by_test_id("prefetch-switch")).not_to_be_checked()
    assert "prefetch" not in standin.hook_calls()[0].body


def test_a_drug_that_is_not_a_checkpoint_inhibitor_shows_no_card(stack: Stack, page: Page) -> None:
    """Carboplatin gets an empty cards array, and the page says the service had nothing to show."""
    _, url, _ = stack()
    open_chart(page, url)
    draft(page, "carboplatin")
    expect(page.get_by_test_id("no-cards")).to_be_visible()
    expect(page.get_by_test_id("card")).to_have_count(0)


def test_accepting_and_overriding_cards_send_feedback(stack: Stack, page: Page) -> None:
    """Accept one card, override the next with a reason: two feedback calls, both shown as HTTP 200."""
    _, url, standin = stack()
    open_chart(page, url)
    draft(page)
    page.get_by_test_id("accept-suggestion").click()
    expect(page.get_by_test_id("card-outcome")).to_have_attribute("data-outcome", "accepted")
    expect(page.get_by_test_id("feedback-status")).to_have_attribute("data-status", "200")
    page.get_by_test_id("select-order").click()
    expect(page.get_by_test_id("override-card")).to_be_visible()
    page.get_by_test_id("override-reason").select_option(label="Already aware of the risk")
    page.get_by_test_id("override-comment").fill("seen in clinic")
    page.get_by_test_id("override-card").click()
    expect(page.get_by_test_id("card-outcome")).to_have_attribute("data-outcome", "overridden")
    expect(page.get_by_test_id("feedback-status")).to_have_attribute("data-status", "200")
    items: list[dict[str, Any]] = [call.body["feedback"][0] for call in standin.feedback_calls()]
    assert [item["outcome"] for item in items] == ["accepted", "overridden"]
    assert items[1]["overrideReason"]["userComment"] == "seen in clinic"


def test_a_refusing_service_is_shown_with_its_status_and_outcome(stack: Stack, page: Page) -> None:
    """A 412 is on the page as such, with the service's OperationOutcome in plain words."""
    _, url, standin = stack()
    standin.hook_status = 412
    open_chart(page, url)
    draft(page)
    expect(page.get_by_test_id("call-failed")).to_contain_text("HTTP 412")
    expect(page.get_by_test_id("operation-outcome")).to_contain_text("stand-in refuses: no labs")


def test_the_smart_link_launches_the_app_in_a_1024_pixel_pane(stack: Stack, page: Page) -> None:
    """The app runs the EHR launch in the pane and gets the chart's patient and the card's appContext."""
    _, url, standin = stack()
    open_chart(page, url)
    draft(page)
    page.get_by_test_id("smart-link").click()
    frame = page.get_by_test_id("app-frame")
    expect(frame).to_have_attribute("width", "1024")
    app = page.frame_locator('[data-testid="app-frame"]')
    expect(app.get_by_test_id("app-patient")).to_have_text("Alpha")
    expect(app.get_by_test_id("app-context")).to_contain_text("MedicationRequest/")
    expect(app.get_by_test_id("app-scope")).to_contain_text("patient/Observation.rs")
    token = standin.app_tokens[0]
    assert (token["patient"], token["encounter"]) == ("ehr-test-a", "ehr-test-a-visit")
    assert token["appContext"] == standin.cards[-1]["links"][0]["appContext"]
    box = frame.bounding_box()
    assert box is not None
    assert round(box["width"]) >= 1024
