"""Rules every settings reader of the project follows, so an operator can predict each of them.

A variable with the project's prefix that no reader knows is an error, not silently ignored: a
misspelt ``ICHIS_TRUSTED_ISSUER`` would otherwise leave authentication configured differently
from what the operator wrote. Lists are accepted as JSON arrays or as comma-separated text.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable, Mapping
from difflib import get_close_matches


def unknown_variables(
    environ: Mapping[str, str],
    prefix: str,
    known: Collection[str],
    *,
    elsewhere: Iterable[str] = (),
) -> list[str]:
    """Variables starting with ``prefix`` that are not ``prefix + NAME`` for a known name.

    ``elsewhere`` lists prefixes (``ICHIS_SMART_``) another reader owns: their variables are
    that reader's to check.
    """
    names = {prefix + name.upper() for name in known}
    others = tuple(elsewhere)
    return sorted(
        key
        for key in environ
        if key.startswith(prefix) and key not in names and not (others and key.startswith(others))
    )


def describe_unknown(variables: list[str], prefix: str, known: Collection[str]) -> str:
    """One sentence naming the unknown variables, with the closest known name for each."""
    candidates = [prefix + name.upper() for name in known]
    parts = []
    for variable in variables:
        close = get_close_matches(variable, candidates, n=1)
        parts.append(f"{variable} (did you mean {close[0]}?)" if close else variable)
    return f"unknown setting variable(s): {', '.join(parts)}; remove them or fix the name"


def text_list(raw: object) -> tuple[str, ...]:
    """A list setting: a JSON array of strings, a comma-separated string, or a list (TOML)."""
    items: object = raw
    if isinstance(raw, str):
        text = raw.strip()
        if text.startswith("["):
            try:
                items = json.loads(text)
            except ValueError:
                raise ValueError("is neither a JSON array of strings nor comma-separated text") from None
        else:
            items = text.split(",")
    if not isinstance(items, list | tuple) or not all(isinstance(item, str) for item in items):
        raise ValueError("must be a list of strings")
    values = tuple(item.strip() for item in items if item.strip())
    for value in values:
        if any(mark in value for mark in '[]"'):
            raise ValueError(f"holds {value!r}: quotes or brackets left from a malformed list")
    return values
