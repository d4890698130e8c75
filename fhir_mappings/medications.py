"""Which orders are for an immune checkpoint inhibitor, and which drug.

Reads MedicationRequest (https://hl7.org/fhir/R4/medicationrequest.html): the drug is either
``medicationCodeableConcept`` or ``medicationReference`` to a Medication that is contained in the
order or sits in the same Bundle (CDS Hooks ``draftOrders``). Codes are matched first; names in
text and displays second, by whole word, so "Keytruda 200 mg IV" is pembrolizumab.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any

from fhir_mappings.observations import Resource, codings, index_resources, items_of, reference_of, text_of

#: MedicationRequest statuses that are not (or no longer) an order being placed.
INACTIVE_ORDER_STATUSES = frozenset({"cancelled", "entered-in-error", "stopped", "completed"})


@dataclass(frozen=True, slots=True)
class Drug:
    name: str
    target: str
    names: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class CheckpointOrder:
    """A checkpoint-inhibitor order: which order, which drug, and what matched."""

    order: str  # reference of the MedicationRequest
    drug: str
    target: str
    matched_by: str  # e.g. "RxNorm 1547545" or "name 'Keytruda'"


class DrugTable:
    """Codes and names of checkpoint inhibitors, shipped as data and extended by a site."""

    def __init__(self, site: Mapping[str, Any] | None = None) -> None:
        raw = resources.files("fhir_mappings").joinpath("data/checkpoint_inhibitors.toml")
        data = tomllib.loads(raw.read_text("utf-8"))
        extra = (site or {}).get("checkpoint_inhibitors", {})
        self.system_aliases: dict[str, str] = dict(data.get("system_aliases", {}))
        self.drugs: dict[str, Drug] = {}
        self.codes: dict[tuple[str, str], str] = {}
        for name in {**data["drugs"], **extra}:
            base = data["drugs"].get(name, {})
            more = extra.get(name, {})
            names = tuple(base.get("names", [])) + tuple(more.get("names", []))
            self.drugs[name] = Drug(
                name, str(more.get("target", base.get("target", "unknown"))), names or (name,)
            )
            for entry in list(base.get("codes", [])) + list(more.get("codes", [])):
                self.codes[(self._system(entry["system"]), entry["code"])] = name
        alternatives = []
        self._name_of: dict[str, str] = {}
        for drug in self.drugs.values():
            for label in drug.names:
                self._name_of[label.casefold()] = drug.name
                alternatives.append(re.escape(label))
        alternatives.sort(key=len, reverse=True)
        self._names = re.compile(r"(?<![\w-])(" + "|".join(alternatives) + r")(?![\w-])", re.IGNORECASE)

    def _system(self, system: str) -> str:
        return self.system_aliases.get(system, system)

    def match_codeable(self, codeable: Any) -> tuple[str, str] | None:
        """(drug, how it matched) for a CodeableConcept, codes before text."""
        if not isinstance(codeable, Mapping):
            return None
        texts: list[str] = []
        for system, code, display in codings(codeable):
            if system and code:
                drug = self.codes.get((self._system(system), code))
                if drug:
                    return drug, f"{_system_label(self._system(system))} {code}"
            if display:
                texts.append(display)
        if isinstance(codeable.get("text"), str):
            texts.insert(0, codeable["text"])
        for text in texts:
            if m := self._names.search(text):
                return self._name_of[m[1].casefold()], f"name '{m[1]}' in '{text}'"
        return None


def _system_label(system: str) -> str:
    return {
        "http://www.nlm.nih.gov/research/umls/rxnorm": "RxNorm",
        "http://www.whocc.no/atc": "ATC",
        "http://snomed.info/sct": "SNOMED CT",
    }.get(system, system)


def _medication_of(order: Resource, index: Mapping[str, Resource]) -> Any:
    """The CodeableConcepts that say what a MedicationRequest orders."""
    if "medicationCodeableConcept" in order:
        return [order["medicationCodeableConcept"]]
    ref = order.get("medicationReference")
    if not isinstance(ref, Mapping):
        return []
    target = ref.get("reference")
    medication: Any = None
    if isinstance(target, str) and target.startswith("#"):
        medication = next(
            (
                c
                for c in items_of(order, "contained")
                if isinstance(c, Mapping) and f"#{c.get('id')}" == target
            ),
            None,
        )
    elif isinstance(target, str):
        medication = index.get(target)
    found: list[Any] = []
    if isinstance(ref.get("display"), str):
        found.append({"text": ref["display"]})
    if isinstance(medication, Mapping):
        found.insert(0, medication.get("code"))
        for ingredient in items_of(medication, "ingredient"):
            if isinstance(ingredient, Mapping):
                found.append(ingredient.get("itemCodeableConcept"))
    return found


def find_checkpoint_orders(
    entries: Iterable[tuple[Resource, str | None]],
    table: DrugTable,
    only: Iterable[str] | None = None,
) -> list[CheckpointOrder]:
    """Checkpoint-inhibitor MedicationRequests among ``(resource, fullUrl)`` pairs.

    ``only`` restricts the search to these references (CDS Hooks order-select ``selections``).
    Orders that are cancelled, stopped or entered in error are not orders being placed.
    """
    entries = list(entries)
    index = index_resources(entries)
    wanted = set(only) if only is not None else None
    found = []
    for resource, full_url in entries:
        if not isinstance(resource, Mapping) or resource.get("resourceType") != "MedicationRequest":
            continue
        ref = reference_of(resource, full_url)
        if wanted is not None and ref not in wanted and (full_url or "") not in wanted:
            continue
        if text_of(resource, "status") in INACTIVE_ORDER_STATUSES:
            continue
        for codeable in _medication_of(resource, index):
            hit = table.match_codeable(codeable)
            if hit:
                drug = table.drugs[hit[0]]
                found.append(CheckpointOrder(ref, drug.name, drug.target, hit[1]))
                break
    return found
