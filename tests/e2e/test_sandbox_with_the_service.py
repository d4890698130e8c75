"""The sandbox EHR and the real CDS service in Chromium: the cards a clinician sees (issue 6)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from playwright.sync_api import Page, expect

from cds_service.store import Store
from cds_service.wiring import service_of
from tests.e2e.conftest import Stack

pytestmark = pytest.mark.integration


def open_chart(page: Page, stack: Stack, patient: str) -> None:
    page.goto(f"{stack.ehr_url}/")
    page.get_by_test_id("patient-picker").select_option(patient)
    page.get_by_test_id("open-chart").click()
    expect(page.get_by_test_id("patient-banner")).to_have_attribute("data-patient-id", patient)


def draft(page: Page, medication: str = "pembrolizumab-product") -> None:
    page.get_by_test_id("order-medication").select_option(medication)
    page.get_by_test_id("draft-order").click()


def test_ordering_pembrolizumab_for_the_ichis_2_patient_shows_the_ichis_2_card(
    real_stack: Callable[..., Stack], page: Page
) -> None:
    stack = real_stack()
    open_chart(page, stack, "ichis-demo-2")
    expect(page.get_by_test_id("prefetch-switch")).to_be_checked()
    draft(page)
    card = page.get_by_test_id("card")
    expect(card).to_have_count(1)
    expect(card).to_have_attribute("data-indicator", "warning")
    expect(card.get_by_test_id("card-summary")).to_contain_text("IChIS 2 of 2")
    detail = card.get_by_test_id("card-detail")
    expect(detail).to_contain_text("12,300/uL")
    expect(detail).to_contain_text("median overall survival 54 days")
    expect(detail).to_contain_text("not externally validated")
    expect(card.get_by_test_id("smart-link")).to_be_visible()


def test_the_same_card_comes_when_prefetch_is_switched_off(
    real_stack: Callable[..., Stack], page: Page
) -> None:
    """The service then reads the labs itself through the EHR's FHIR endpoint, with the EHR's token."""
    stack = real_stack()
    open_chart(page, stack, "ichis-demo-2")
    page.get_by_test_id("prefetch-switch").uncheck()
    draft(page)
    expect(page.get_by_test_id("card-summary")).to_contain_text("IChIS 2 of 2")
    expect(page.get_by_test_id("prefetch-summary")).to_contain_text("switched off")


@pytest.mark.parametrize(
    ("patient", "summary"),
    [
        ("ichis-demo-0", "IChIS 0 of 2"),
        ("ichis-demo-partial", "IChIS 1 to 2 of 2"),
        ("ichis-demo-stale", "IChIS not available"),
    ],
)
def test_other_strata_and_data_problems_show_their_cards(
    real_stack: Callable[..., Stack], page: Page, patient: str, summary: str
) -> None:
    stack = real_stack()
    open_chart(page, stack, patient)
    draft(page)
    expect(page.get_by_test_id("card-summary")).to_contain_text(summary)


def test_a_non_checkpoint_order_shows_no_card(real_stack: Callable[..., Stack], page: Page) -> None:
    stack = real_stack()
    open_chart(page, stack, "ichis-demo-2")
    draft(page, "carboplatin")
    expect(page.get_by_test_id("no-cards")).to_be_visible()
    expect(page.get_by_test_id("card")).to_have_count(0)


def test_accepting_and_overriding_send_feedback_the_service_stores(
    real_stack: Callable[..., Stack], page: Page
) -> None:
    stack = real_stack()
    open_chart(page, stack, "ichis-demo-partial")  # a partial score: the card proposes a CBC
    draft(page)
    accepted_card = page.get_by_test_id("card").get_attribute("data-card-uuid")
    page.get_by_test_id("accept-suggestion").click()
    expect(page.get_by_test_id("card-outcome")).to_have_attribute("data-outcome", "accepted")
    expect(page.get_by_test_id("feedback-status")).to_have_attribute("data-status", "200")
    page.get_by_test_id("select-order").first.click()
    overridden_card = page.get_by_test_id("card").get_attribute("data-card-uuid")
    page.get_by_test_id("override-reason").select_option(label="Prognosis already discussed; score noted")
    page.get_by_test_id("override-card").click()
    expect(page.get_by_test_id("card-outcome")).to_have_attribute("data-outcome", "overridden")
    expect(page.get_by_test_id("feedback-status")).to_have_attribute("data-status", "200")
    store: Store = service_of(stack.service).store
    assert [row["outcome"] for row in store.feedback(accepted_card or "")] == ["accepted"]
    (overridden,) = store.feedback(overridden_card or "")
    assert overridden["outcome"] == "overridden"
    assert "already-considered" in overridden["override_reason"]
