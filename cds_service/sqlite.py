"""The service's SQLite connections: the project's shared helper (``plumbing.sqlite``), named here
for the stores that import it from the service."""

from __future__ import annotations

from plumbing.sqlite import Connections

__all__ = ["Connections"]
