"""One clinician's desk in the sandbox EHR: the open chart, draft orders, the cards on screen.

A workspace belongs to one browser session and lives in memory. What the clinician does with it
(hook firing, feedback, SMART launches) is ``sandbox.ehr.actions``; the views only parse forms
and redirect back to the page.
"""

from __future__ import annotations

import threading
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from sandbox.ehr.cards import CardView
from sandbox.ehr.cds_client import HttpRecord
from sandbox.ehr.errors import BadRequest
from sandbox.ehr.prefetch import PrefetchNote

WORKSPACE_LIMIT = 200


@dataclass
class CardState:
    """What the clinician did with one card, and how the feedback call went."""

    outcome: str | None = None  # "accepted" or "overridden"
    feedback: HttpRecord | None = None
    notes: list[str] = field(default_factory=list)
    accepted: list[int] = field(default_factory=list)


@dataclass
class Exchange:
    """One hook call to one service, and the cards it brought back."""

    service_id: str
    service_title: str
    hook: str
    hook_instance: str
    record: HttpRecord
    prefetch_sent: bool
    prefetch_notes: list[PrefetchNote]
    cards: list[CardView] = field(default_factory=list)
    response_problems: list[str] = field(default_factory=list)
    card_states: dict[int, CardState] = field(default_factory=dict)

    def card_state(self, index: int) -> CardState:
        return self.card_states.setdefault(index, CardState())


@dataclass
class AppPane:
    label: str
    url: str


@dataclass
class Workspace:
    id: str
    patient_id: str | None = None
    patient: dict[str, Any] | None = None
    encounter_id: str | None = None
    drafts: list[dict[str, Any]] = field(default_factory=list)
    prefetch: bool = True
    exchanges: list[Exchange] = field(default_factory=list)
    hook_note: str | None = None
    app: AppPane | None = None
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def exchange(self, hook_instance: str) -> Exchange:
        for exchange in self.exchanges:
            if exchange.hook_instance == hook_instance:
                return exchange
        raise BadRequest("those cards were replaced by a newer hook call; act on the cards shown now")


class Workspaces:
    """The open workspaces, the least recently used dropped past WORKSPACE_LIMIT."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: OrderedDict[str, Workspace] = OrderedDict()

    def get_or_create(self, workspace_id: str | None) -> Workspace:
        with self._lock:
            if workspace_id and workspace_id in self._items:
                self._items.move_to_end(workspace_id)
                return self._items[workspace_id]
            workspace = Workspace(id=uuid.uuid4().hex)
            self._items[workspace.id] = workspace
            while len(self._items) > WORKSPACE_LIMIT:
                self._items.popitem(last=False)
            return workspace
