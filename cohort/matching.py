"""Which records carry which codes: Codings read by ``fhir_mappings``, LOINC under any spelling as LOINC.

The cohort's code tables (``cohort.codes``, the site's ``[cohort]`` rules) hold canonical
``(system, code)`` pairs; data are looked up the same way, as the service's mappers look them up.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from cohort import codes
from cohort.codes import Code
from fhir_mappings.config import SYSTEM_ALIASES
from fhir_mappings.resources import Resource, codings, items_of, text_of

_VOID_OBSERVATION = frozenset(codes.VOID_RESULT_STATUSES)
#: Condition verification statuses that withdraw a diagnosis.
_VOID_CONDITION = frozenset({"refuted", "entered-in-error"})


def codes_of(codeable: Any) -> list[Code]:
    """The (system, code) pairs of a CodeableConcept whose system and code are both strings."""
    return [
        (SYSTEM_ALIASES.get(system, system), code)
        for system, code, _ in codings(codeable)
        if system is not None and code is not None
    ]


def has_code(resource: Resource, wanted: frozenset[Code]) -> bool:
    """True when a Coding of ``resource.code`` is one of ``wanted``."""
    # A loop, not ``codes_of``: this runs several times for every candidate Observation.
    for system, code, _ in codings(resource.get("code")):
        if system is not None and code is not None and (SYSTEM_ALIASES.get(system, system), code) in wanted:
            return True
    return False


def spellings(codes: Iterable[Code], aliases: Mapping[str, str] = SYSTEM_ALIASES) -> list[Code]:
    """``codes`` plus the same codes under each other spelling of their system (``aliases`` maps a
    spelling to its canonical system), each once, in order."""
    others: dict[str, list[str]] = {}
    for alias, canonical in aliases.items():
        others.setdefault(canonical, []).append(alias)
    found = dict.fromkeys(codes)
    for system, code in list(found):
        found.update(dict.fromkeys((alias, code) for alias in others.get(system, [])))
    return list(found)


def is_void(resource: Resource) -> bool:
    """A Condition refuted or entered in error, or an Observation whose status says it is no result."""
    if resource.get("resourceType") == "Condition":
        return any(code in _VOID_CONDITION for _, code in codes_of(resource.get("verificationStatus")))
    return text_of(resource, "status") in _VOID_OBSERVATION


def may_be_lab(observation: Resource, lab_codes: frozenset[Code]) -> bool:
    """A panel, or an Observation with a lab code at its root or in a component."""
    if observation.get("hasMember") or has_code(observation, lab_codes):
        return True
    return any(isinstance(c, dict) and has_code(c, lab_codes) for c in items_of(observation, "component"))


def is_synthetic(resource: Resource | None) -> bool:
    """True when the resource carries the synthetic-data tag (``codes.SYNTHETIC_TAG``)."""
    meta = resource.get("meta") if resource else None
    if not isinstance(meta, Mapping):
        return False
    return any(
        isinstance(t, Mapping) and (t.get("system"), t.get("code")) == codes.SYNTHETIC_TAG
        for t in items_of(meta, "tag")
    )
