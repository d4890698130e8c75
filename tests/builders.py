"""Small builders of FHIR R4 resources for tests, so each case states only what it is about."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"

NEUT = "751-8"
IG_COUNT = "53115-2"
IG_PERCENT = "71695-1"
WBC = "6690-2"


def quantity(
    value: str | int | None,
    unit: str | None = "10*3/uL",
    *,
    code: str | None = "same",
    system: str | None = UCUM,
    comparator: str | None = None,
) -> dict[str, Any]:
    """A valueQuantity; ``code="same"`` repeats the unit as the UCUM code."""
    q: dict[str, Any] = {}
    if value is not None:
        q["value"] = Decimal(value) if isinstance(value, str) else value
    if comparator:
        q["comparator"] = comparator
    if unit is not None:
        q["unit"] = unit
    resolved = unit if code == "same" else code
    if resolved is not None:
        q["code"] = resolved
        if system:
            q["system"] = system
    return q


def observation(
    oid: str,
    loinc: str,
    value: str | int | None,
    unit: str | None = "10*3/uL",
    *,
    effective: str | None = "2024-03-01T08:00:00+09:00",
    status: str = "final",
    patient: str = "Patient/p1",
    system: str = LOINC,
    **extra: Any,
) -> dict[str, Any]:
    """An Observation with one coding and a valueQuantity (unless ``value`` is None)."""
    obs: dict[str, Any] = {
        "resourceType": "Observation",
        "id": oid,
        "status": status,
        "code": {"coding": [{"system": system, "code": loinc}]},
        "subject": {"reference": patient},
    }
    if effective is not None:
        obs["effectiveDateTime"] = effective
    if value is not None or "quantity" in extra:
        obs["valueQuantity"] = extra.pop("quantity", None) or quantity(value, unit)
    obs.update(extra)
    return obs


def bundle(*resources: dict[str, Any], kind: str = "collection") -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "type": kind,
        "entry": [
            {"fullUrl": f"urn:uuid:{r['resourceType'].lower()}-{r.get('id', i)}", "resource": r}
            for i, r in enumerate(resources)
        ],
    }


def entries(*resources: dict[str, Any]) -> list[tuple[dict[str, Any], str | None]]:
    return [(r, None) for r in resources]
