"""What the details page shows, built from the assessment in the order the page shows it.

Pure. The score, the baseline, the reasons and the published strata all come from
``fhir_mappings.assessment.assess`` and ``ichis.reference``; nothing here decides a point. What the
card says too (the headline, times and ages, the stratum) is worded by ``ichis.wording``; the page's
parts are the classes of ``smart_app.page_model``, its problems come from ``smart_app.problems``.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from fhir_mappings.assessment import Assessment
from fhir_mappings.config import MappingConfig
from fhir_mappings.observations import Reading
from fhir_mappings.scope import Scope, ScopeAssessment
from ichis import wording
from ichis.icis import IcisResult
from ichis.measurement import Measurement, format_count, plain
from ichis.reference import PUBLISHED_STRATA, Estimate
from ichis.score import PART_LABELS, Part, Status
from smart_app.charts import strata_chart
from smart_app.context import CardContext
from smart_app.page_model import (
    Banner,
    DetailsPage,
    IcisView,
    InputRow,
    ScoreView,
    StratumRow,
    ValueRow,
)
from smart_app.problems import problems
from smart_app.record import PatientRecord
from smart_app.trends import trend_views

RESEARCH = ("neut_sfl", "delta_he", "as_lymp")
#: Other results of the baseline sample worth seeing next to the two parts.
COMPANIONS = (
    "leukocytes",
    "immature_granulocytes_percent",
    "lymphocytes",
    "monocytes",
    "platelets",
    "ret_he",
)
ICIS_LABELS = {
    "neut_sfl": "NEUT-SFL",
    "delta_he": "Delta-He",
    "neutrophils": "NEUT#",
    "as_lymp": "AS-LYMP#",
    "immature_granulocytes": "IG#",
}


def banner(record: PatientRecord, patient_id: str) -> Banner:
    """Who the patient is, from the Patient resource, as far as it was read."""
    patient = record.patient
    if patient is None:
        why = (
            "the EHR did not grant patient/Patient.r"
            if "patient" in record.denied
            else "the EHR did not return the Patient resource"
        )
        return Banner(patient_id, None, None, None, None, note=f"Name and birth date not shown: {why}.")
    names = patient.get("name")
    name = None
    if isinstance(names, list) and names and isinstance(names[0], Mapping):
        first = names[0]
        givens = first.get("given")
        given = " ".join(g for g in givens if isinstance(g, str)) if isinstance(givens, list) else ""
        family = first.get("family") if isinstance(first.get("family"), str) else ""
        name = first.get("text") if isinstance(first.get("text"), str) else f"{given} {family}".strip()
    identifiers = patient.get("identifier")
    identifier = None
    if isinstance(identifiers, list):
        for item in identifiers:
            if isinstance(item, Mapping) and isinstance(item.get("value"), str):
                identifier = item["value"]
                break
    gender = patient.get("gender") if isinstance(patient.get("gender"), str) else None
    birth = patient.get("birthDate") if isinstance(patient.get("birthDate"), str) else None
    return Banner(patient_id, name or None, gender, birth, identifier)


def _estimate(estimate: Estimate) -> str:
    return f"{estimate.value} days ({estimate.ci_low}-{estimate.ci_high})"


def _hazard(estimate: Estimate | None) -> str:
    return "reference" if estimate is None else f"{estimate.value} ({estimate.ci_low}-{estimate.ci_high})"


def score_view(assessment: Assessment, at_text: str, labs_available: bool) -> ScoreView:
    """The score at the top of the page, worded as the card words it."""
    result = assessment.result
    if not labs_available:
        return ScoreView(
            "IChIS not available",
            "unavailable",
            "The app may not read laboratory results for this launch, so no score can be computed here.",
            "info",
            None,
            None,
        )
    if result.status is Status.COMPLETE and result.stratum is not None:
        sentence = f"At the reference time ({at_text}); {result.stratum.label}."
    elif result.status is Status.PARTIAL:
        sentence = (
            f"Between {result.lower} and {result.upper}: {wording.NO_STRATUM} (reference time {at_text})."
        )
    else:
        sentence = f"Neither part can be scored from the blood counts available at {at_text}."
    stratum = result.stratum
    return ScoreView(
        wording.headline(result),
        result.status.value,
        sentence,
        wording.indicator(result),
        stratum,
        wording.stratum_sentence(stratum) if stratum is not None else None,
    )


def strata_rows(highlighted: int | None) -> tuple[StratumRow, ...]:
    """The published strata, the patient's (``highlighted``) marked."""
    return tuple(
        StratumRow(
            score=s.score,
            pfs=_estimate(s.median_pfs_days),
            pfs_hr=_hazard(s.pfs_hazard_ratio),
            os=_estimate(s.median_os_days),
            os_hr=_hazard(s.os_hazard_ratio),
            label=s.label,
            is_patient=s.score == highlighted,
        )
        for s in PUBLISHED_STRATA.values()
    )


