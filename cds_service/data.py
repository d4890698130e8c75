"""Data for a hook call, in the order CDS Hooks 2.0.1 prescribes.

https://cds-hooks.hl7.org/2.0/#providing-fhir-resources-to-a-cds-service:
a prefetch key that is present is used (``null`` means no data exists); an OperationOutcome in
its place, or a Bundle carrying an error OperationOutcome, means the client failed, so we fetch it
ourselves; an absent key is fetched from
``fhirServer`` with the ``fhirAuthorization`` token. Fetches run in parallel within one overall
deadline and follow paging links. Data that cannot be had is a 412.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import requests

from cds_service.errors import BadRequest, DataUnavailable
from cds_service.hook_request import HookRequest
from cds_service.metrics import FHIR_CALLBACK_LATENCY, PREFETCH_KEYS
from cds_service.security import check_fhir_server
from cds_service.settings import Settings
from fhir_mappings.bundles import FhirInputError, reported_error, resource_entries
from fhir_mappings.client import FhirClient, next_link
from fhir_mappings.resources import Resource

#: Context fields a prefetch token may name (root-level primitives of the order hooks' context).
_TOKENS = ("patientId", "userId", "encounterId")


@dataclass
class ResolvedData:
    """Each prefetch key's resource (a Bundle for searches) or None when no data exists."""

    values: dict[str, Mapping[str, Any] | None]
    #: Keys that came from the request's prefetch, and keys we fetched ourselves.
    prefetched: list[str] = field(default_factory=list)
    fetched: list[str] = field(default_factory=list)
    #: The relative queries the service itself ran, by key (recorded in the audit trail).
    queries: dict[str, str] = field(default_factory=dict)
    #: Each key's entries, read once (when the value was checked).
    _entries: dict[str, list[tuple[Resource, str | None]]] = field(default_factory=dict)

    def keep(self, key: str, value: Mapping[str, Any]) -> None:
        """Take ``value`` for ``key``; a malformed Bundle raises ``FhirInputError`` here."""
        self._entries[key] = list(resource_entries(value))
        self.values[key] = value

    def entries(self, key: str) -> list[tuple[Resource, str | None]]:
        if key not in self._entries:
            value = self.values.get(key)
            self._entries[key] = [] if value is None else list(resource_entries(value))
        return self._entries[key]


def fill_template(template: str, request: HookRequest) -> str:
    """Replace the prefetch tokens with the request's context values, URL-encoded."""
    values = {
        "patientId": request.patient_id,
        "userId": request.user_id,
        "encounterId": request.encounter_id,
    }
    query = template
    for name in _TOKENS:
        token = "{{context." + name + "}}"
        if token in query:
            value = values[name]
            if value is None:
                raise DataUnavailable(f"the query needs context.{name}, which the request lacks")
            query = query.replace(token, quote(value, safe=""))
    return query


def _timed(key: str, seconds: float) -> None:
    """One call-back's latency, by prefetch key."""
    FHIR_CALLBACK_LATENCY.labels(key).observe(seconds)


def _is_outcome(value: Any) -> bool:
    return isinstance(value, Mapping) and value.get("resourceType") == "OperationOutcome"


def resolve(
    request: HookRequest,
    templates: Mapping[str, str],
    session: requests.Session,
    settings: Settings,
) -> ResolvedData:
    resolved = ResolvedData(values={})
    to_fetch: dict[str, str] = {}
    continue_paging: dict[str, Mapping[str, Any]] = {}
    for key, template in templates.items():
        if key in request.prefetch:
            value = request.prefetch[key]
            if value is None:
                resolved.values[key] = None
                resolved.prefetched.append(key)
                PREFETCH_KEYS.labels(key, "prefetch").inc()
            elif _is_outcome(value) or reported_error(value) is not None:
                # The client could not gather this key (or only part of it): fetch it ourselves.
                to_fetch[key] = fill_template(template, request)
            elif isinstance(value, Mapping) and isinstance(value.get("resourceType"), str):
                if value.get("resourceType") == "Bundle" and next_link(value) is not None:
                    try:
                        list(resource_entries(value))  # a malformed Bundle is the client's error: 400
                    except FhirInputError as error:
                        raise BadRequest(f"prefetch.{key}: {error}", expression=[f"prefetch.{key}"]) from None
                    continue_paging[key] = value  # the client paginated: fetch the rest
                else:
                    try:
                        resolved.keep(key, value)  # a malformed Bundle is the client's error: 400
                    except FhirInputError as error:
                        raise BadRequest(f"prefetch.{key}: {error}", expression=[f"prefetch.{key}"]) from None
                    resolved.prefetched.append(key)
                    PREFETCH_KEYS.labels(key, "prefetch").inc()
            else:
                raise BadRequest(
                    f"prefetch.{key} is not a FHIR resource or null", expression=[f"prefetch.{key}"]
                )
        else:
            to_fetch[key] = fill_template(template, request)
    if not to_fetch and not continue_paging:
        return resolved
    if not request.fhir_server:
        missing = ", ".join(sorted([*to_fetch, *continue_paging]))
        raise DataUnavailable(
            f"prefetch key(s) {missing} were not provided (or were incomplete) and the request has no "
            "fhirServer to fetch them from"
        )
    check_fhir_server(request.fhir_server, settings)
    client = FhirClient(
        base_url=request.fhir_server,
        token=request.access_token,
        session=session,
        deadline=time.monotonic() + settings.fhir_deadline_seconds,
        max_pages=settings.max_fhir_pages,
    )
    resolved.queries.update(to_fetch)
    gathered = client.gather({**to_fetch, **continue_paging}, timing=_timed)
    failures: list[str] = []
    for key in [*to_fetch, *continue_paging]:
        if key in gathered.failures:
            failures.append(f"{key}: {gathered.failures[key].detail}")
            continue
        value = gathered.values[key]
        try:
            resolved.keep(key, value)
        except FhirInputError as error:
            failures.append(f"{key}: the FHIR server sent a malformed Bundle ({error})")
            continue
        if (error_text := reported_error(value)) is not None:
            failures.append(f"{key}: the FHIR server reported an error in the results ({error_text})")
            continue
        resolved.fetched.append(key)
        PREFETCH_KEYS.labels(key, "fetched").inc()
    if failures:
        raise DataUnavailable("could not obtain " + "; ".join(failures))
    return resolved
