"""Which orders are for an immune checkpoint inhibitor, and which drug.

Reads MedicationRequest (https://hl7.org/fhir/R4/medicationrequest.html): the drug is either
``medicationCodeableConcept`` or ``medicationReference`` to a Medication that is contained in the
order or sits in the same Bundle (CDS Hooks ``draftOrders``). Codes are matched first; names in
text and displays second, by whole word, so "Keytruda 200 mg IV" is pembrolizumab. A name may carry
its drug's FDA suffix ("dostarlimab-gxly"), and no other hyphenated ending ("pembrolizumab-like").
A concept coded in a standard terminology (RxNorm, ATC, SNOMED CT) is read by its codes and their
displays only, as its free text may name other drugs ("Dexamethasone 8 mg IV, premedication for
Keytruda"). Every
drug an order names is reported, so "nivolumab+ipilimumab" is two drugs of one order.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any

from fhir_mappings.config import ConfigurationError
from fhir_mappings.resources import (
    Resource,
    canonical_reference,
    codings,
    index_resources,
    items_of,
    lookup,
    reference_of,
    text_of,
)
from fhir_mappings.subjects import CallPatient, for_patient

#: The resources a draft order may be; the subject rule applies to them.
ORDER_TYPES = frozenset({"MedicationRequest"})

#: MedicationRequest statuses that are not (or no longer) an order being placed.
INACTIVE_ORDER_STATUSES = frozenset({"cancelled", "entered-in-error", "stopped", "completed"})

#: FDA suffix of a biologic's nonproprietary name: four lowercase letters (FDA guidance
#: "Nonproprietary Naming of Biological Products", 2017).
_FDA_SUFFIX = re.compile(r"[a-z]{4}")


@dataclass(frozen=True, slots=True)
class Drug:
    name: str
    target: str
    names: tuple[str, ...]
    fda_suffixes: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class CheckpointOrder:
    """A checkpoint-inhibitor order: which order, which drug, and what matched."""

    order: str  # reference of the MedicationRequest
    drug: str
    target: str
    matched_by: str  # e.g. "RxNorm 1547545" or "name 'Keytruda' in text 'Keytruda 200 mg'"


class DrugTable:
    """Codes and names of checkpoint inhibitors, shipped as data and extended by a site."""

    def __init__(self, site: Mapping[str, Any] | None = None) -> None:
        raw = resources.files("fhir_mappings").joinpath("data/checkpoint_inhibitors.toml")
        data = tomllib.loads(raw.read_text("utf-8"))
        extra = (site or {}).get("checkpoint_inhibitors", {})
        self.system_aliases: dict[str, str] = dict(data.get("system_aliases", {}))
        #: Terminologies whose codes say what a drug is; a concept coded in one is not read by its text.
        self.standard_systems = frozenset(self._system(s) for s in data.get("standard_systems", []))
        self.drugs: dict[str, Drug] = {}
        self.codes: dict[tuple[str, str], str] = {}
        for name in {**data["drugs"], **extra}:
            base = data["drugs"].get(name, {})
            more = extra.get(name, {})
            names = tuple(base.get("names", [])) + tuple(more.get("names", []))
            suffixes = tuple(base.get("fda_suffixes", [])) + tuple(more.get("fda_suffixes", []))
            for suffix in suffixes:
                if not isinstance(suffix, str) or not _FDA_SUFFIX.fullmatch(suffix):
                    raise ConfigurationError(
                        f"checkpoint_inhibitors.{name}.fda_suffixes: {suffix!r} is not an FDA suffix; "
                        "write the four lowercase letters after the hyphen ('gxly' of 'dostarlimab-gxly')"
                    )
            self.drugs[name] = Drug(
                name,
                str(more.get("target", base.get("target", "unknown"))),
                names or (name,),
                suffixes,
            )
            for entry in list(base.get("codes", [])) + list(more.get("codes", [])):
                self.codes[(self._system(entry["system"]), entry["code"])] = name
        # One capturing group per name, so ``Match.lastindex`` says which name (and drug) matched;
        # the optional suffix group does not capture.
        alternatives: list[tuple[str, str, str]] = []
        for drug in self.drugs.values():
            suffix = ""
            if drug.fda_suffixes:
                suffix = "(?:-(?:" + "|".join(re.escape(s) for s in drug.fda_suffixes) + "))?"
            for label in drug.names:
                alternatives.append((label, f"({re.escape(label)}){suffix}", drug.name))
        alternatives.sort(key=lambda alternative: len(alternative[0]), reverse=True)
        self._drug_of_group = {group: drug for group, (_, _, drug) in enumerate(alternatives, start=1)}
        self._names = re.compile(
            r"(?<![\w-])(?:" + "|".join(pattern for _, pattern, _ in alternatives) + r")(?![\w-])",
            re.IGNORECASE,
        )

    def _system(self, system: str) -> str:
        return self.system_aliases.get(system, system)

    def match_all(self, codeable: Any) -> list[tuple[str, str]]:
        """Each checkpoint inhibitor a CodeableConcept names, as (drug, how it matched); codes first.

        Without a checkpoint-inhibitor code, names are searched in the codings' displays, and in
        ``text`` unless a coding in a standard terminology names its drug in a display: the text of
        a coded drug may mention others ("Dexamethasone 8 mg IV, premedication for Keytruda"). A
        standard code without a display says nothing readable (the table lists few product codes),
        so the text is read then: a product code the table lacks must not lose the order.
        """
        if not isinstance(codeable, Mapping):
            return []
        found: dict[str, str] = {}
        texts: list[tuple[str, str]] = []  # (where the text sits, the text)
        standard = False
        for system, code, display in codings(codeable):
            label = ""
            if system and code:
                canonical = self._system(system)
                label = f"{_system_label(canonical)} {code}"
                standard = standard or (canonical in self.standard_systems and bool(display))
                if drug := self.codes.get((canonical, code)):
                    found.setdefault(drug, label)
            if display:
                texts.append((f"display '{display}'" + (f" of {label}" if label else ""), display))
        if found:
            return list(found.items())
        text = codeable.get("text")
        if isinstance(text, str) and not standard:
            texts.insert(0, (f"text '{text}'", text))
        for where, value in texts:
            for m in self._names.finditer(value):
                if m.lastindex is not None:
                    found.setdefault(self._drug_of_group[m.lastindex], f"name '{m[0]}' in {where}")
        return list(found.items())

    def match_codeable(self, codeable: Any) -> tuple[str, str] | None:
        """The first checkpoint inhibitor a CodeableConcept names (see ``match_all``), or None."""
        hits = self.match_all(codeable)
        return hits[0] if hits else None


def _system_label(system: str) -> str:
    return {
        "http://www.nlm.nih.gov/research/umls/rxnorm": "RxNorm",
        "http://www.whocc.no/atc": "ATC",
        "http://snomed.info/sct": "SNOMED CT",
    }.get(system, system)


def medication_codeables(order: Resource, index: Mapping[str, Resource]) -> list[Any]:
    """The CodeableConcepts that say what a MedicationRequest (or MedicationAdministration, whose
    ``medication[x]`` is the same) gives; ``index`` resolves a non-contained reference."""
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
        medication = lookup(index, target)
    found: list[Any] = []
    code = medication.get("code") if isinstance(medication, Mapping) else None
    if isinstance(medication, Mapping):
        found.append(code)
    if isinstance(ref.get("display"), str):
        # The display names the referenced Medication: read it as that Medication's text, so a
        # Medication coded as another drug is not taken for a checkpoint inhibitor by its display.
        coding = code.get("coding") if isinstance(code, Mapping) else None
        found.append({"coding": coding, "text": ref["display"]} if coding else {"text": ref["display"]})
    if isinstance(medication, Mapping):
        for ingredient in items_of(medication, "ingredient"):
            if isinstance(ingredient, Mapping):
                found.append(ingredient.get("itemCodeableConcept"))
    return found


def find_checkpoint_orders(
    entries: Iterable[tuple[Resource, str | None]],
    table: DrugTable,
    only: Iterable[str] | None = None,
    *,
    patient: CallPatient,
) -> list[CheckpointOrder]:
    """Checkpoint-inhibitor MedicationRequests of ``patient`` among ``(resource, fullUrl)`` pairs.

    An order whose subject is another patient, or names none, is never this patient's order
    (``fhir_mappings.subjects``).

    ``only`` restricts the search to these references (CDS Hooks order-select ``selections``).
    Orders that are cancelled, stopped or entered in error are not orders being placed, nor is an
    order not to give the drug (``doNotPerform``, a modifier:
    https://hl7.org/fhir/R4/medicationrequest-definitions.html#MedicationRequest.doNotPerform).
    One entry per drug: an order for "nivolumab+ipilimumab" gives two, with the same ``order``.
    """
    entries = list(entries)
    index = index_resources(entries)
    # Selections name orders as references: relative as in the spec's examples, or absolute.
    wanted = {canonical_reference(s) for s in only} | set(only) if only is not None else None
    found = []
    for resource, full_url in for_patient(entries, patient, ORDER_TYPES).kept:
        if not isinstance(resource, Mapping) or resource.get("resourceType") != "MedicationRequest":
            continue
        ref = reference_of(resource, full_url)
        if wanted is not None and ref not in wanted and (full_url or "") not in wanted:
            continue
        if text_of(resource, "status") in INACTIVE_ORDER_STATUSES or resource.get("doNotPerform") is True:
            continue
        drugs: dict[str, str] = {}
        for codeable in medication_codeables(resource, index):
            for name, how in table.match_all(codeable):
                drugs.setdefault(name, how)
        for name, how in drugs.items():
            drug = table.drugs[name]
            found.append(CheckpointOrder(ref, drug.name, drug.target, how))
    return found
