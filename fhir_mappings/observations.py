"""FHIR R4 Observations -> typed lab readings, or a plain sentence saying why a result is unusable.

Reads what the scores need and nothing else, defensively: real-world Observations are not
rejected over fields we do not use. Spec: https://hl7.org/fhir/R4/observation.html
(status, value[x], dataAbsentReason, component, hasMember, specimen, effective[x]).
"""

from __future__ import annotations

import contextlib
import functools
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from fhir_mappings.config import CodeEntry, Concept, MappingConfig
from fhir_mappings.fhirtime import TimeFormatError, When, parse_when, utc
from fhir_mappings.resources import (
    WITHDRAWN_STATUSES,
    Resource,
    codings,
    current_versions,
    decimal_of,
    index_resources,
    items_of,
    lookup,
    reference_of,
    text_of,
)
from fhir_mappings.subjects import SubjectRule, Verdict
from fhir_mappings.units import UnitError
from ichis.measurement import Comparator, Source, plain

#: https://hl7.org/fhir/R4/valueset-observation-status.html
USABLE_STATUSES = frozenset({"final", "amended", "corrected"})
PRELIMINARY = "preliminary"
KNOWN_STATUSES = USABLE_STATUSES | WITHDRAWN_STATUSES | {PRELIMINARY, "registered", "unknown"}
#: Within one sample and one code rank, a correction supersedes the original.
STATUS_PREFERENCE = {"corrected": 0, "amended": 0, "final": 1, "preliminary": 2}


@dataclass(frozen=True, slots=True)
class SampleKey:
    """What identifies one blood sample: the specimen, else the panel, else the collection time."""

    specimen: str | None
    panel: str | None
    instant: datetime

    def same_as(self, other: SampleKey) -> bool:
        if self.specimen and other.specimen:
            return self.specimen == other.specimen
        if self.panel and other.panel and self.panel == other.panel:
            return True
        return self.instant == other.instant

    def label(self) -> str:
        return self.specimen or self.panel or _collected(self.instant)


@functools.lru_cache(maxsize=1024)
def _collected(instant: datetime) -> str:
    """Label of a sample known only by its collection instant (many results share one)."""
    return f"collected {utc(instant).isoformat()}"


@dataclass(frozen=True, slots=True)
class Reading:
    """One usable lab value of one concept, normalised, with its provenance."""

    concept: str
    value: Decimal  # cells/uL for counts, percent for percents, the concept's unit for measures
    comparator: Comparator | None
    source: Source
    when: When
    sample: SampleKey
    rank: int
    status_preference: int


@dataclass(frozen=True, slots=True)
class Problem:
    """A result of a concept we know that could not be used, and why, in one sentence."""

    concept: str
    reference: str
    when: When | None
    message: str


@dataclass(frozen=True, slots=True)
class Extraction:
    readings: tuple[Reading, ...]
    problems: tuple[Problem, ...]
    #: Sentences about the data as a whole (withdrawn results, assumed time zones).
    notes: tuple[str, ...]
    #: Results contained in a report or panel whose own subject is another patient, or names no
    #: patient that resolves (their containers were this patient's).
    foreign: tuple[str, ...] = ()
    untied: tuple[str, ...] = ()


#: A value with one of these comparators bounds the truth from above (below): it cannot be
#: implausibly high (low) by itself.
_UPPER_BOUNDS = frozenset({Comparator.LT, Comparator.LE})
_LOWER_BOUNDS = frozenset({Comparator.GT, Comparator.GE})

_NUMERIC_TEXT = re.compile(r"^\s*(<=|>=|<|>)?\s*-?\d+(?:[.,]\d+)?\s*$")


#: Largest decimal exponent of a lab value, either way (see Reading's value check).
_MAGNITUDE = 30


def _codings(codeable: Any) -> Iterator[tuple[str | None, str | None]]:
    for system, code, _ in codings(codeable):
        yield system, code


