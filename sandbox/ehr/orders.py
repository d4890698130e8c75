"""The sandbox EHR's order catalogue and the draft MedicationRequests it writes.

Codes: RxNorm (NLM), as listed in the project's domain reference (checkpoint inhibitors, section 3)
and RxNav for the others. The catalogue deliberately holds an ingredient code, a product (SCD)
code and a text-only order, since orders in the wild come in all three shapes.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"


@dataclass(frozen=True)
class CatalogueEntry:
    key: str
    label: str
    group: str
    dosage: str
    code: str | None = None  # RxNorm code; None: a free-text order, as some EHRs send
    display: str | None = None


CATALOGUE: tuple[CatalogueEntry, ...] = (
    CatalogueEntry(
        "pembrolizumab-product",
        "Pembrolizumab 4 ML 25 MG/ML injection (RxNorm 1657750)",
        "Checkpoint inhibitors",
        "200 mg IV every 3 weeks",
        "1657750",
        "4 ML pembrolizumab 25 MG/ML Injection",
    ),
    CatalogueEntry(
        "pembrolizumab",
        "Pembrolizumab (RxNorm ingredient 1547545)",
        "Checkpoint inhibitors",
        "200 mg IV every 3 weeks",
        "1547545",
        "pembrolizumab",
    ),
    CatalogueEntry(
        "nivolumab",
        "Nivolumab (RxNorm 1597876)",
        "Checkpoint inhibitors",
        "240 mg IV every 2 weeks",
        "1597876",
        "nivolumab",
    ),
    CatalogueEntry(
        "atezolizumab",
        "Atezolizumab (RxNorm 1792776)",
        "Checkpoint inhibitors",
        "1200 mg IV every 3 weeks",
        "1792776",
        "atezolizumab",
    ),
    CatalogueEntry(
        "keytruda-text", "Keytruda 200 mg IV (text only, no code)", "Checkpoint inhibitors", "200 mg IV"
    ),
    CatalogueEntry(
        "carboplatin",
        "Carboplatin (RxNorm 40048)",
        "Other drugs",
        "AUC 5 IV every 3 weeks",
        "40048",
        "carboplatin",
    ),
    CatalogueEntry(
        "atorvastatin",
        "Atorvastatin (RxNorm 83367)",
        "Other drugs",
        "20 mg by mouth daily",
        "83367",
        "atorvastatin",
    ),
)
BY_KEY = {entry.key: entry for entry in CATALOGUE}


def draft_medication_request(
    entry: CatalogueEntry,
    *,
    patient_id: str,
    encounter_id: str | None,
    user_id: str,
    now: datetime | None = None,
) -> dict[str, Any]:
    """A draft MedicationRequest as the EHR holds it before signing (status ``draft``)."""
    concept: dict[str, Any] = {"text": f"{entry.display or entry.label} {entry.dosage}"}
    if entry.code:
        concept["coding"] = [{"system": RXNORM, "code": entry.code, "display": entry.display}]
    resource: dict[str, Any] = {
        "resourceType": "MedicationRequest",
        "id": str(uuid.uuid4()),
        "status": "draft",
        "intent": "order",
        "medicationCodeableConcept": concept,
        "subject": {"reference": f"Patient/{patient_id}"},
        "requester": {"reference": user_id},
        "authoredOn": (now or datetime.now(UTC)).isoformat(timespec="seconds"),
        "dosageInstruction": [{"text": entry.dosage}],
    }
    if encounter_id:
        resource["encounter"] = {"reference": f"Encounter/{encounter_id}"}
    return resource


def order_label(resource: dict[str, Any]) -> str:
    concept = resource.get("medicationCodeableConcept") or {}
    text = concept.get("text")
    if isinstance(text, str) and text:
        return text
    for coding in concept.get("coding") or []:
        if isinstance(coding, dict) and coding.get("display"):
            return str(coding["display"])
    return f"MedicationRequest/{resource.get('id')}"
