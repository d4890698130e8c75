"""How the EHR page shows FHIR resources: patient names and a lab list, newest first."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

LOINC = "http://loinc.org"
_OLDEST = datetime.min.replace(tzinfo=UTC)


def patient_name(patient: Mapping[str, Any] | None) -> str:
    """``Given Family`` from the first name (or its text), else the id."""
    if not patient:
        return ""
    for name in patient.get("name") or []:
        if not isinstance(name, Mapping):
            continue
        if isinstance(name.get("text"), str) and name["text"]:
            return str(name["text"])
        parts = [*(g for g in name.get("given") or [] if isinstance(g, str)), name.get("family") or ""]
        text = " ".join(p for p in parts if p)
        if text:
            return text
    return f"Patient/{patient.get('id')}"


@dataclass(frozen=True)
class LabRow:
    observation: str  # Observation/{id}
    when: str  # as sent
    name: str
    loinc: str | None
    value: str
    unit: str
    status: str
    sort_key: datetime


def _instant(text: Any) -> datetime:
    """A FHIR dateTime as an aware datetime for sorting; dates and naive times count as UTC."""
    if not isinstance(text, str) or not text:
        return _OLDEST
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return _OLDEST
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _concept_name(concept: Any) -> tuple[str, str | None]:
    if not isinstance(concept, Mapping):
        return "(no code)", None
    codings = [c for c in concept.get("coding") or [] if isinstance(c, Mapping)]
    loinc = next((str(c.get("code")) for c in codings if c.get("system") == LOINC and c.get("code")), None)
    name = concept.get("text") or next((c.get("display") for c in codings if c.get("display")), None)
    if not name:
        name = next((str(c.get("code")) for c in codings if c.get("code")), "(no code)")
    return str(name), loinc


def _value(element: Mapping[str, Any]) -> tuple[str, str]:
    quantity = element.get("valueQuantity")
    if isinstance(quantity, Mapping):
        value = f"{quantity.get('comparator', '')}{quantity.get('value', '')}"
        return value, str(quantity.get("unit") or quantity.get("code") or "")
    for key in ("valueString", "valueInteger", "valueBoolean", "valueDateTime"):
        if key in element:
            return str(element[key]), ""
    concept = element.get("valueCodeableConcept")
    if isinstance(concept, Mapping):
        return _concept_name(concept)[0], ""
    absent = element.get("dataAbsentReason")
    if isinstance(absent, Mapping):
        return f"(absent: {_concept_name(absent)[0]})", ""
    return "", ""


def lab_rows(observations: Iterable[Mapping[str, Any]]) -> list[LabRow]:
    """One row per Observation value, and one per component of a panel, newest first."""
    rows: list[LabRow] = []
    for observation in observations:
        when = observation.get("effectiveDateTime") or (observation.get("effectivePeriod") or {}).get("start")
        when = when or observation.get("issued") or ""
        reference = f"Observation/{observation.get('id')}"
        status = str(observation.get("status") or "")
        elements = [observation, *(c for c in observation.get("component") or [] if isinstance(c, Mapping))]
        for element in elements:
            value, unit = _value(element)
            if element is observation and not value and observation.get("component"):
                continue  # a panel without a value of its own: its components are the rows
            name, loinc = _concept_name(element.get("code"))
            rows.append(LabRow(reference, str(when), name, loinc, value, unit, status, _instant(when)))
    return sorted(rows, key=lambda row: row.sort_key, reverse=True)
