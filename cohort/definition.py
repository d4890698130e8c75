"""What a cohort is: the site's mapping tables plus the ``[cohort]`` rules for doses, covariates and outcomes.

Loading is pure (it takes the parsed TOML). One definition drives both engines and the Python step,
so the code lists the engines filter on are the ones the mappers use.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from functools import cached_property
from typing import Any

from cohort import codes
from cohort.codes import Code
from cohort.errors import CohortConfigError
from cohort.matching import spellings
from fhir_mappings.config import SYSTEM_ALIASES, ConfigurationError, MappingConfig, load_mapping_config
from fhir_mappings.medications import DrugTable

FOLLOW_UP = ("cutoff", "last-contact")
DOSE_SOURCES = ("MedicationAdministration", "MedicationRequest")
RULE_RESOURCES = ("Observation", "Condition")


@dataclass(frozen=True, slots=True)
class EventRule:
    """Resources that record an event: a code, and for Observations optionally the value that means it."""

    resource: str
    codes: frozenset[Code]
    values: frozenset[Code] | None = None  # None: any value (or none) counts


@dataclass(frozen=True)
class CohortDefinition:
    """Everything extraction needs to know about a site and a data cut-off."""

    mapping: MappingConfig
    drugs: DrugTable
    cutoff: date
    #: "cutoff": alive patients are followed to the cut-off (complete death capture assumed);
    #: "last-contact": to the last dated Observation or administration on or before it.
    follow_up: str = "cutoff"
    #: Where the first dose is read, in order of preference.
    dose_sources: tuple[str, ...] = DOSE_SOURCES
    death_from_patient: bool = True
    death_rules: tuple[EventRule, ...] = ()
    progression_rules: tuple[EventRule, ...] = (
        EventRule(
            "Observation",
            frozenset(codes.PROGRESSION_OBSERVATION_CODES),
            frozenset(codes.PROGRESSION_VALUES),
        ),
    )
    ecog_codes: frozenset[Code] = frozenset(codes.ECOG_CODES)
    #: The latest ECOG up to this many days before the first dose (and on its day) is the baseline.
    ecog_window_days: int = 30
    pdl1_codes: frozenset[Code] = frozenset(codes.PDL1_TPS_CODES)
    smoking_codes: frozenset[Code] = frozenset(codes.SMOKING_CODES)
    histology: Mapping[Code, str] = field(default_factory=lambda: dict(codes.HISTOLOGY))
    #: Only patients with one of these Condition codes, if any are given.
    diagnosis_codes: frozenset[Code] = frozenset()

    def lab_codes(self) -> list[Code]:
        """Every (system, code) the mappers read, from the site's mapping tables."""
        return sorted(self.lab_code_set)

    @cached_property
    def lab_code_set(self) -> frozenset[Code]:
        return self.mapping.codes()

    @property
    def lab_window_days(self) -> tuple[int, int]:
        """Days before and after the first dose's date whose lab results are read: the look-back plus
        two days each side. Dates are compared as written and offsets run from -12:00 to +14:00, so
        a result and a dose 14 days apart can be written up to 16 calendar days apart."""
        return self.mapping.lookback.days + 2, 2

    def condition_codes(self) -> list[Code]:
        """Condition codes any step reads: histology, diagnosis, and Condition event rules."""
        rules = self.death_rules + self.progression_rules
        found = set(self.histology) | set(self.diagnosis_codes)
        found |= {c for rule in rules if rule.resource == "Condition" for c in rule.codes}
        return sorted(found)

    def drug_codes(self) -> list[Code]:
        """Checkpoint-inhibitor codes under every spelling of their system the drug table accepts."""
        return sorted(spellings(self.drugs.codes, self.drugs.system_aliases))

    def drug_names(self) -> list[str]:
        return sorted({name for drug in self.drugs.drugs.values() for name in drug.names})


def _codes(raw: Any, where: str) -> frozenset[Code]:
    if not isinstance(raw, list) or not raw:
        raise CohortConfigError(f"{where}: expected a non-empty list of {{ system = ..., code = ... }}")
    found = set()
    for item in raw:
        if not isinstance(item, dict) or not isinstance(item.get("code"), str):
            raise CohortConfigError(f"{where}: each entry needs 'system' and 'code' strings")
        if not isinstance(item.get("system"), str):
            raise CohortConfigError(f"{where}: code '{item['code']}' needs a 'system'")
        # LOINC under another spelling is LOINC: the row builder reads data systems canonically.
        system: str = item["system"]
        found.add((SYSTEM_ALIASES.get(system, system), item["code"]))
    return frozenset(found)


