"""The request body's nesting depth, counted on the bytes, equals the depth of the decoded JSON."""

from __future__ import annotations

import json
import random
from typing import Any

from cds_service.hook_request import _depth

#: Characters that could fool a count on the bytes: brackets and quotes inside strings, escapes.
_TRICKY = 'ab[]{}"\\\n\t/u\u00e9'


def _decoded_depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max(map(_decoded_depth, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(_decoded_depth, value), default=0)
    return 0


def _document(rnd: random.Random, level: int = 0) -> Any:
    roll = rnd.random()
    if level > 10 or roll < 0.3:
        if rnd.random() < 0.6:
            return "".join(rnd.choice(_TRICKY) for _ in range(rnd.randint(0, 6)))
        return rnd.randint(-5, 5)
    if roll < 0.65:
        return [_document(rnd, level + 1) for _ in range(rnd.randint(0, 3))]
    return {
        "".join(rnd.choice(_TRICKY) for _ in range(3)): _document(rnd, level + 1)
        for _ in range(rnd.randint(0, 3))
    }


def test_the_depth_of_any_document_is_that_of_its_decoded_value() -> None:
    rnd = random.Random(20261207)  # noqa: S311 - generated test documents, not secrets
    for _ in range(5_000):
        document = _document(rnd)
        text = json.dumps(document, ensure_ascii=rnd.random() < 0.5).encode()
        assert _depth(text) == _decoded_depth(document), text


def test_brackets_and_escaped_quotes_inside_strings_do_not_count() -> None:
    assert _depth(b'{"a": "[[[{{{\\"]]]"}') == 1
    assert _depth(b'["\\\\", ["\\\\\\"["]]') == 2
    assert _depth(b'"[]"') == 0
