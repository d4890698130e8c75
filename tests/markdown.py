"""Cards as a clinician's screen shows them: the detail through a CommonMark renderer.

``readable`` is the text a reader sees (no markup, no escapes); ``structure`` is the shape the
renderer builds (headings, list items, table rows, links, code), for tests that check an echoed
string changed nothing but text. The GFM-like preset autolinks bare URLs as many EHRs do.
"""

from __future__ import annotations

import html
import re

from markdown_it import MarkdownIt

COMMONMARK = MarkdownIt("commonmark")
#: Tables and autolinked URLs (linkify), as GitHub-flavoured renderers show cards.
GFM = MarkdownIt("gfm-like")

_TAGS = re.compile(r"<[^>]+>")
#: Tokens that give a card its shape; text and inline emphasis are content.
_SHAPE = (
    "heading_open", "bullet_list_open", "ordered_list_open", "list_item_open", "table_open",
    "tr_open", "th_open", "td_open", "blockquote_open", "code_block", "fence", "hr", "html_block",
    "paragraph_open",
)  # fmt: skip
_INLINE_SHAPE = ("link_open", "image", "code_inline", "html_inline", "hardbreak")


def readable(detail: str) -> str:
    """The detail's text as rendered: markup gone, escapes and entities resolved."""
    return html.unescape(_TAGS.sub("", COMMONMARK.render(detail)))


def structure(detail: str) -> list[str]:
    """The detail's shape under a GFM-like renderer: block tokens (with heading levels) and the
    inline tokens that add links, code or HTML, in document order."""
    shape: list[str] = []
    for token in GFM.parse(detail):
        if token.type in _SHAPE:
            shape.append(f"{token.type}:{token.tag}")
        for child in token.children or ():
            if child.type in _INLINE_SHAPE:
                shape.append(child.type)
    return shape
