"""One call from FHIR resources to IChIS: extract readings, choose the baseline, score.

This is the single path every surface uses (CLI, CDS card, SMART app, cohort tool), so that a
score is never computed two ways.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from fhir_mappings.baseline import IG, NEUTROPHILS, Baseline, choose_baseline
from fhir_mappings.config import MappingConfig
from fhir_mappings.observations import Extraction, extract_readings
from fhir_mappings.resources import Resource
from fhir_mappings.subjects import CallPatient, SubjectCheck, SubjectRule, for_patient
from ichis.icis import IcisResult, IcisValue, score_icis
from ichis.measurement import Measurement, plain
from ichis.reference import CITATION, DERIVATION_POPULATION, NATURE_OF_SCORE
from ichis.score import IChISResult, Part, Status, score_ichis

_ICIS_SOURCES = {
    "neut_sfl": "neut_sfl",
    "delta_he": "delta_he",
    "as_lymp": "as_lymp",
}


@dataclass(frozen=True, slots=True)
class Assessment:
    """The score, the baseline it came from, and every sentence a reader needs about the data."""

    result: IChISResult
    baseline: Baseline
    extraction: Extraction
    icis: IcisResult | None
    reasons: tuple[str, ...]
    #: The results that were this patient's, and those left out as another's or as untied.
    subjects: SubjectCheck
    #: ``Patient/id`` of the patient assessed.
    patient: str


#: The resources that carry results: the subject rule is applied to them here.
_RESULT_TYPES = frozenset({"Observation", "DiagnosticReport"})


def assess(
    entries: Iterable[tuple[Resource, str | None]],
    at: datetime,
    config: MappingConfig,
    *,
    patient: CallPatient,
) -> Assessment:
    """IChIS for ``patient`` at reference time ``at`` from ``(resource, fullUrl)`` pairs.

    Only results whose subject is ``patient`` are read (``fhir_mappings.subjects``); the others are
    named in the reasons and in ``subjects``, never scored.
    """
    entries = list(entries)
    check = for_patient(entries, patient, _RESULT_TYPES)
    extraction = extract_readings(check.kept, config, SubjectRule(patient, entries))
    subjects = SubjectCheck(
        check.kept,
        tuple(dict.fromkeys(check.foreign + extraction.foreign)),
        tuple(dict.fromkeys(check.untied + extraction.untied)),
    )
    baseline = choose_baseline(extraction, at, config)
    result = score_ichis(
        baseline.neutrophils.measurement,
        baseline.immature_granulocytes.measurement,
        neutrophils_missing=baseline.neutrophils.missing_reason,
        immature_granulocytes_missing=baseline.immature_granulocytes.missing_reason,
    )
    reasons = [part.explanation for part in result.parts.values() if part.points is None]
    reasons += subjects.sentences()
    reasons += baseline.reasons
    icis = _icis(baseline, config)
    return Assessment(
        result, baseline, extraction, icis, tuple(dict.fromkeys(reasons)), subjects, patient.reference
    )


def _icis(baseline: Baseline, config: MappingConfig) -> IcisResult | None:
    if config.icis is None:
        return None
    values: dict[str, IcisValue | None] = {}
    for part, choice in (
        ("neutrophils", baseline.neutrophils),
        ("immature_granulocytes", baseline.immature_granulocytes),
    ):
        m = choice.measurement
        values[part] = IcisValue(m.value_per_uL, m.comparator) if m else None
    for name, concept in _ICIS_SOURCES.items():
        reading = baseline.companions.get(concept)
        values[name] = IcisValue(reading.value, reading.comparator) if reading else None
    return score_icis(config.icis, values)


def _part_json(measurement: Measurement | None, points: int | None, explanation: str) -> dict[str, Any]:
    if measurement is None:
        return {
            "points": points,
            "value_per_uL": None,
            "comparator": None,
            "observation": None,
            "effective": None,
            "derived": False,
            "explanation": explanation,
        }
    source = measurement.source
    out: dict[str, Any] = {
        "points": points,
        "value_per_uL": plain(measurement.value_per_uL),
        "comparator": measurement.comparator.value if measurement.comparator else None,
        "observation": source.reference,
        "effective": source.effective.isoformat(),
        "derived": measurement.derived,
        "value_as_sent": source.value_as_sent,
        "unit_as_sent": source.unit_as_sent,
        "status": source.status,
        "sample": source.sample,
        "explanation": explanation,
    }
    if measurement.derived:
        out["derived_from"] = [
            {
                "observation": s.reference,
                "value_as_sent": s.value_as_sent,
                "unit_as_sent": s.unit_as_sent,
                "effective": s.effective.isoformat(),
            }
            for s in measurement.derived_from
        ]
    return out


def assessment_json(assessment: Assessment) -> dict[str, Any]:
    """The documented JSON form of an assessment (``ichis score`` output; README "Output")."""
    result = assessment.result
    parts = {
        "neutrophils": _part_json(
            result.parts[Part.NEUTROPHILS].measurement,
            result.parts[Part.NEUTROPHILS].points,
            result.parts[Part.NEUTROPHILS].explanation,
        ),
        "immature_granulocytes": _part_json(
            result.parts[Part.IMMATURE_GRANULOCYTES].measurement,
            result.parts[Part.IMMATURE_GRANULOCYTES].points,
            result.parts[Part.IMMATURE_GRANULOCYTES].explanation,
        ),
    }
    out: dict[str, Any] = {
        "ichis": result.score,
        "status": result.status.value,
        "lower": result.lower,
        "upper": result.upper,
        "patient": assessment.patient,
        "reference_time": assessment.baseline.reference_time.isoformat(),
        "parts": parts,
        "reasons": list(assessment.reasons),
        "left_out": {
            "other_patient": list(assessment.subjects.foreign),
            "no_subject": list(assessment.subjects.untied),
        },
        "stratum": None,
        "about": {
            "nature": NATURE_OF_SCORE,
            "population": DERIVATION_POPULATION,
            "citation": CITATION.text,
        },
    }
    stratum = result.stratum
    if stratum is not None:
        out["stratum"] = {
            "ichis": stratum.score,
            "median_pfs_days": _estimate(stratum.median_pfs_days),
            "median_os_days": _estimate(stratum.median_os_days),
            "pfs_hazard_ratio_vs_0": _estimate(stratum.pfs_hazard_ratio)
            if stratum.pfs_hazard_ratio
            else None,
            "os_hazard_ratio_vs_0": _estimate(stratum.os_hazard_ratio) if stratum.os_hazard_ratio else None,
            "source": "Kang et al. 2024, Tables 3 and 4 (95% CI as published, SPSS)",
        }
    if assessment.icis is not None:
        icis = assessment.icis
        out["icis"] = {
            "score": icis.score,
            "lower": icis.lower,
            "upper": icis.upper,
            "points": dict(icis.points),
            "missing": list(icis.missing),
            "cutoffs": "site-configured",
        }
    return out


def _estimate(estimate: Any) -> dict[str, str]:
    return {"value": str(estimate.value), "ci_low": str(estimate.ci_low), "ci_high": str(estimate.ci_high)}


__all__ = ["IG", "NEUTROPHILS", "Assessment", "Status", "assess", "assessment_json"]
