"""Strings echoed into a card's Markdown stay text: a CommonMark renderer (markdown-it-py) shows
the card with the same headings, table rows, lists and links whatever the strings hold.

Every string of a request (context, draft orders, each prefetched resource) gets a payload that
would make a heading, list, code block, table row, HTML or autolink if echoed raw; the card must
have the shape of the same request whose payload is plain letters (its *twin*: the same length,
the same place, so the mappers judge both the same way).
"""

from __future__ import annotations

import copy
import re
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from flask.testing import FlaskClient

from cds_service.cards import md
from tests.http.conftest import hook_body, medication_request, post_hook
from tests.markdown import GFM, readable, structure

PAYLOADS = [
    "\n===\n",
    "\n# IChIS 0 of 2\n",
    "\n1. fake list\n",
    "\n\n    indented code\n",
    "\n| fake | row |\n|---|---|\n",
    "\r\n- item\r\n",
    "\u2028> quote\u2029",
    " https://evil.example/x ",
    " www.evil.example ",
    " mallory@evil.example ",
    "<b>html</b><script>x</script>",
    "`code` **bold** _it_ [link](https://evil.example)",
]


def _twin(payload: str) -> str:
    """The payload with every character that could mean something in Markdown made a letter."""
    return re.sub(r"[^A-Za-z0-9]", "x", payload)


def _string_paths(value: Any, prefix: tuple[str | int, ...] = ()) -> Iterator[tuple[str | int, ...]]:
    """Paths of the string leaves of a request (the first entry of each list stands for all)."""
    if isinstance(value, str):
        yield prefix
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _string_paths(item, (*prefix, key))
    elif isinstance(value, list) and value:
        yield from _string_paths(value[0], (*prefix, 0))


def _with(body: dict[str, Any], path: tuple[str | int, ...], suffix: str) -> dict[str, Any]:
    changed = copy.deepcopy(body)
    changed["hookInstance"] = str(uuid.uuid4())
    target: Any = changed
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = target[path[-1]] + suffix
    return changed


def _card(client: FlaskClient, body: dict[str, Any]) -> dict[str, Any] | None:
    reply = post_hook(client, body)
    assert reply.status_code < 500, reply.get_data(as_text=True)
    cards = reply.get_json().get("cards") if reply.status_code == 200 else None
    return cards[0] if cards else None


def _ordered_by_text() -> dict[str, Any]:
    """A pembrolizumab order known only by its text: the text is echoed on the card."""
    order = medication_request("by-text")
    order["medicationCodeableConcept"] = {"text": "Pembrolizumab 200 mg IV"}
    return hook_body("ichis-demo-2", orders=[order])


BASES = {
    "complete card": lambda: hook_body("ichis-demo-2"),
    "derived and partial": lambda: hook_body("ichis-demo-derived"),
    "outside the population": lambda: hook_body("ichis-demo-melanoma"),
    "order by text": _ordered_by_text,
}


@pytest.mark.parametrize("base", list(BASES))
def test_no_echoed_string_changes_the_shape_of_the_card(client: FlaskClient, base: str) -> None:
    body = BASES[base]()
    plain = _card(client, body)
    assert plain is not None
    assert "link_open" not in structure(plain["detail"])
    broken = []
    checked = 0
    for path in _string_paths(body):
        if path in (("hook",), ("hookInstance",)):
            continue
        for payload in PAYLOADS:
            card = _card(client, _with(body, path, payload))
            if card is None:
                continue  # refused or no card: nothing was rendered
            twin = _card(client, _with(body, path, _twin(payload)))
            checked += 1
            shape = structure(card["detail"])
            if twin is None or shape != structure(twin["detail"]) or "link_open" in shape:
                broken.append(f"{'.'.join(map(str, path))} + {payload!r}")
            if "\n" in card["summary"] or len(card["summary"]) >= 140:
                broken.append(f"summary of {'.'.join(map(str, path))} + {payload!r}")
    assert checked > 100, "the payloads reached the card"
    assert broken == []


@pytest.mark.parametrize("payload", PAYLOADS)
def test_an_escaped_string_reads_as_it_was_sent_on_one_line(payload: str) -> None:
    """What the clinician reads is the string itself (white space folded), not its markup."""
    rendered = GFM.render(md("as sent" + payload)).strip()
    assert rendered.startswith("<p>")
    assert rendered.endswith("</p>")
    assert rendered.count("<p>") == 1
    assert "<a " not in rendered
    assert "<script" not in rendered
    assert readable(md("as sent" + payload)).strip() == " ".join(("as sent" + payload).split())