def match_concept(codeable: Any, config: MappingConfig) -> tuple[Concept, CodeEntry] | None:
    """The best-ranked concept any coding of a CodeableConcept maps to."""
    best: tuple[Concept, CodeEntry] | None = None
    for system, code, _ in codings(codeable):  # every entry's code passes here: one generator, not two
        hit = config.lookup(system, code)
        if hit and (best is None or hit[1].rank < best[1].rank):
            best = hit
    return best


def _effective(resource: Resource, config: MappingConfig) -> When | None:
    for key in ("effectiveDateTime", "effectiveInstant"):
        if key in resource:
            return parse_when(resource[key], config.naive_time_zone)
    period = resource.get("effectivePeriod")
    if isinstance(period, dict) and (period.get("start") or period.get("end")):
        # Collection over a period (rare for blood counts): the start is when the sample was taken.
        return parse_when(period.get("start") or period["end"], config.naive_time_zone)
    return None


def _specimen(resource: Resource) -> str | None:
    specimen = resource.get("specimen")
    if isinstance(specimen, dict):
        ref = specimen.get("reference")
        if isinstance(ref, str) and ref:
            return ref
        ident = specimen.get("identifier")
        if isinstance(ident, dict) and ident.get("value"):
            return f"Specimen?identifier={ident.get('system', '')}|{ident['value']}"
    return None


