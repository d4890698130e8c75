"""The launch context: the card's ``appContext`` and what the token response said about the launch.

The card's SMART link carries ``appContext`` as a JSON string
``{"hookInstance", "patientId", "orders", "order", "at"}`` (cds_service/cards.py); the EHR hands it
back in the token response (CDS Hooks 2.0.1, "Link": appContext). ``at`` is the order time the
card's score was computed for, so the app scores at the same moment.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from fhir_mappings.fhirtime import in_range


@dataclass(frozen=True, slots=True)
class CardContext:
    """What the card told the app; ``note`` says what of it could not be used, if anything."""

    hook_instance: str | None = None
    patient_id: str | None = None
    orders: tuple[str, ...] = ()
    order: str | None = None
    at: datetime | None = None
    note: str | None = None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def parse_app_context(raw: str | None) -> CardContext:
    """The card's context, or an empty one (with a note) when it is absent or unreadable."""
    if raw is None:
        return CardContext()
    try:
        data = json.loads(raw)
    except ValueError:
        return CardContext(note="The card's context could not be read (it is not JSON).")
    if not isinstance(data, dict):
        return CardContext(note="The card's context could not be read (it is not a JSON object).")
    orders = data.get("orders")
    at: datetime | None = None
    note = None
    raw_at = data.get("at")
    if isinstance(raw_at, str):
        try:
            at = datetime.fromisoformat(raw_at.replace("Z", "+00:00"))
        except ValueError:
            at = None
        if at is not None and (at.tzinfo is None or not in_range(at)):
            # An instant without an offset cannot be placed, and one at the ends of the calendar
            # cannot be compared: use the time of opening.
            at = None
        if at is None:
            note = f"The card's order time ({raw_at}) could not be read."
    return CardContext(
        hook_instance=_text(data.get("hookInstance")),
        patient_id=_text(data.get("patientId")),
        orders=tuple(o for o in orders if isinstance(o, str)) if isinstance(orders, list) else (),
        order=_text(data.get("order")),
        at=at,
        note=note,
    )
