"""Site configuration of the FHIR mappings: code tables, unit aliases, baseline rules, ICIS.

Defaults ship as data files in ``data/``; a site's TOML file adds or overrides entries without
a code change. Loading is pure (it takes the parsed TOML mapping); reading the file is the
caller's job.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta, tzinfo
from decimal import Decimal, InvalidOperation
from importlib import resources
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from fhir_mappings.units import UnitError, UnitNormaliser, default_aliases
from ichis.icis import ICIS_PARAMETERS, Band, IcisConfig, IcisConfigurationError, IcisRule


class ConfigurationError(ValueError):
    """A site configuration that cannot be used; the message names the setting and the fix."""


def read_site_file(path: Path) -> dict[str, Any]:
    """The site file (TOML): every app's settings table and the mapping tables, for every reader
    (the service, the SMART app, ``ichis score``, the cohort tool)."""
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except OSError as error:
        raise ConfigurationError(f"cannot read configuration {path}: {error.strerror}") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigurationError(f"configuration {path} is not valid TOML: {error}") from None


KINDS = ("count", "percent", "measure")

#: Other names feeds use for LOINC: its HL7 OID, and the URL with a trailing slash or https.
SYSTEM_ALIASES = {
    "urn:oid:2.16.840.1.113883.6.1": "http://loinc.org",
    "http://loinc.org/": "http://loinc.org",
    "https://loinc.org": "http://loinc.org",
    "https://loinc.org/": "http://loinc.org",
}


@dataclass(frozen=True, slots=True)
class CodeEntry:
    system: str | None  # None: matched under each of the site's research code systems
    code: str
    rank: int
    display: str = ""
    zero_means_missing: bool = False


@dataclass(frozen=True, slots=True)
class Concept:
    name: str
    kind: str
    label: str
    codes: tuple[CodeEntry, ...]
    unit: str | None = None
    research: bool = False


@dataclass(frozen=True, slots=True)
class PlausibleRange:
    """What a concept's value can be at all, in its normalised unit (cells/uL for counts, percent
    for percents), with the unit it was written in and where the bounds come from."""

    low: Decimal | None
    high: Decimal | None
    unit: str
    #: The bounds as written in the table (``0 - 440 10*3/uL``), for sentences.
    written: str
    source: str

    def contains(self, value: Decimal) -> bool:
        return (self.low is None or value >= self.low) and (self.high is None or value <= self.high)

    def describe(self) -> str:
        return f"{self.written}, {self.source}"


@dataclass(frozen=True)
class MappingConfig:
    """Everything the mappers need to know about a site."""

    concepts: Mapping[str, Concept]
    research_code_systems: tuple[str, ...] = ()
    unit_aliases: Mapping[str, str] = field(default_factory=dict)
    #: Results older than this before the reference time are stale. 14 days: the paper drew
    #: baseline blood on the day of the first dose, and pre-treatment blood counts are routinely
    #: taken within a week or two of a cycle; older counts may describe another clinical state.
    lookback: timedelta = timedelta(days=14)
    #: Preliminary results may still change; a site may accept them knowingly.
    accept_preliminary: bool = False
    #: FHIR requires an offset on times; feeds that omit it are read in this zone (and said so).
    naive_time_zone: tzinfo = field(default_factory=lambda: ZoneInfo("UTC"))
    icis: IcisConfig | None = None
    #: (system, code) of panels that may carry the values in components or members: asked for in
    #: searches by code, never scored themselves.
    panel_codes: tuple[tuple[str, str], ...] = ()
    #: Values outside these ranges are not scored (``data/plausibility.toml``, ``[plausibility]``).
    plausibility: Mapping[str, PlausibleRange] = field(default_factory=dict)
    _index: dict[tuple[str, str], tuple[Concept, CodeEntry]] = field(init=False, repr=False, compare=False)
    _units: UnitNormaliser = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        index: dict[tuple[str, str], tuple[Concept, CodeEntry]] = {}
        for concept in self.concepts.values():
            for entry in concept.codes:
                systems = (entry.system,) if entry.system else self.research_code_systems
                for system in systems:
                    # A site may write LOINC under another spelling; data are looked up canonically.
                    index[(SYSTEM_ALIASES.get(system, system), entry.code)] = (concept, entry)
        object.__setattr__(self, "_index", index)
        object.__setattr__(self, "_units", UnitNormaliser(self.unit_aliases))

    def search_codes(self, concepts: Iterable[str]) -> list[str]:
        """``system|code`` tokens for a FHIR search by code: every code of ``concepts`` (research
        codes under each of the site's research systems), then the panels that may carry them in
        components or members, which a search by code does not reach otherwise."""
        tokens: list[str] = []
        for name in concepts:
            for entry in self.concepts[name].codes:
                systems = (entry.system,) if entry.system else self.research_code_systems
                tokens += [f"{system}|{entry.code}" for system in systems]
        tokens += [f"{system}|{code}" for system, code in self.panel_codes]
        return list(dict.fromkeys(tokens))

    def codes(self) -> frozenset[tuple[str, str]]:
        """Every (system, code) the tables map, each system spelt as ``lookup`` reads it."""
        index: dict[tuple[str, str], tuple[Concept, CodeEntry]] = self._index
        return frozenset(index)

    def lookup(self, system: str | None, code: str | None) -> tuple[Concept, CodeEntry] | None:
        """The concept a Coding means under this site's tables, if any."""
        if not system or not code:
            return None
        index: dict[tuple[str, str], tuple[Concept, CodeEntry]] = self._index
        return index.get((SYSTEM_ALIASES.get(system, system), code))

    @property
    def units(self) -> UnitNormaliser:
        normaliser: UnitNormaliser = self._units
        return normaliser


def _data(name: str) -> dict[str, Any]:
    text = resources.files("fhir_mappings").joinpath(f"data/{name}").read_text("utf-8")
    return tomllib.loads(text)


def _code_entries(raw: Any, where: str) -> list[CodeEntry]:
    if not isinstance(raw, list):
        raise ConfigurationError(f"{where}: expected a list of codes")
    entries = []
    for item in raw:
        if not isinstance(item, dict) or not isinstance(item.get("code"), str):
            raise ConfigurationError(f"{where}: each code needs at least a 'code' string")
        rank = item.get("rank", 0)
        if not isinstance(rank, int):
            raise ConfigurationError(f"{where}: 'rank' must be an integer")
        entries.append(
            CodeEntry(
                system=item.get("system"),
                code=item["code"],
                rank=rank,
                display=str(item.get("display", "")),
                zero_means_missing=bool(item.get("zero_means_missing", False)),
            )
        )
    return entries


def _concepts(site: Mapping[str, Any]) -> dict[str, Concept]:
    shipped = _data("lab_codes.toml")["concepts"]
    overrides = site.get("lab_codes", {})
    if not isinstance(overrides, dict):
        raise ConfigurationError("[lab_codes] must be a table of concepts")
    concepts: dict[str, Concept] = {}
    for name in {**shipped, **overrides}:
        base = dict(shipped.get(name, {}))
        extra = overrides.get(name, {})
        where = f"lab_codes.{name}"
        codes = [] if extra.get("replace") else _code_entries(base.get("codes", []), where)
        codes += _code_entries(extra.get("codes", []), where)
        kind = extra.get("kind", base.get("kind"))
        if kind not in KINDS:
            raise ConfigurationError(f"{where}: 'kind' must be one of {', '.join(KINDS)}")
        concepts[name] = Concept(
            name=name,
            kind=kind,
            label=str(extra.get("label", base.get("label", name))),
            codes=tuple(codes),
            unit=extra.get("unit", base.get("unit")),
            research=bool(extra.get("research", base.get("research", False))),
        )
    return concepts


def _decimal(value: Any, where: str) -> Decimal:
    # TOML floats are binary; cut-offs must be written as strings (or integers) to stay exact.
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ConfigurationError(f'{where}: write the number as a string, e.g. "0.08"')
    try:
        return Decimal(str(value))
    except InvalidOperation:
        raise ConfigurationError(f"{where}: '{value}' is not a number") from None


def _icis(raw: Any) -> IcisConfig | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise ConfigurationError("[icis] must be a table with one sub-table per parameter")
    rules = {}
    for name in raw:
        spec = raw[name]
        where = f"icis.{name}"
        if not isinstance(spec, dict) or not isinstance(spec.get("bands"), list):
            raise ConfigurationError(f"{where}: needs 'unit' and a list 'bands'")
        bands = tuple(
            Band(_decimal(b.get("above"), f"{where}.bands"), int(b.get("points", 0))) for b in spec["bands"]
        )
        try:
            rules[name] = IcisRule(name, str(spec.get("unit", "")), bands)
        except IcisConfigurationError as error:
            raise ConfigurationError(str(error)) from None
    try:
        return IcisConfig(rules)
    except IcisConfigurationError as error:
        raise ConfigurationError(f"{error} (parameters: {', '.join(ICIS_PARAMETERS)})") from None


def load_mapping_config(site: Mapping[str, Any] | None = None) -> MappingConfig:
    """Shipped tables merged with a site's parsed TOML (the whole file or its mapping part)."""
    site = site or {}
    baseline = site.get("baseline", {})
    systems = site.get("research_code_systems", [])
    if not isinstance(systems, list) or not all(isinstance(s, str) for s in systems):
        raise ConfigurationError("research_code_systems must be a list of code system URIs")
    aliases = default_aliases()
    extra_aliases = site.get("unit_aliases", {})
    if not isinstance(extra_aliases, dict):
        raise ConfigurationError("[unit_aliases] must map a spelling to a UCUM code")
    aliases.update({str(k): str(v) for k, v in extra_aliases.items()})
    days = baseline.get("lookback_days", 14)
    if isinstance(days, bool) or not isinstance(days, int) or days <= 0:
        raise ConfigurationError("baseline.lookback_days must be a positive whole number of days")
    zone_name = baseline.get("naive_time_zone", "UTC")
    try:
        zone = ZoneInfo(str(zone_name))
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigurationError(f"baseline.naive_time_zone: unknown time zone '{zone_name}'") from None
    concepts = _concepts(site)
    return MappingConfig(
        concepts=concepts,
        research_code_systems=tuple(systems),
        unit_aliases=aliases,
        lookback=timedelta(days=days),
        accept_preliminary=bool(baseline.get("accept_preliminary", False)),
        naive_time_zone=zone,
        icis=_icis(site.get("icis")),
        panel_codes=_panels(site.get("lab_panels", {})),
        plausibility=_plausibility(site.get("plausibility", {}), concepts, UnitNormaliser(aliases)),
    )


def _plausibility(
    site: Any, concepts: Mapping[str, Concept], units: UnitNormaliser
) -> dict[str, PlausibleRange]:
    """The shipped plausibility table with a site's changes: per concept, ``low`` and/or ``high``
    (strings, exact) in ``unit``, and the ``source`` of the bounds; ``high = "none"`` removes one."""
    if not isinstance(site, dict):
        raise ConfigurationError("[plausibility] must be a table with one sub-table per concept")
    shipped = _data("plausibility.toml")["ranges"]
    ranges: dict[str, PlausibleRange] = {}
    for name in {**shipped, **site}:
        where = f"plausibility.{name}"
        if name not in concepts:
            raise ConfigurationError(f"{where}: no lab concept is called '{name}'")
        change = site.get(name, {})
        if not isinstance(change, dict):
            raise ConfigurationError(f"{where} must be a table (low, high, unit, source)")
        raw = {**shipped.get(name, {}), **change}
        unknown = set(raw) - {"low", "high", "unit", "source"}
        if unknown:
            raise ConfigurationError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
        concept = concepts[name]
        unit = raw.get("unit")
        source = raw.get("source")
        if not isinstance(unit, str) or not unit:
            raise ConfigurationError(f"{where}: 'unit' is required (the unit low and high are written in)")
        if not isinstance(source, str) or not source.strip():
            raise ConfigurationError(f"{where}: 'source' is required (where the bounds come from)")
        bounds: list[Decimal | None] = []
        for key in ("low", "high"):
            value = raw.get(key)
            if value is None or value == "none":
                bounds.append(None)
                continue
            number = _decimal(value, f"{where}.{key}")
            try:
                if concept.kind == "count":
                    bounds.append(units.to_per_uL(number, unit, None, None))
                elif concept.kind == "percent":
                    bounds.append(units.to_percent(number, unit, None, None))
                else:
                    bounds.append(units.in_unit(number, unit, None, None, concept.unit or "1"))
            except UnitError as error:
                raise ConfigurationError(f"{where}: {error}") from None
        low, high = bounds
        if low is not None and high is not None and low > high:
            raise ConfigurationError(f"{where}: low is above high")
        if low is None and high is None:
            continue
        shown_unit = {"10*3/uL": "x10^3/uL", "10*9/L": "x10^9/L"}.get(unit, unit)
        if low is not None and high is not None:
            written = f"{raw['low']} to {raw['high']} {shown_unit}"
        elif high is not None:
            written = f"at most {raw['high']} {shown_unit}"
        else:
            written = f"at least {raw['low']} {shown_unit}"
        ranges[name] = PlausibleRange(low, high, unit, written, source.strip())
    return ranges


def _panels(site: Any) -> tuple[tuple[str, str], ...]:
    if not isinstance(site, dict) or not isinstance(site.get("codes", []), list):
        raise ConfigurationError("[lab_panels] must hold codes = [{ system = ..., code = ... }]")
    found: dict[tuple[str, str], None] = {}
    for entry in [*_data("lab_codes.toml")["panels"]["codes"], *site.get("codes", [])]:
        system, code = (entry.get("system"), entry.get("code")) if isinstance(entry, dict) else (None, None)
        if not isinstance(system, str) or not isinstance(code, str) or not system or not code:
            raise ConfigurationError("lab_panels.codes: each entry needs a system and a code")
        found[(system, code)] = None
    return tuple(found)