class _Reader:
    """One pass over a set of resources; collects readings, problems and notes."""

    def __init__(self, config: MappingConfig) -> None:
        self.config = config
        self.readings: list[Reading] = []
        self.problems: list[Problem] = []
        self.withdrawn = 0
        self.zone_assumed = 0

    def observation(
        self,
        obs: Resource,
        reference: str,
        panel: str | None = None,
        panel_when: When | None = None,
        panel_specimen: str | None = None,
    ) -> None:
        status = text_of(obs, "status")
        root = match_concept(obs.get("code"), self.config)
        components = [c for c in items_of(obs, "component") if isinstance(c, dict)]
        relevant = [(root, obs)] if root else []
        relevant += [(hit, c) for c in components if (hit := match_concept(c.get("code"), self.config))]
        if not relevant:
            return
        if status in WITHDRAWN_STATUSES:
            self.withdrawn += 1
            return
        try:
            when = _effective(obs, self.config) or panel_when
        except TimeFormatError as error:
            for (concept, _), _part in relevant:
                self._problem(concept, reference, None, f"has an unreadable collection time: {error}")
            return
        for (concept, entry), part in relevant:
            self._value(
                obs,
                part=part,
                concept=concept,
                entry=entry,
                reference=reference,
                status=status,
                when=when,
                panel=panel,
                panel_specimen=panel_specimen,
            )

    def _problem(self, concept: Concept, reference: str, when: When | None, message: str) -> None:
        end = "" if message.endswith(("?", ".")) else "."  # a question keeps its own mark
        self.problems.append(
            Problem(concept.name, reference, when, f"{concept.label} {reference} {message}{end}")
        )

    def _value(
        self,
        obs: Resource,
        *,
        part: Resource,
        concept: Concept,
        entry: CodeEntry,
        reference: str,
        status: Any,
        when: When | None,
        panel: str | None,
        panel_specimen: str | None,
    ) -> None:
        if status not in KNOWN_STATUSES:
            self._problem(concept, reference, when, f"has no valid status ({status!r})")
            return
        if status == PRELIMINARY and not self.config.accept_preliminary:
            self._problem(
                concept,
                reference,
                when,
                "is preliminary and may still change "
                "(this site accepts final, amended and corrected results only)",
            )
            return
        if status not in USABLE_STATUSES and status != PRELIMINARY:
            self._problem(concept, reference, when, f"has status '{status}', which is not a result")
            return
        absent = part.get("dataAbsentReason")
        if absent is not None:
            codes = [c for _, c in _codings(absent) if c]
            reason = codes[0] if codes else (absent.get("text") if isinstance(absent, dict) else None)
            self._problem(
                concept,
                reference,
                when,
                f"was reported without a value (dataAbsentReason: {reason or 'unspecified'})",
            )
            return
        if when is None:
            self._problem(concept, reference, when, "has no collection time (effective[x])")
            return
        quantity = part.get("valueQuantity")
        if not isinstance(quantity, dict):
            self._non_quantity(part, concept, reference, when)
            return
        value = decimal_of(quantity.get("value"))
        if value is None:
            self._problem(
                concept, reference, when, f"has a value that is not a number ({quantity.get('value')!r})"
            )
            return
        if value != 0 and not -_MAGNITUDE <= value.adjusted() <= _MAGNITUDE:
            # No laboratory reports 1e31 or 1e-31 of anything; such a number only overflows the
            # arithmetic and the display downstream.
            self._problem(concept, reference, when, f"has a value out of any laboratory range ({value})")
            return
        raw_comparator = quantity.get("comparator")
        comparator: Comparator | None = None
        if raw_comparator is not None:
            try:
                comparator = Comparator(raw_comparator)
            except ValueError:
                self._problem(concept, reference, when, f"has an unknown comparator {raw_comparator!r}")
                return
        if value < 0 and concept.kind != "measure":
            self._problem(
                concept, reference, when, f"has a negative value ({plain(value)}), which a count cannot have"
            )
            return
        if value == 0 and entry.zero_means_missing:
            self._problem(
                concept,
                reference,
                when,
                "is 0, which this analyser sends when the research item is switched off; treated as missing",
            )
            return
        unit_code = quantity.get("code") if isinstance(quantity.get("code"), str) else None
        unit_text = quantity.get("unit") if isinstance(quantity.get("unit"), str) else None
        system = quantity.get("system") if isinstance(quantity.get("system"), str) else None
        units = self.config.units
        try:
            if concept.kind == "count":
                normalised = units.to_per_uL(value, unit_code, system, unit_text)
            elif concept.kind == "percent":
                normalised = units.to_percent(value, unit_code, system, unit_text)
            else:
                normalised = units.in_unit(value, unit_code, system, unit_text, concept.unit or "1")
        except UnitError as error:
            self._problem(concept, reference, when, f"has a unit that cannot be used: {error}")
            return
        as_sent = plain_as_sent(value)
        shown = f"{as_sent} {unit_text or unit_code or ''}".strip()
        if (doubt := self._implausible(concept, value, normalised, comparator, shown)) is not None:
            self._problem(concept, reference, when, doubt)
            return
        if when.zone_assumed:
            self.zone_assumed += 1
        sample = SampleKey(_specimen(obs) or panel_specimen, panel, when.earliest)
        source = Source(
            reference=reference,
            effective=when.earliest,
            value_as_sent=as_sent,
            unit_as_sent=unit_text or unit_code or "",
            status=str(status),
            sample=sample.label(),
        )
        self.readings.append(
            Reading(
                concept=concept.name,
                value=normalised,
                comparator=comparator,
                source=source,
                when=when,
                sample=sample,
                rank=entry.rank,
                status_preference=STATUS_PREFERENCE.get(str(status), 3),
            )
        )

    def _implausible(
        self,
        concept: Concept,
        value: Decimal,
        normalised: Decimal,
        comparator: Comparator | None,
        shown: str,
    ) -> str | None:
        """Why a value lies outside what any blood count can be (the site's plausibility table),
        with the likely cause; None when it is plausible. A bound sent with a comparator is
        impossible only when the bound itself is outside on the open side (``>500`` x10^3/uL)."""
        bounds = self.config.plausibility.get(concept.name)
        if bounds is None:
            return None
        if bounds.high is not None and normalised > bounds.high and comparator not in _UPPER_BOUNDS:
            ratio = normalised / value if value else Decimal(0)
            if concept.kind == "count" and ratio >= 1000 and bounds.contains(normalised / 1000):
                hint = "was it sent in /uL (a count per microlitre labelled as thousands)?"
            else:
                hint = "check the value and unit the laboratory sent"
            return (
                f"is {shown}, above any {concept.label} this analyser reports ({bounds.describe()}); {hint}"
            )
        if bounds.low is not None and normalised < bounds.low and comparator not in _LOWER_BOUNDS:
            return (
                f"is {shown}, below any {concept.label} this analyser reports ({bounds.describe()}); "
                "check the value and unit the laboratory sent"
            )
        return None

    def _non_quantity(self, part: Resource, concept: Concept, reference: str, when: When) -> None:
        text = part.get("valueString")
        if isinstance(text, str) and _NUMERIC_TEXT.match(text):
            self._problem(
                concept,
                reference,
                when,
                f"was sent as text ('{text.strip()}') without a unit, so it cannot be normalised",
            )
        elif any(k.startswith("value") for k in part):
            kinds = ", ".join(k for k in part if k.startswith("value"))
            self._problem(concept, reference, when, f"has no quantity value ({kinds})")
        else:
            self._problem(concept, reference, when, "has no value")


