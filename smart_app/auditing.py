"""The SMART app's audit records: one per launch and one per page that reads patient data.

Built by ``fhir_mappings.audit`` (IHE BALP patterns) and put in the service's durable spool, the
same one as the hook's records (handed to ``install_smart_app``, ``AuditSpool.put``): the
request only writes locally, the service's deliverer sends it, and an audit server outage loses
nothing. A record is spooled before the page is answered; if it cannot be, the page is not shown.

Not recorded: requests that name no launch of this browser (a callback without the app's cookie
or with a state it never sent, a page address from another session). They read nothing, identify
no one, and anyone could make the spool grow with them.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

from flask import current_app

from fhir_mappings.audit import (
    OUTCOME_SUCCESS,
    SMART_LAUNCH,
    SmartAuditFacts,
    SmartRequest,
    audit_id,
    outcome_for_status,
    smart_launch_audit_event,
    smart_page_audit_event,
)
from fhir_mappings.outbound import Destinations
from smart_app.context import parse_app_context
from smart_app.errors import SmartAppError, TokenRequestFailed
from smart_app.runtime import Spool, smart_runtime

#: A hookInstance recorded as ``urn:uuid:<it>``: CDS Hooks sends UUIDs; anything else that is
#: plainly an identifier is kept too, and what is not is left out rather than written.
_HOOK_INSTANCE = re.compile(r"[A-Za-z0-9._-]{1,128}")


def _spool() -> Spool:
    return smart_runtime(current_app).spool


def audit_target(audit_fhir_url: str, iss: str | None, destinations: Destinations) -> str:
    """Where a record goes, by the service's rule for hook records: ``""`` for the configured audit
    repository (resolved at delivery); with ``audit_fhir_url = "ehr"`` the launch's EHR when its
    FHIR base passes the rules of FHIR call-backs (``fhir_allowed_hosts``, https), else ``""``:
    kept in the spool."""
    if audit_fhir_url != "ehr" or not iss:
        return ""
    # The service refuses "ehr" without an allow-list; without one nothing is sent anywhere here.
    return iss if destinations.allowed_hosts and destinations.allows(iss) else ""


def failure_outcome(error: BaseException) -> tuple[str, str]:
    """The outcome code and words of a launch or page that ended on an error page."""
    if isinstance(error, TokenRequestFailed) and error.answered is not None:
        # The EHR's token endpoint refused (a 4xx): a refusal, not a failure of the systems.
        return outcome_for_status(error.answered), f"{error.code}: {error.detail}"
    if isinstance(error, SmartAppError):
        return outcome_for_status(error.status), f"{error.code}: {error.detail}"
    return outcome_for_status(500), "internal: the app failed unexpectedly (see the service log)"


def hook_instance(app_context: Any) -> str | None:
    """The card's hookInstance from the launch's ``appContext``, when it is fit for a record."""
    found = parse_app_context(app_context if isinstance(app_context, str) else None).hook_instance
    return found if found is not None and _HOOK_INSTANCE.fullmatch(found) else None


class Recorder:
    """Builds and spools the records of one request; the launch's facts come from its payload."""

    def __init__(
        self,
        *,
        app_url: str,
        client_id: str,
        audit_fhir_url: str,
        destinations: Destinations,
        clock: Callable[[], datetime],
    ) -> None:
        self.app_url = app_url
        self.client_id = client_id
        self.audit_fhir_url = audit_fhir_url
        self.destinations = destinations
        self.clock = clock

    def _put(self, event: Mapping[str, Any], iss: str | None) -> None:
        _spool().put(event, audit_target(self.audit_fhir_url, iss, self.destinations))

    def _facts(
        self,
        *,
        record_id: str,
        activity: str,
        outcome: tuple[str, str],
        iss: str | None,
        launch: Mapping[str, Any],
        requests: Sequence[SmartRequest] = (),
    ) -> SmartAuditFacts:
        user, patient = launch.get("user"), launch.get("patient")
        return SmartAuditFacts(
            record_id=record_id,
            activity=activity,
            recorded=self.clock(),
            outcome=outcome[0],
            outcome_text=outcome[1],
            app_url=self.app_url,
            client_id=self.client_id,
            iss=iss,
            user=user if isinstance(user, str) else None,
            patient_id=patient if isinstance(patient, str) else None,
            hook_instance=hook_instance(launch.get("app_context")),
            requests=tuple(requests),
        )

    def launch(
        self, *, iss: str, launch: Mapping[str, Any], key: str | None, outcome: tuple[str, str]
    ) -> None:
        """The record of one launch (a callback whose state this session sent)."""
        # A completed launch has one record whatever is retried; a refused one, a record per try.
        record_id = audit_id(SMART_LAUNCH, key) if key else str(uuid.uuid4())
        facts = self._facts(
            record_id=record_id, activity=SMART_LAUNCH, outcome=outcome, iss=iss, launch=launch
        )
        _spool().put(
            smart_launch_audit_event(facts), audit_target(self.audit_fhir_url, iss, self.destinations)
        )

    def page(
        self,
        *,
        activity: str,
        launch: Mapping[str, Any],
        requests: Sequence[SmartRequest],
        outcome: tuple[str, str],
    ) -> None:
        """The record of one page of a launch: every request it made and how the page ended."""
        iss = str(launch["iss"])
        facts = self._facts(
            record_id=str(uuid.uuid4()),
            activity=activity,
            outcome=outcome,
            iss=iss,
            launch=launch,
            requests=requests,
        )
        _spool().put(smart_page_audit_event(facts), audit_target(self.audit_fhir_url, iss, self.destinations))


def page_outcome(denied: Mapping[str, str], renewed: bool) -> tuple[str, str]:
    """A page that was shown: success, or a minor failure when the EHR kept parts of the record back."""
    words = "page shown"
    if renewed:
        words += "; access renewed with the refresh token"
    if denied:
        scopes = ", ".join(sorted(set(denied.values())))
        return outcome_for_status(403), f"{words}; not read (scope not granted or refused): {scopes}"
    return OUTCOME_SUCCESS, words
