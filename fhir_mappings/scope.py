"""Is this patient inside the population IChIS was derived in? Read from Condition resources.

https://hl7.org/fhir/R4/condition.html: a refuted or entered-in-error Condition never counts;
any clinical status does (a lung cancer in remission is still the cancer being treated).
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from importlib import resources
from typing import Any

from fhir_mappings.resources import Resource, codings, reference_of
from fhir_mappings.subjects import CallPatient, for_patient

SNOMED = "http://snomed.info/sct"
_DISCARDED = frozenset({"refuted", "entered-in-error"})
_CONDITION = frozenset({"Condition"})


class Scope(StrEnum):
    NSCLC = "nsclc"  # lung cancer on record, not small-cell: the derivation population
    SMALL_CELL = "small-cell"  # small-cell lung cancer: outside the population
    NO_LUNG_CANCER = "no-lung-cancer"  # no lung cancer diagnosis found
    UNKNOWN = "unknown"  # no diagnoses available at all


@dataclass(frozen=True, slots=True)
class ScopeAssessment:
    scope: Scope
    conditions: tuple[str, ...]  # references of the conditions that decided it
    sentence: str


class DiagnosisTable:
    def __init__(self, site: Mapping[str, Any] | None = None) -> None:
        raw = resources.files("fhir_mappings").joinpath("data/diagnoses.toml").read_text("utf-8")
        data = tomllib.loads(raw)
        extra = (site or {}).get("diagnoses", {})

        def codes(group: str, key: str) -> list[str]:
            return list(data[group].get(key, [])) + list(extra.get(group, {}).get(key, []))

        self.icd10_prefixes = tuple(codes("lung_cancer", "icd10_prefixes"))
        self.icd10_systems = frozenset(codes("lung_cancer", "icd10_systems"))
        self.lung_snomed = frozenset(codes("lung_cancer", "snomed"))
        self.small_snomed = frozenset(codes("small_cell", "snomed"))
        self.small_text = re.compile(data["small_cell"]["text_pattern"], re.IGNORECASE)

    def classify(self, codeable: Any) -> tuple[bool, bool]:
        """(is lung cancer, is small-cell) for one Condition.code."""
        if not isinstance(codeable, Mapping):
            return False, False
        lung = small = False
        texts = [codeable["text"]] if isinstance(codeable.get("text"), str) else []
        for system, code, display in codings(codeable):
            if display:
                texts.append(display)
            if code is None:
                continue
            if system in self.icd10_systems and code.upper().replace(".", "").startswith(self.icd10_prefixes):
                lung = True
            if system == SNOMED and code in self.lung_snomed:
                lung = True
            if system == SNOMED and code in self.small_snomed:
                small = True
        if lung and any(self.small_text.search(t) for t in texts):
            small = True
        return lung, small


def assess_scope(
    entries: Iterable[tuple[Resource, str | None]], table: DiagnosisTable, *, patient: CallPatient
) -> ScopeAssessment:
    """Where ``patient`` stands relative to the derivation population, with the deciding conditions.
    Conditions of another patient (or of none) are not read (``fhir_mappings.subjects``)."""
    seen_any = False
    lung_refs: list[str] = []
    small_refs: list[str] = []
    for resource, full_url in for_patient(entries, patient, _CONDITION).kept:
        if not isinstance(resource, Mapping) or resource.get("resourceType") != "Condition":
            continue
        verification = _code(resource.get("verificationStatus"))
        if verification in _DISCARDED:
            continue
        seen_any = True
        lung, small = table.classify(resource.get("code"))
        ref = reference_of(resource, full_url)
        if lung:
            lung_refs.append(ref)
        if small:
            small_refs.append(ref)
    if small_refs:
        return ScopeAssessment(
            Scope.SMALL_CELL,
            tuple(small_refs),
            "Small-cell lung cancer is on record; IChIS was derived in non-small cell lung cancer.",
        )
    if lung_refs:
        return ScopeAssessment(Scope.NSCLC, tuple(lung_refs), "Lung cancer (not small-cell) is on record.")
    if seen_any:
        return ScopeAssessment(
            Scope.NO_LUNG_CANCER,
            (),
            "No lung cancer diagnosis is on record; IChIS was derived in non-small cell lung cancer only.",
        )
    return ScopeAssessment(
        Scope.UNKNOWN,
        (),
        "No diagnoses were available; IChIS was derived in non-small cell lung cancer only.",
    )


def _code(codeable: Any) -> str | None:
    return next((code for _, code, _ in codings(codeable) if code), None)
