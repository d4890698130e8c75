"""Cards read as a CDS client must: what is shown, and every departure from CDS Hooks 2.0.1 named."""

from __future__ import annotations

from typing import Any

import pytest

from sandbox.ehr.cards import read_card, read_cards, render_markdown

GOOD: dict[str, Any] = {
    "uuid": "c-1",
    "summary": "IChIS 2 of 2",
    "indicator": "critical",
    "source": {"label": "IChIS", "url": "https://example.org/ichis"},
}


def test_a_spec_valid_card_has_no_problems() -> None:
    """A card with summary, indicator and source is shown as sent, with nothing to complain about."""
    card = read_card(0, GOOD)
    assert (card.summary, card.indicator, card.uuid, card.problems) == ("IChIS 2 of 2", "critical", "c-1", [])


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"summary": "x" * 140}, "140 characters"),
        ({"summary": ""}, "summary is required"),
        ({"indicator": "hard-stop"}, "not one of info, warning, critical"),
        ({"source": {}}, "source with a label"),
        ({"source": {"label": "s", "url": "javascript:alert(1)"}}, "source.url"),
        ({"overrideReasons": [{"system": "s", "code": "c"}]}, "has no display"),
        (
            {"links": [{"label": "x", "url": "javascript:alert(1)", "type": "absolute"}]},
            "no usable http(s) url",
        ),
        (
            {"links": [{"label": "x", "url": "https://a", "type": "absolute", "appContext": "{}"}]},
            "only valid",
        ),
    ],
)
def test_departures_from_the_spec_are_named(change: dict[str, Any], problem: str) -> None:
    """Each departure is listed, so the integration engineer sees it next to the card."""
    assert any(problem in p for p in read_card(0, {**GOOD, **change}).problems)


@pytest.mark.parametrize("behavior", [None, "all", 1])
def test_suggestions_without_an_understood_selection_behavior_make_the_card_an_error(behavior: Any) -> None:
    """The spec: a client that does not understand selectionBehavior MUST treat the card as an error."""
    raw = {**GOOD, "suggestions": [{"label": "Do it", "uuid": "s-1"}]}
    if behavior is not None:
        raw["selectionBehavior"] = behavior
    card = read_card(0, raw)
    assert card.is_error
    assert card.suggestions == []


def test_markdown_detail_is_rendered_without_raw_html_and_links_open_elsewhere() -> None:
    """GFM tables render; raw HTML is escaped; javascript: links are not links; links open in a new tab."""
    html = str(
        render_markdown("| a |\n|---|\n| 1 |\n\n<b>x</b> [bad](javascript:alert(1)) [ok](https://ok.example)")
    )
    assert "<table>" in html
    assert "&lt;b&gt;x&lt;/b&gt;" in html
    assert 'href="javascript' not in html
    assert '<a href="https://ok.example" target="_blank" rel="noopener noreferrer">ok</a>' in html


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ({}, "no cards array"),
        ([], "not a JSON object"),
        ({"cards": [], "systemActions": [{"type": "create"}]}, "systemActions"),
    ],
)
def test_a_response_without_a_cards_array_is_named_as_such(body: Any, problem: str) -> None:
    """cards is required even when empty; systemActions are shown, not applied."""
    cards, problems = read_cards(body)
    assert cards == []
    assert any(problem in p for p in problems)