def _rules(raw: Any, where: str) -> tuple[EventRule, ...]:
    if not isinstance(raw, list):
        raise CohortConfigError(f"{where}: expected a list of rules ([[{where}]] tables)")
    rules = []
    for number, item in enumerate(raw, start=1):
        here = f"{where}[{number}]"
        if not isinstance(item, dict):
            raise CohortConfigError(f"{here}: expected a table")
        resource = item.get("resource", "Observation")
        if resource not in RULE_RESOURCES:
            raise CohortConfigError(f"{here}.resource: must be one of {', '.join(RULE_RESOURCES)}")
        values = _codes(item["values"], f"{here}.values") if "values" in item else None
        if values is not None and resource != "Observation":
            raise CohortConfigError(f"{here}.values: only Observation rules have values")
        rules.append(EventRule(resource, _codes(item.get("codes"), f"{here}.codes"), values))
    return tuple(rules)


def _int(section: Mapping[str, Any], key: str, default: int, minimum: int) -> int:
    value = section.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise CohortConfigError(f"cohort.{key}: must be a whole number >= {minimum}")
    return value


def load_definition(site: Mapping[str, Any] | None, cutoff: date) -> CohortDefinition:
    """The site's mapping tables and ``[cohort]`` rules, with the data cut-off."""
    site = site or {}
    try:
        mapping = load_mapping_config(site)
    except ConfigurationError as error:
        raise CohortConfigError(f"configuration: {error}") from None
    try:
        drugs = DrugTable(site)
    except (KeyError, TypeError, ValueError) as error:
        raise CohortConfigError(f"checkpoint_inhibitors: {error}") from None
    section = site.get("cohort", {})
    if not isinstance(section, dict):
        raise CohortConfigError("[cohort] must be a table")
    follow_up = section.get("follow_up", "cutoff")
    if follow_up not in FOLLOW_UP:
        raise CohortConfigError(f"cohort.follow_up: must be one of {', '.join(FOLLOW_UP)}")
    sources = section.get("dose_sources", list(DOSE_SOURCES))
    if not isinstance(sources, list) or not sources or any(s not in DOSE_SOURCES for s in sources):
        raise CohortConfigError(f"cohort.dose_sources: a list of {', '.join(DOSE_SOURCES)}")
    default = CohortDefinition(mapping, drugs, cutoff)
    death = section.get("death", {})
    progression = section.get("progression", {})
    if not isinstance(death, dict) or not isinstance(progression, dict):
        raise CohortConfigError("cohort.death and cohort.progression must be tables")
    histology = dict(default.histology)
    extra_histology = section.get("histology", {})
    if not isinstance(extra_histology, dict):
        raise CohortConfigError("cohort.histology: a table of detail = [codes], e.g. squamous = [...]")
    for detail, raw in extra_histology.items():
        histology.update(dict.fromkeys(_codes(raw, f"cohort.histology.{detail}"), str(detail)))
    return CohortDefinition(
        mapping=mapping,
        drugs=drugs,
        cutoff=cutoff,
        follow_up=str(follow_up),
        dose_sources=tuple(sources),
        death_from_patient=bool(death.get("patient_deceased", True)),
        death_rules=_rules(death.get("rules", []), "cohort.death.rules"),
        progression_rules=_rules(progression["rules"], "cohort.progression.rules")
        if "rules" in progression
        else default.progression_rules,
        ecog_codes=_codes(section["ecog_codes"], "cohort.ecog_codes")
        if "ecog_codes" in section
        else default.ecog_codes,
        ecog_window_days=_int(section, "ecog_window_days", default.ecog_window_days, 0),
        pdl1_codes=_codes(section["pdl1_codes"], "cohort.pdl1_codes")
        if "pdl1_codes" in section
        else default.pdl1_codes,
        histology=histology,
        diagnosis_codes=_codes(section["diagnosis_codes"], "cohort.diagnosis_codes")
        if "diagnosis_codes" in section
        else frozenset(),
    )
