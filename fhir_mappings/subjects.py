"""Whose data is this? A resource counts only for the patient of the call.

Wrong-patient data is among the most common causes of harm in health IT: an EHR's prefetch bug, a
query on a shared encounter or a hostile client can put another patient's results beside this
one's. Every surface (the service's prefetch and fetch, the SMART app, ``ichis score``, the cohort
tool) hands its resources through :func:`for_patient` before they are read.

The rule: a resource that is about a patient (``subject``, or ``patient`` where its type names the
patient so, see ``_PATIENT_ELEMENT``) counts only when that reference resolves to the patient of
the call. Literal references may be relative (``Patient/1``), absolute
(``https://ehr.example/fhir/Patient/1``) or versioned (``.../Patient/1/_history/3``), and inside a
Bundle a ``urn:uuid:`` reference resolves through the entries' ``fullUrl``
(https://hl7.org/fhir/R4/references.html#literal, https://hl7.org/fhir/R4/bundle.html#references).
An absolute reference must be on the call's FHIR server when that is known: the same id on
another server is another patient. A resource of such a type without a resolvable subject is not
used (a result contained in a DiagnosticReport or panel takes its container's subject; that is the
reader's business). Types that are not about a patient (Medication, Practitioner, Specimen without
a subject, ...) pass unchanged.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any
from urllib.parse import urlsplit

from fhir_mappings.resources import Resource

#: Resource types whose patient element is not ``subject`` (R4). Every other type that carries a
#: ``subject`` is checked on it.
_PATIENT_ELEMENT = {
    "AllergyIntolerance": "patient",
    "Immunization": "patient",
    "Coverage": "beneficiary",
    "Account": "subject",
}
#: Types that are always about one patient: without a subject they cannot be placed, so they are
#: not used. (A Specimen or Media without a subject is left alone: it is only referenced.)
_NEEDS_SUBJECT = frozenset(
    {
        "Observation",
        "Condition",
        "DiagnosticReport",
        "MedicationRequest",
        "MedicationAdministration",
        "MedicationStatement",
        "MedicationDispense",
        "ServiceRequest",
        "Procedure",
        "AllergyIntolerance",
        "Immunization",
    }
)
_RELATIVE = re.compile(r"^(?P<type>[A-Z][A-Za-z]+)/(?P<id>[A-Za-z0-9\-.]{1,64})(?:/_history/[^/]+)?$")
_ABSOLUTE = re.compile(
    r"^(?P<base>https?://.+?)/(?P<type>[A-Z][A-Za-z]+)/(?P<id>[A-Za-z0-9\-.]{1,64})(?:/_history/[^/]+)?$"
)


class Verdict(Enum):
    """What a resource's subject says about the patient of the call."""

    OWN = "own"
    FOREIGN = "foreign"  # another patient
    UNTIED = "untied"  # no subject, a subject that does not resolve, or one that is not a Patient


@functools.lru_cache(maxsize=256)
def _server_key(base: str) -> tuple[str, int | None, str] | None:
    """A FHIR base as (host, port, path), so that case, default ports, a trailing slash and the
    scheme do not make one server two."""
    try:
        parts = urlsplit(base.strip())
        port = parts.port
    except ValueError:
        return None
    if not parts.hostname:
        return None
    if port in (80, 443):
        port = None
    return parts.hostname.lower(), port, parts.path.rstrip("/")


@dataclass(frozen=True, slots=True)
class CallPatient:
    """The patient of a call (``context.patientId``, the launch's patient, ``--patient``), and the
    FHIR server its relative references belong to when one is known."""

    id: str
    server: str | None = None

    def __post_init__(self) -> None:
        # A FHIR id, or the urn:uuid fullUrl of a Patient sent without one (a transaction Bundle).
        if not self.id or "/" in self.id or any(c.isspace() for c in self.id):
            raise ValueError(f"a patient id is a FHIR id or a urn:uuid fullUrl, not {self.id!r}")

    @classmethod
    def parse(cls, text: str, server: str | None = None) -> CallPatient:
        """``p1``, ``Patient/p1`` or an absolute (or versioned) Patient URL; ValueError otherwise."""
        m = _ABSOLUTE.match(text) or _RELATIVE.match(text)
        if m and m["type"] == "Patient":
            return cls(m["id"], server)
        return cls(text, server)

    @property
    def reference(self) -> str:
        return self.id if self.id.startswith("urn:") else f"Patient/{self.id}"


def subject_of(resource: Resource) -> Any:
    """The element naming the patient a resource is about, as sent (None when absent)."""
    kind = resource.get("resourceType")
    return resource.get(_PATIENT_ELEMENT.get(kind, "subject") if isinstance(kind, str) else "subject")


def is_about_a_patient(resource: Resource) -> bool:
    """Whether the subject rule applies to the resource (its type is, or it names a subject)."""
    kind = resource.get("resourceType")
    return kind in _NEEDS_SUBJECT or subject_of(resource) is not None


