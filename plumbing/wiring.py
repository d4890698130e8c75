"""Typed parts on a Flask app: each app keeps one object of its own type in ``app.extensions``
and reads it back through a ``Slot``, never through a string key and a cast."""

from __future__ import annotations

from typing import Generic, TypeVar

from flask import Flask

T = TypeVar("T")


class Slot(Generic[T]):
    """Where one app part of type ``kind`` lives on a Flask app."""

    def __init__(self, key: str, kind: type[T], missing: str) -> None:
        self.key, self.kind, self.missing = key, kind, missing

    def attach(self, app: Flask, value: T) -> None:
        app.extensions[self.key] = value

    def of(self, app: Flask) -> T:
        """The part on ``app``; LookupError (saying what builds it) when there is none."""
        found = app.extensions.get(self.key)
        if not isinstance(found, self.kind):
            raise LookupError(self.missing)
        return found
