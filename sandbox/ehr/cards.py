"""A CDS service's response read as a CDS client must (CDS Hooks 2.0.1, "CDS Service Response").

Cards are kept as the service sent them; what the page needs is derived here, together with the
places where a card departs from the spec, so an integration engineer sees them next to the card.
A card whose ``selectionBehavior`` the client does not understand is an error (the spec: "CDS
Clients that do not understand the value MUST treat the card as an error"): it is shown as such,
without its suggestions.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from markdown_it import MarkdownIt
from markdown_it.renderer import RendererHTML
from markupsafe import Markup

INDICATORS = ("info", "warning", "critical")
SELECTION_BEHAVIORS = ("at-most-one", "any")


def _markdown() -> MarkdownIt:
    # GitHub-flavoured markdown without raw HTML: tables and strikethrough on, HTML off, and
    # markdown-it's own link validation drops javascript: and data: URLs.
    md = MarkdownIt("commonmark", {"html": False}).enable("table").enable("strikethrough")

    def open_links_elsewhere(renderer: RendererHTML, tokens: Any, idx: int, options: Any, env: Any) -> str:
        # A link in a card must not navigate the EHR away from the chart it belongs to.
        tokens[idx].attrSet("target", "_blank")
        tokens[idx].attrSet("rel", "noopener noreferrer")
        return renderer.renderToken(tokens, idx, options, env)

    md.add_render_rule("link_open", open_links_elsewhere)
    return md


_MD = _markdown()


def render_markdown(text: str) -> Markup:
    """Card detail as safe HTML (the renderer escapes everything it does not produce itself)."""
    return Markup(_MD.render(text))  # noqa: S704 - markdown-it with html=False escapes its input


def is_web_url(value: Any) -> bool:
    """Only http(s) URLs become links or iframes; anything else (javascript:, data:) stays text."""
    if not isinstance(value, str):
        return False
    parts = urlsplit(value)
    return parts.scheme in ("http", "https") and bool(parts.netloc)


@dataclass
class SuggestionView:
    index: int
    label: str
    uuid: str | None
    is_recommended: bool
    actions: list[dict[str, Any]]


@dataclass
class LinkView:
    index: int
    label: str
    url: str
    type: str
    app_context: str | None
    usable: bool


@dataclass
class CardView:
    """One card as the page shows it; ``raw`` is the card exactly as the service sent it."""

    index: int
    raw: dict[str, Any]
    uuid: str | None
    summary: str
    indicator: str
    detail_html: Markup | None
    source: dict[str, Any]
    suggestions: list[SuggestionView]
    selection_behavior: str | None
    override_reasons: list[dict[str, Any]]
    links: list[LinkView]
    problems: list[str] = field(default_factory=list)
    is_error: bool = False


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def read_card(index: int, raw: Mapping[str, Any]) -> CardView:
    """A card for display, with every departure from the spec listed in ``problems``."""
    problems: list[str] = []
    summary = _text(raw.get("summary"))
    if not summary:
        problems.append("summary is required")
    elif len(summary) >= 140:
        problems.append(f"summary has {len(summary)} characters; the spec asks for fewer than 140")
    indicator = _text(raw.get("indicator"))
    if indicator not in INDICATORS:
        problems.append(f"indicator {indicator!r} is not one of info, warning, critical")
    source = raw.get("source") if isinstance(raw.get("source"), Mapping) else None
    if source is None or not _text(source.get("label")):
        problems.append("source with a label is required")
    source_view = dict(source or {})
    if "url" in source_view and not is_web_url(source_view["url"]):
        problems.append("source.url is not an absolute http(s) URL")
        source_view.pop("url")
    if "icon" in source_view and not is_web_url(source_view["icon"]):
        source_view.pop("icon")
    uuid = raw.get("uuid") if isinstance(raw.get("uuid"), str) and raw.get("uuid") else None

    suggestions: list[SuggestionView] = []
    for i, s in enumerate(raw.get("suggestions") or []):
        if not isinstance(s, Mapping):
            problems.append(f"suggestion {i + 1} is not an object")
            continue
        if not _text(s.get("label")):
            problems.append(f"suggestion {i + 1} has no label")
        actions = [dict(a) for a in s.get("actions") or [] if isinstance(a, Mapping)]
        suggestions.append(
            SuggestionView(
                index=i,
                label=_text(s.get("label")) or f"Suggestion {i + 1}",
                uuid=s.get("uuid") if isinstance(s.get("uuid"), str) else None,
                is_recommended=s.get("isRecommended") is True,
                actions=actions,
            )
        )
    behavior = raw.get("selectionBehavior")
    is_error = False
    if suggestions and behavior not in SELECTION_BEHAVIORS:
        is_error = True
        problems.append(
            f"selectionBehavior {behavior!r} is not understood (at-most-one or any is required with "
            "suggestions), so the card is treated as an error"
        )

    reasons = []
    for i, reason in enumerate(raw.get("overrideReasons") or []):
        if not isinstance(reason, Mapping) or not _text(reason.get("display")):
            problems.append(f"override reason {i + 1} has no display (the spec requires one)")
            continue
        reasons.append(dict(reason))

    links: list[LinkView] = []
    for i, link in enumerate(raw.get("links") or []):
        if not isinstance(link, Mapping):
            continue
        kind = _text(link.get("type"))
        url = _text(link.get("url"))
        usable = is_web_url(url) and kind in ("absolute", "smart")
        if not usable:
            problems.append(f"link {i + 1} ({kind or 'no type'}) has no usable http(s) url or type")
        app_context = link.get("appContext") if isinstance(link.get("appContext"), str) else None
        if app_context is not None and kind != "smart":
            problems.append(f"link {i + 1}: appContext is only valid on smart links")
        links.append(LinkView(i, _text(link.get("label")) or url, url, kind, app_context, usable))

    detail = raw.get("detail")
    return CardView(
        index=index,
        raw=dict(raw),
        uuid=uuid,
        summary=summary or "(no summary)",
        indicator=indicator if indicator in INDICATORS else "info",
        detail_html=render_markdown(detail) if isinstance(detail, str) and detail else None,
        source=source_view,
        suggestions=[] if is_error else suggestions,
        selection_behavior=behavior if isinstance(behavior, str) else None,
        override_reasons=reasons,
        links=links,
        problems=problems,
        is_error=is_error,
    )


def read_cards(body: Any) -> tuple[list[CardView], list[str]]:
    """The cards of a 200 response, and problems with the response as a whole."""
    if not isinstance(body, Mapping):
        return [], ["the response is not a JSON object"]
    cards = body.get("cards")
    if not isinstance(cards, list):
        return [], ["the response has no cards array (required, even when empty)"]
    problems = []
    if body.get("systemActions"):
        problems.append("systemActions were returned; the sandbox shows them but does not apply them")
    return [read_card(i, c) for i, c in enumerate(cards) if isinstance(c, Mapping)], problems
