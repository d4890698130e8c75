"""The patient's record as the page needs it, read through ``fhir_mappings.client.FhirClient``
with the launch's access token: same-origin paging, one deadline, errors mapped once.

Only what the granted scopes allow is asked for; what is not granted is said, not fetched. JSON is
parsed with exact decimals by the client (``fhir_mappings.bundles.loads``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Any
from urllib.parse import quote

from fhir_mappings.audit import SmartRequest
from fhir_mappings.bundles import FhirInputError, reported_error, resource_entries
from fhir_mappings.client import FhirClient, FhirClientError, FhirRefused, FhirTimeout
from fhir_mappings.config import MappingConfig
from fhir_mappings.queries import condition_search, observation_search
from fhir_mappings.resources import Resource
from smart_app.errors import FhirUnavailable, TokenRefused
from smart_app.oauth import Grants

Entries = list[tuple[Resource, str | None]]


@dataclass
class PatientRecord:
    """What was read; ``None`` for a part the scopes did not allow (``denied`` says which scope)."""

    patient: Mapping[str, Any] | None = None
    observations: Entries | None = None
    conditions: Entries | None = None
    #: Scope a part needed but the EHR did not grant (or refused with 403), by part.
    denied: dict[str, str] = field(default_factory=dict)
    #: Sentences about what could not be read, for the data problems section.
    notes: list[str] = field(default_factory=list)


def lab_codes(mapping: MappingConfig) -> list[str]:
    """``system|code`` of every code the site maps to a concept (both parts, what derives IG#, the
    rest of the blood count, the Sysmex research parameters) and of the panels that carry them."""
    return mapping.search_codes(mapping.concepts)


def _result(error: FhirClientError) -> str:
    """How a request ended, for the audit record: the status, or what happened instead."""
    if error.status is not None:
        return str(error.status)
    if isinstance(error, FhirTimeout):
        return "timeout"
    return "stopped by the app" if isinstance(error, FhirRefused) else "no answer"


def read_record(
    client: FhirClient,
    patient: str,
    grants: Grants,
    mapping: MappingConfig,
    since: date,
    *,
    made: list[SmartRequest] | None = None,
) -> PatientRecord:
    """Patient, Observations since ``since`` and Conditions, in parallel, as far as granted.

    Each request made is appended to ``made`` with how it ended, also when reading fails: the
    page's audit record lists them whatever the outcome.
    """
    made = [] if made is None else made
    record = PatientRecord()
    jobs: dict[str, tuple[str, str]] = {}
    if grants.allows("Patient", "r"):
        jobs["patient"] = (f"Patient/{quote(patient, safe='')}", "patient/Patient.r")
    else:
        record.denied["patient"] = "patient/Patient.r"
    if grants.allows("Observation", "s"):
        jobs["observations"] = (
            observation_search(patient, lab_codes(mapping), since=since),
            "patient/Observation.rs",
        )
    else:
        record.denied["observations"] = "patient/Observation.rs"
    if grants.allows("Condition", "s"):
        jobs["conditions"] = (condition_search(patient), "patient/Condition.rs")
    else:
        record.denied["conditions"] = "patient/Condition.rs"
    if not jobs:
        return record
    gathered = client.gather({part: query for part, (query, _) in jobs.items()})
    answers, failures = gathered.values, gathered.failures
    for part, (query, _) in jobs.items():
        result = _result(failures[part]) if part in failures else "200"
        if reported_error(answers.get(part)) is not None:
            # Not the server's diagnostics: free text that could quote a value.
            result = "200 with an error OperationOutcome"
        made.append(SmartRequest("read" if part == "patient" else "search-type", query, result))
    for part, error in failures.items():
        if isinstance(error, FhirRefused) and error.status == 401:
            raise TokenRefused("The EHR no longer accepts the app's access token.")
        if isinstance(error, FhirRefused) and error.status == 403:
            # The EHR's enforcement is stricter than its grant: say so, as for a scope not granted.
            record.denied[part] = jobs[part][1]
            continue
        if part == "patient" and isinstance(error, FhirRefused) and error.status == 404:
            record.notes.append(f"The EHR has no Patient resource {patient}.")
            continue
        if isinstance(error, FhirTimeout):
            raise FhirUnavailable("The EHR's FHIR server did not answer in time.")
        raise FhirUnavailable(f"Reading the record failed: {error.detail}.")
    for part in ("observations", "conditions"):
        if (reported := reported_error(answers.get(part))) is not None:
            # The server says the search went wrong: what it sent may be partial, and a score or
            # a missing value read from it would look complete.
            raise FhirUnavailable(
                f"The EHR's FHIR server reported an error in the {part} it sent ({reported})."
            )
    try:
        if "patient" in answers:
            sent = answers["patient"]
            if sent.get("resourceType") == "Patient" and sent.get("id") == patient:
                record.patient = sent
            else:
                # Never another patient's name on this patient's page.
                record.notes.append(
                    f"The EHR answered the read of Patient/{patient} with another resource "
                    f"({sent.get('resourceType')}/{sent.get('id')}); it is not shown."
                )
        if "observations" in answers:
            record.observations = list(resource_entries(answers["observations"]))
        if "conditions" in answers:
            record.conditions = list(resource_entries(answers["conditions"]))
    except FhirInputError as error:
        raise FhirUnavailable(f"The EHR's FHIR server sent a malformed Bundle ({error}).") from None
    return record