def plain_as_sent(value: Decimal) -> str:
    """The number as the sender wrote it (trailing zeros kept: ``0.080`` stays ``0.080``)."""
    return format(value, "f")


#: Containers of results: a panel Observation points to them by ``hasMember``, a DiagnosticReport by
#: ``result`` (https://hl7.org/fhir/R4/diagnosticreport.html); both may carry them ``contained``.
_MEMBERS = {"Observation": "hasMember", "DiagnosticReport": "result"}
#: How deep panels inside reports are followed (a report of panels of results is two).
_MAX_NESTING = 3


def _container_specimen(container: Resource) -> str | None:
    """A panel's specimen, or a report's when it names exactly one (else its results' own)."""
    if container.get("resourceType") != "DiagnosticReport":
        return _specimen(container)
    specimens = [s for s in items_of(container, "specimen") if isinstance(s, dict)]
    return _specimen({"specimen": specimens[0]}) if len(specimens) == 1 else None


class _Containers:
    """Reads the results that panels and reports hold, passing on their time, specimen and
    subject to results that lack them; a contained result with a subject of its own must be this
    patient's too."""

    def __init__(
        self, reader: _Reader, index: Mapping[str, Resource], rule: SubjectRule | None, config: MappingConfig
    ) -> None:
        self.reader, self.index, self.rule, self.config = reader, index, rule, config
        self.seen: set[int] = set()
        self.withdrawn = 0
        self.foreign: list[str] = []
        self.untied: list[str] = []

    def withdraw(self, container: Resource, contained: Mapping[str, Resource]) -> None:
        """A container withdrawn as a whole withdraws its results, wherever they are sent."""
        for target in self._targets(container, contained):
            if id(target) not in self.seen:
                self.seen.add(id(target))
                self.withdrawn += 1

    def _targets(self, container: Resource, contained: Mapping[str, Resource]) -> list[Resource]:
        found = []
        for member in items_of(container, _MEMBERS.get(str(container.get("resourceType")), "hasMember")):
            ref = member.get("reference") if isinstance(member, dict) else None
            if not isinstance(ref, str):
                continue
            target = contained.get(ref) if ref.startswith("#") else lookup(self.index, ref)
            if target is not None and target.get("resourceType") == "Observation":
                found.append(target)
        return found

    def read(
        self,
        container: Resource,
        container_ref: str,
        contained: Mapping[str, Resource],
        *,
        when: When | None = None,
        specimen: str | None = None,
        depth: int = 0,
    ) -> None:
        # An unreadable container time: its results keep their own.
        with contextlib.suppress(TimeFormatError):
            when = _effective(container, self.config) or when
        specimen = _container_specimen(container) or specimen
        members = items_of(container, _MEMBERS.get(str(container.get("resourceType")), "hasMember"))
        targets: list[tuple[Resource, str]] = []
        for member in members:
            ref = member.get("reference") if isinstance(member, dict) else None
            if not isinstance(ref, str):
                continue
            target = contained.get(ref) if ref.startswith("#") else lookup(self.index, ref)
            if target is None or target.get("resourceType") != "Observation":
                continue
            name = f"{container_ref}{ref}" if ref.startswith("#") else reference_of(target, ref)
            targets.append((target, name))
        if container.get("resourceType") == "DiagnosticReport":
            # Results a report carries contained without listing them in ``result`` are still its
            # results (feeds do this); read after the listed ones.
            targets += [
                (c, f"{container_ref}#{c.get('id')}")
                for c in items_of(container, "contained")
                if isinstance(c, dict) and c.get("resourceType") == "Observation"
            ]
        for target, name in targets:
            if id(target) in self.seen:
                continue
            self.seen.add(id(target))
            if any(target is c for c in contained.values()) and not self._own(target, name):
                continue
            self.reader.observation(target, name, container_ref, when, specimen)
            if depth < _MAX_NESTING and target.get("hasMember"):
                # A panel inside a report: its members resolve in the report's contained list too.
                inner = {**contained, **_contained(target)}
                if text_of(target, "status") in WITHDRAWN_STATUSES:
                    self.withdraw(target, inner)
                else:
                    self.read(target, name, inner, when=when, specimen=specimen, depth=depth + 1)

    def _own(self, result: Resource, name: str) -> bool:
        """A contained result without a subject is its container's; with one, it must be ours."""
        if self.rule is None or result.get("subject") is None:
            return True
        verdict = self.rule.reference(result.get("subject"))
        if verdict is Verdict.FOREIGN:
            self.foreign.append(name)
        elif verdict is Verdict.UNTIED:
            self.untied.append(name)
        return verdict is Verdict.OWN