class SubjectRule:
    """Judges references against the patient of the call, resolving ``urn:uuid`` (and any other
    ``fullUrl``) through the Patients sent alongside."""

    def __init__(self, patient: CallPatient, entries: Iterable[tuple[Resource, str | None]] = ()) -> None:
        self.patient = patient
        self._server = _server_key(patient.server) if patient.server else None
        #: fullUrl of each Patient sent -> its id, or its fullUrl when it has no id.
        self._patients: dict[str, str] = _patient_urls(entries)

    def reference(self, reference: Any) -> Verdict:
        """The verdict on one Reference (the JSON object)."""
        if not isinstance(reference, dict):  # decoded JSON: a dict (an ABC check costs more)
            return Verdict.UNTIED
        kind = reference.get("type")
        if isinstance(kind, str) and kind != "Patient" and not kind.endswith("/Patient"):
            return Verdict.UNTIED
        literal = reference.get("reference")
        if not isinstance(literal, str) or not literal.strip():
            return Verdict.UNTIED  # an identifier or a display alone cannot be checked
        literal = literal.strip()
        if literal in self._patients:  # urn:uuid:..., or an absolute fullUrl of a Patient sent
            return Verdict.OWN if self._patients[literal] == self.patient.id else Verdict.FOREIGN
        if m := _RELATIVE.match(literal):
            return self._by_type_and_id(m["type"], m["id"])
        if m := _ABSOLUTE.match(literal):
            if self._server is not None and _server_key(m["base"]) != self._server:
                return Verdict.FOREIGN if m["type"] == "Patient" else Verdict.UNTIED
            return self._by_type_and_id(m["type"], m["id"])
        return Verdict.UNTIED  # "#contained", an unresolved urn:uuid, a bare id

    def _by_type_and_id(self, kind: str, rid: str) -> Verdict:
        if kind != "Patient":
            return Verdict.UNTIED  # a Group, a Device, a Location: not one patient
        return Verdict.OWN if rid == self.patient.id else Verdict.FOREIGN

    def resource(self, resource: Resource) -> Verdict | None:
        """The verdict on a resource, or None when the rule does not apply to its type."""
        subject = subject_of(resource)
        if subject is None and resource.get("resourceType") not in _NEEDS_SUBJECT:
            return None  # the rule does not apply (see ``is_about_a_patient``)
        return self.reference(subject)


@dataclass(frozen=True, slots=True)
class SubjectCheck:
    """The entries that belong to the patient of the call, and the references of those left out."""

    kept: tuple[tuple[Resource, str | None], ...]
    foreign: tuple[str, ...] = ()
    untied: tuple[str, ...] = ()

    def sentences(self, noun: str = "result") -> list[str]:
        """What was left out, for a card's or a score's reasons."""
        out = []
        if self.foreign:
            out.append(
                f"{_count(len(self.foreign), noun)} of another patient {_were(len(self.foreign))} ignored "
                f"({', '.join(self.foreign[:5])}{', ...' if len(self.foreign) > 5 else ''})."
            )
        if self.untied:
            out.append(
                f"{_count(len(self.untied), noun)} without a subject that resolves to this patient "
                f"{_were(len(self.untied))} not used ({', '.join(self.untied[:5])}"
                f"{', ...' if len(self.untied) > 5 else ''})."
            )
        return out

    def merged(self, other: SubjectCheck) -> SubjectCheck:
        return SubjectCheck(
            self.kept,
            tuple(dict.fromkeys(self.foreign + other.foreign)),
            tuple(dict.fromkeys(self.untied + other.untied)),
        )


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _were(n: int) -> str:
    return "was" if n == 1 else "were"


def label_of(resource: Resource, full_url: str | None) -> str:
    """How a left-out resource is named: ``Type/id``, else its fullUrl."""
    rid = resource.get("id")
    kind = resource.get("resourceType", "Resource")
    if isinstance(rid, str) and rid:
        return f"{kind}/{rid}"
    return full_url or f"{kind} without id"


def for_patient(
    entries: Iterable[tuple[Resource, str | None]],
    patient: CallPatient,
    kinds: frozenset[str] | None = None,
) -> SubjectCheck:
    """The entries that may be read for ``patient``; the others named, never read. With ``kinds``,
    only resources of those types are judged (and the others kept as they are)."""
    entries = list(entries)
    rule = SubjectRule(patient, entries)
    kept: list[tuple[Resource, str | None]] = []
    foreign: list[str] = []
    untied: list[str] = []
    for resource, full_url in entries:
        judged = isinstance(resource, dict) and (kinds is None or resource.get("resourceType") in kinds)
        verdict = rule.resource(resource) if judged else None
        if verdict is None or verdict is Verdict.OWN:
            kept.append((resource, full_url))
        elif verdict is Verdict.FOREIGN:
            foreign.append(label_of(resource, full_url))
        else:
            untied.append(label_of(resource, full_url))
    return SubjectCheck(tuple(kept), tuple(foreign), tuple(untied))


def _patient_urls(entries: Iterable[tuple[Resource, str | None]]) -> dict[str, str]:
    """fullUrl of each Patient sent -> its id, or the fullUrl itself for one sent without an id."""
    found: dict[str, str] = {}
    for resource, full_url in entries:
        if full_url and isinstance(resource, dict) and resource.get("resourceType") == "Patient":
            rid = resource.get("id")
            found[full_url] = rid if isinstance(rid, str) and rid else full_url
    return found


def patients_named(entries: Iterable[tuple[Resource, str | None]]) -> set[str]:
    """The distinct patients the entries are about: the ids of the Patients sent (or the fullUrl of
    one without an id) and of the Patients their subjects name. For a file: whose is it?"""
    entries = list(entries)
    by_url = _patient_urls(entries)
    ids = set(by_url.values())
    for resource, _ in entries:
        if isinstance(resource, Mapping) and resource.get("resourceType") == "Patient":
            rid = resource.get("id")
            if isinstance(rid, str) and rid:
                ids.add(rid)
    for resource, _ in entries:
        if not isinstance(resource, Mapping) or not is_about_a_patient(resource):
            continue
        subject = subject_of(resource)
        literal = subject.get("reference") if isinstance(subject, Mapping) else None
        if not isinstance(literal, str):
            continue
        literal = literal.strip()
        if literal in by_url:
            ids.add(by_url[literal])
        elif (m := _RELATIVE.match(literal) or _ABSOLUTE.match(literal)) and m["type"] == "Patient":
            ids.add(m["id"])
    return ids
