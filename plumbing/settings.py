"""One settings reader for every app of the project (the service, the SMART app, the sandbox EHR),
so an operator can predict each of them.

Precedence, lowest first: the dataclass's defaults, the app's table of the site file, the
environment (``PREFIX_NAME``), then the overrides a test passes. A key of the file or of the
overrides that the app does not know, and a variable with the app's prefix that it does not know,
stop the start: a misspelt ``ICHIS_TRUSTED_ISSUER`` would otherwise leave authentication
configured differently from what the operator wrote. Values are read by typed parsers; lists are
accepted as JSON arrays or as comma-separated text. Every problem is one ``ConfigurationError``.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Collection, Iterable, Mapping
from difflib import get_close_matches
from pathlib import Path
from typing import Any, TypeVar

from fhir_mappings.config import ConfigurationError

__all__ = [
    "ConfigurationError",
    "Parser",
    "boolean",
    "boolean_or_auto",
    "describe_unknown",
    "integer",
    "json_value",
    "not_negative",
    "number",
    "optional_path",
    "parsers_for",
    "path",
    "positive",
    "read_settings",
    "read_values",
    "text",
    "text_list",
    "unknown_variables",
]

T = TypeVar("T")
#: Reads one raw value (a TOML value, an environment string, a test's Python value) for a setting.
Parser = Callable[[str, Any], Any]

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off", "")


def text(name: str, raw: Any) -> str:
    if not isinstance(raw, str | int | float) or isinstance(raw, bool):
        raise ConfigurationError(f"setting {name}: {raw!r} is not text")
    return str(raw)


def number(name: str, raw: Any) -> float:
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise ConfigurationError(f"setting {name}: {raw!r} is not a number") from None
    if isinstance(raw, bool) or value != value:  # noqa: PLR0124 - NaN is the one value unequal to itself
        raise ConfigurationError(f"setting {name}: {raw!r} is not a number")
    return value


def integer(name: str, raw: Any) -> int:
    try:
        value = int(raw)
    except (TypeError, ValueError):
        raise ConfigurationError(f"setting {name}: {raw!r} is not a whole number") from None
    if isinstance(raw, bool) or (isinstance(raw, float) and raw != value):
        raise ConfigurationError(f"setting {name}: {raw!r} is not a whole number")
    return value


def boolean(name: str, raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    word = str(raw).strip().lower()
    if word not in _TRUE + _FALSE:
        raise ConfigurationError(
            f"setting {name}: {raw!r} is not true or false (true/false, 1/0, yes/no, on/off)"
        )
    return word in _TRUE


def boolean_or_auto(name: str, raw: Any) -> bool | None:
    """True, false, or None for "decide from the request" (``auto``, empty)."""
    if raw is None or (isinstance(raw, str) and raw.strip().lower() in ("", "auto")):
        return None
    return boolean(name, raw)


def positive(parse: Parser) -> Parser:
    """``parse`` (``number`` or ``integer``) for a setting that must be above zero."""

    def checked(name: str, raw: Any) -> Any:
        value = parse(name, raw)
        if value <= 0:
            raise ConfigurationError(f"setting {name}: must be positive")
        return value

    return checked


def not_negative(parse: Parser) -> Parser:
    """``parse`` for a setting that may be zero but not below."""

    def checked(name: str, raw: Any) -> Any:
        value = parse(name, raw)
        if value < 0:
            raise ConfigurationError(f"setting {name}: must not be negative")
        return value

    return checked


def path(name: str, raw: Any) -> Path:
    if not isinstance(raw, str | Path) or not str(raw):
        raise ConfigurationError(f"setting {name}: {raw!r} is not a path")
    return Path(raw)


def optional_path(name: str, raw: Any) -> Path | None:
    return None if raw in (None, "") else path(name, raw)


def text_list(name: str, raw: Any) -> tuple[str, ...]:
    """A list setting: a JSON array of strings, a comma-separated string, or a list (TOML)."""
    items: object = raw
    if isinstance(raw, str):
        stripped = raw.strip()
        if stripped.startswith("["):
            try:
                items = json.loads(stripped)
            except ValueError:
                raise ConfigurationError(
                    f"setting {name}: neither a JSON array of strings nor comma-separated text"
                ) from None
        else:
            items = stripped.split(",")
    if not isinstance(items, list | tuple) or not all(isinstance(item, str) for item in items):
        raise ConfigurationError(f"setting {name}: must be a list of strings")
    values = tuple(item.strip() for item in items if item.strip())
    for value in values:
        if any(mark in value for mark in '[]"'):
            raise ConfigurationError(
                f"setting {name}: holds {value!r}: quotes or brackets left from a malformed list"
            )
    return values


def json_value(name: str, raw: Any) -> Any:
    """A structured setting: JSON text in the environment, the value itself from TOML or a test."""
    if isinstance(raw, str):
        try:
            return json.loads(raw)
        except ValueError:
            raise ConfigurationError(f"setting {name}: not valid JSON") from None
    return raw


#: Parser by a dataclass field's annotation (``from __future__ import annotations``: strings).
_BY_ANNOTATION: dict[str, Parser] = {
    "str": text,
    "float": number,
    "int": integer,
    "bool": boolean,
    "Path": path,
    "Path | None": optional_path,
    "tuple[str, ...]": text_list,
    "Any": json_value,
}


def parsers_for(cls: type[Any], skip: Collection[str] = ()) -> dict[str, Parser]:
    """A parser for each field of a settings dataclass, chosen by its annotation."""
    parsers = {}
    for field in dataclasses.fields(cls):
        if field.name in skip:
            continue
        annotation = field.type if isinstance(field.type, str) else getattr(field.type, "__name__", "")
        if annotation not in _BY_ANNOTATION:
            raise TypeError(f"no settings parser for {cls.__name__}.{field.name}: {annotation}")
        parsers[field.name] = _BY_ANNOTATION[annotation]
    return parsers


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


def read_settings(defaults: T, parsers: Mapping[str, Parser], **where: Any) -> T:
    """``defaults`` (a dataclass instance) with the values ``read_values`` finds applied."""
    values = read_values(parsers, **where)
    return dataclasses.replace(defaults, **values)  # type: ignore[type-var]  # T is a dataclass instance


def read_values(
    parsers: Mapping[str, Parser],
    *,
    prefix: str,
    environ: Mapping[str, str],
    table: Mapping[str, Any] | None = None,
    table_name: str = "",
    overrides: Mapping[str, Any] | None = None,
    elsewhere: Iterable[str] = (),
    also_known: Collection[str] = (),
) -> dict[str, Any]:
    """The settings given, by name: the file's table, then the environment, then the overrides.
    ``also_known`` names variables with the prefix that another part of the program reads
    (``ichis serve``'s own ``ICHIS_PORT``)."""
    known = [*parsers, *also_known]
    values: dict[str, Any] = {}
    if table is not None and not isinstance(table, Mapping):
        raise ConfigurationError(f"[{table_name}] must be a table")
    for key, raw in (table or {}).items():
        if key not in parsers:
            raise ConfigurationError(_unknown_key(key, f"[{table_name}] has", parsers))
        values[key] = parsers[key](key, raw)
    if unknown := unknown_variables(environ, prefix, known, elsewhere=elsewhere):
        raise ConfigurationError(describe_unknown(unknown, prefix, known))
    for name, parse in parsers.items():
        raw_env = environ.get(prefix + name.upper())
        if raw_env is not None:
            values[name] = parse(name, raw_env)
    for key, raw in (overrides or {}).items():
        if key not in parsers:
            raise ConfigurationError(_unknown_key(key, "the overrides have", parsers))
        values[key] = parsers[key](key, raw)
    return values


def _unknown_key(key: str, where: str, parsers: Mapping[str, Parser]) -> str:
    close = get_close_matches(key, list(parsers), n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return f"{where} an unknown setting '{key}'{hint}"