def _contained(resource: Resource) -> dict[str, Resource]:
    return {f"#{c.get('id')}": c for c in items_of(resource, "contained") if isinstance(c, dict)}


def extract_readings(
    entries: Iterable[tuple[Resource, str | None]],
    config: MappingConfig,
    rule: SubjectRule | None = None,
) -> Extraction:
    """Every usable reading among ``(resource, fullUrl)`` pairs, and every unusable one, explained.

    Panels (``hasMember``) and DiagnosticReports (``result``) pass their time and specimen to
    results that lack them, and results only present as ``contained`` resources are read from
    their container. A result seen both inside a container and standalone is read once. ``rule``
    judges contained results that name a subject of their own (the entries themselves are this
    patient's: see ``fhir_mappings.subjects.for_patient``).
    """
    entries, superseded, unordered = current_versions(list(entries))
    index = index_resources(entries)
    reader = _Reader(config)
    containers = _Containers(reader, index, rule, config)
    found: list[tuple[Resource, str]] = []
    for resource, full_url in entries:
        kind = resource.get("resourceType") if isinstance(resource, dict) else None
        if (kind == "Observation" and resource.get("hasMember")) or kind == "DiagnosticReport":
            found.append((resource, reference_of(resource, full_url)))
    # Valid containers first: a result that a valid one also points to is not withdrawn by another.
    found.sort(key=lambda item: text_of(item[0], "status") in WITHDRAWN_STATUSES)
    for container, container_ref in found:
        if text_of(container, "status") in WITHDRAWN_STATUSES:
            containers.withdraw(container, _contained(container))
        else:
            containers.read(container, container_ref, _contained(container))
    seen = containers.seen
    panel_withdrawn = containers.withdrawn
    for resource, full_url in entries:
        if not isinstance(resource, dict) or resource.get("resourceType") != "Observation":
            continue
        if id(resource) in seen:
            continue
        seen.add(id(resource))
        reader.observation(resource, reference_of(resource, full_url))
    notes = []
    if reader.withdrawn:
        notes.append(f"{reader.withdrawn} result(s) marked entered-in-error or cancelled were left out.")
    if superseded:
        notes.append(
            f"{superseded} older version(s) of results were left out: a newer version replaces them."
        )
    if unordered:
        notes.append(
            f"{', '.join(unordered)} came in versions that cannot be ordered (no meta.versionId or "
            "meta.lastUpdated), one of them withdrawn: none of them was used."
        )
    if panel_withdrawn:
        notes.append(
            f"{panel_withdrawn} result(s) of a panel or report marked entered-in-error or cancelled "
            "were left out."
        )
    if reader.zone_assumed:
        notes.append(
            f"{reader.zone_assumed} result time(s) came without a time zone or without a time of "
            f"day and were read in the site's zone ({config.naive_time_zone})."
        )
    return Extraction(
        tuple(reader.readings),
        tuple(reader.problems),
        tuple(notes),
        tuple(containers.foreign),
        tuple(containers.untied),
    )