def input_row(
    part: Part, measurement: Measurement | None, points: int | None, explanation: str, at: datetime
) -> InputRow:
    """One part's row of the inputs table: as sent, normalised, when, and the points it gave."""
    cutoff = wording.cutoff(part)
    label = PART_LABELS[part]
    if measurement is None:
        empty = dict.fromkeys(
            ("unit_as_sent", "normalised", "collected", "age", "status", "derived_from"), ""
        )
        return InputRow(
            **empty,
            part=part.value,
            label=label,
            value_as_sent="no usable result",
            cutoff=cutoff,
            derived=False,
            sources=(),
            points="unknown",
            explanation=explanation,
        )
    source = measurement.source
    comparator = measurement.comparator.value if measurement.comparator else ""
    derived_from = ""
    sources: tuple[str, ...] = (source.reference,)
    if measurement.derived:
        pct, wbc = measurement.derived_from
        derived_from = wording.derivation(measurement) + " / 100"
        sources = (pct.reference, wbc.reference)
        value_as_sent, unit_as_sent = "(derived)", ""
    else:
        value_as_sent, unit_as_sent = f"{comparator}{source.value_as_sent}", source.unit_as_sent
    return InputRow(
        part=part.value,
        label=label,
        value_as_sent=value_as_sent,
        unit_as_sent=unit_as_sent,
        normalised=measurement.shown(),
        cutoff=cutoff,
        collected=wording.when(source.effective),
        age=wording.age(source.effective, at),
        status=source.status,
        derived=measurement.derived,
        derived_from=derived_from,
        sources=sources,
        points=wording.points(points),
        explanation=explanation,
    )


def _reading_value(reading: Reading, mapping: MappingConfig) -> str:
    concept = mapping.concepts[reading.concept]
    prefix = reading.comparator.value if reading.comparator else ""
    if concept.kind == "count":
        return f"{prefix}{format_count(reading.value)}/uL"
    if concept.kind == "percent":
        return f"{prefix}{plain(reading.value)} %"
    return f"{prefix}{plain(reading.value)} {concept.unit or ''}".strip()


def value_row(reading: Reading, mapping: MappingConfig) -> ValueRow:
    """A companion or research result, in the unit its concept is shown in."""
    return ValueRow(
        concept=reading.concept,
        label=mapping.concepts[reading.concept].label,
        value=_reading_value(reading, mapping),
        collected=wording.when(reading.source.effective),
        source=reading.source.reference,
    )


def input_rows(assessment: Assessment, at: datetime) -> tuple[InputRow, ...]:
    """The inputs table: one row a part, in the score's order."""
    parts = assessment.result.parts
    return tuple(
        input_row(part, parts[part].measurement, parts[part].points, parts[part].explanation, at)
        for part in (Part.NEUTROPHILS, Part.IMMATURE_GRANULOCYTES)
    )


def population_note(scope: ScopeAssessment | None) -> str | None:
    """Why the patient may not belong to the population IChIS was derived in; None when they do."""
    if scope is None:
        return "Diagnoses could not be read, so whether the patient is in the study population is unknown."
    return None if scope.scope is Scope.NSCLC else scope.sentence


def research_rows(assessment: Assessment, mapping: MappingConfig) -> tuple[tuple[ValueRow, ...], str]:
    """The Sysmex research parameters of the baseline sample, and a note on them or their absence."""
    companions_of = assessment.baseline.companions
    research = tuple(value_row(companions_of[c], mapping) for c in RESEARCH if c in companions_of)
    configured = [c for c in RESEARCH if mapping.concepts[c].codes and mapping.research_code_systems]
    if research:
        return (
            research,
            "From the baseline sample. Research parameters: not part of IChIS, shown for context.",
        )
    if not configured:
        return research, (
            "This site has not configured the code system its analysers use for research parameters "
            "(research_code_systems), so none can be recognised."
        )
    return research, "No Sysmex research parameters were reported with the baseline sample."


def icis_view(icis: IcisResult) -> IcisView:
    """ICIS with each parameter's points, labelled as the analyser names them."""
    headline = (
        f"ICIS {icis.score}" if icis.score is not None else f"ICIS between {icis.lower} and {icis.upper}"
    )
    return IcisView(
        headline + " (site-configured cut-offs)",
        tuple((ICIS_LABELS.get(name, name), wording.points(points)) for name, points in icis.points.items()),
        tuple(ICIS_LABELS.get(name, name) for name in icis.missing),
    )


def build_page(
    assessment: Assessment,
    *,
    record: PatientRecord,
    scope: ScopeAssessment | None,
    context: CardContext,
    patient_id: str,
    at: datetime,
    at_from_card: bool,
    mapping: MappingConfig,
    trend_days: int,
    client_id: str,
    show_banner: bool,
) -> DetailsPage:
    """Everything the details page shows, in the order it shows it."""
    # Without laboratory results there is no score: the parts built from them stay empty.
    labs_available = record.observations is not None
    at_text = wording.when(at)
    result = assessment.result
    highlighted = result.score if labs_available and result.status is Status.COMPLETE else None
    research, research_note = research_rows(assessment, mapping)
    companions_of = assessment.baseline.companions
    return DetailsPage(
        banner=banner(record, patient_id) if show_banner else None,
        score=score_view(assessment, at_text, labs_available),
        context=context,
        at=at,
        at_text=at_text,
        at_from_card=at_from_card,
        population=population_note(scope),
        strata=strata_rows(highlighted),
        strata_chart=strata_chart(list(PUBLISHED_STRATA.values()), highlighted),
        inputs=input_rows(assessment, at) if labs_available else (),
        trends=trend_views(assessment, at, trend_days, mapping.lookback) if labs_available else (),
        research=research if labs_available else (),
        research_note=research_note,
        icis=icis_view(assessment.icis) if labs_available and assessment.icis is not None else None,
        companions=tuple(value_row(companions_of[c], mapping) for c in COMPANIONS if c in companions_of),
        problems=problems(assessment, record, scope, context, client_id),
        labs_available=labs_available,
    )
