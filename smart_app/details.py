"""What the details page shows, built from the assessment: plain data for the templates.

Pure. The score, the baseline, the reasons and the published strata all come from
``fhir_mappings.assessment.assess`` and ``ichis.reference``; nothing here decides a point. The
wording follows the card (cds_service/cards.py) so that the card and the page say the same thing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from fhir_mappings.assessment import Assessment
from fhir_mappings.baseline import IG, NEUTROPHILS
from fhir_mappings.config import MappingConfig
from fhir_mappings.observations import Reading
from fhir_mappings.scope import Scope, ScopeAssessment
from ichis.measurement import Measurement, format_count, plain
from ichis.reference import (
    CITATION,
    DERIVATION_POPULATION,
    NATURE_OF_SCORE,
    PUBLISHED_STRATA,
    Estimate,
    PublishedStratum,
    stratum_heading,
    stratum_outcomes,
)
from ichis.score import CUTOFFS, PART_LABELS, Part, Status
from smart_app.charts import StrataChart, TrendChart, TrendInput, strata_chart, trend_chart
from smart_app.context import CardContext
from smart_app.record import PatientRecord

SHORT_NAMES = {Part.NEUTROPHILS: "NEUT#", Part.IMMATURE_GRANULOCYTES: "IG#"}
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
_SCOPE_FIX = (
    "Ask the EHR's administrators to grant the app {scope} (client {client}), then open it again "
    "from the card."
)


def when(moment: datetime) -> str:
    """A time as the card writes it, in the offset it was sent with: ``2026-11-28 09:00 +0900``."""
    return moment.strftime("%Y-%m-%d %H:%M %z").replace(" +0000", " UTC")


def age(moment: datetime, at: datetime) -> str:
    seconds = (at - moment).total_seconds()
    if seconds < 0:
        return "after the reference time"
    if seconds < 3600 * 36:
        return f"{int(seconds // 3600)} h before"
    return f"{int(seconds // 86400)} days before"


@dataclass(frozen=True, slots=True)
class Banner:
    patient_id: str
    name: str | None
    gender: str | None
    birth_date: str | None
    identifier: str | None
    #: Why the details are missing, when they are.
    note: str | None = None


@dataclass(frozen=True, slots=True)
class ScoreView:
    headline: str
    status: str
    sentence: str
    #: ``warning`` for a complete IChIS 2, ``info`` otherwise: the card's indicator policy.
    tone: str
    stratum: PublishedStratum | None
    stratum_line: str | None


@dataclass(frozen=True, slots=True)
class StratumRow:
    score: int
    pfs: str
    pfs_hr: str
    os: str
    os_hr: str
    label: str
    is_patient: bool


@dataclass(frozen=True, slots=True)
class InputRow:
    part: str  # "neutrophils" / "immature_granulocytes", for test ids
    label: str
    value_as_sent: str
    unit_as_sent: str
    normalised: str
    cutoff: str
    collected: str
    age: str
    status: str
    derived: bool
    derived_from: str
    sources: tuple[str, ...]
    points: str
    explanation: str


@dataclass(frozen=True, slots=True)
class TrendRow:
    collected: str
    shown: str
    as_sent: str
    source: str
    baseline: bool
    in_window: bool


@dataclass(frozen=True, slots=True)
class TrendView:
    part: str
    title: str
    chart: TrendChart | None
    rows: tuple[TrendRow, ...]
    #: Why there is no chart, or what it leaves out.
    note: str | None


@dataclass(frozen=True, slots=True)
class ValueRow:
    concept: str
    label: str
    value: str
    collected: str
    source: str


@dataclass(frozen=True, slots=True)
class IcisView:
    headline: str
    rows: tuple[tuple[str, str], ...]
    missing: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Problem:
    sentence: str
    fix: str | None
    kind: str  # "access", "data" or "note"


@dataclass(frozen=True)
class DetailsPage:
    banner: Banner | None
    score: ScoreView
    context: CardContext
    at: datetime
    at_text: str
    at_from_card: bool
    population: str | None
    strata: tuple[StratumRow, ...]
    strata_chart: StrataChart
    inputs: tuple[InputRow, ...]
    trends: tuple[TrendView, ...]
    research: tuple[ValueRow, ...]
    research_note: str
    icis: IcisView | None
    companions: tuple[ValueRow, ...]
    problems: tuple[Problem, ...]
    labs_available: bool
    nature: str = NATURE_OF_SCORE
    population_text: str = DERIVATION_POPULATION
    citation: str = CITATION.text


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


def stratum_line(stratum: PublishedStratum) -> str:
    """The card's sentence about a stratum, as plain text (both come from ichis.reference)."""
    return f"{stratum_heading(stratum)} {stratum_outcomes(stratum)}"


def score_view(assessment: Assessment, at_text: str, labs_available: bool) -> ScoreView:
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
        headline = f"IChIS {result.score} of 2"
        sentence = f"At the reference time ({at_text}); {result.stratum.label}."
    elif result.status is Status.PARTIAL:
        headline = f"IChIS {result.lower} to {result.upper} of 2"
        sentence = (
            f"Between {result.lower} and {result.upper}: one part is unknown, so no stratum is stated "
            f"(reference time {at_text})."
        )
    else:
        headline = "IChIS not available"
        sentence = f"Neither part can be scored from the blood counts available at {at_text}."
    tone = "warning" if result.status is Status.COMPLETE and result.score == 2 else "info"
    stratum = result.stratum
    return ScoreView(
        headline,
        result.status.value,
        sentence,
        tone,
        stratum,
        stratum_line(stratum) if stratum is not None else None,
    )


def strata_rows(highlighted: int | None) -> tuple[StratumRow, ...]:
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
    cutoff = f"> {format_count(CUTOFFS[part])}/uL"
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
        derived_from = (
            f"IG% {pct.value_as_sent} {pct.unit_as_sent} x WBC {wbc.value_as_sent} {wbc.unit_as_sent} / 100"
        )
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
        collected=when(source.effective),
        age=age(source.effective, at),
        status=source.status,
        derived=measurement.derived,
        derived_from=derived_from,
        sources=sources,
        points="unknown" if points is None else str(points),
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
    return ValueRow(
        concept=reading.concept,
        label=mapping.concepts[reading.concept].label,
        value=_reading_value(reading, mapping),
        collected=when(reading.source.effective),
        source=reading.source.reference,
    )


def trend_view(
    assessment: Assessment, part: Part, concept: str, *, at: datetime, start: datetime, window_start: datetime
) -> TrendView:
    """All readings of one part from ``start`` to the reference time, the baseline one marked."""
    chosen = assessment.result.parts[part].measurement
    baseline_ref = chosen.source.reference if chosen is not None else None
    readings = [r for r in assessment.extraction.readings if r.concept == concept]
    shown = [r for r in readings if start <= r.when.earliest <= at]
    later = len([r for r in readings if r.when.earliest > at])
    title = f"{PART_LABELS[part]} over the last {(at - start).days} days"
    points = []
    rows = []
    for reading in sorted(shown, key=lambda r: r.when.earliest):
        measurement = Measurement(reading.value, reading.source, reading.comparator)
        is_baseline = reading.source.reference == baseline_ref
        label = f"{when(reading.source.effective)}: {measurement.shown()} ({reading.source.reference})"
        points.append(
            TrendInput(
                reading.when.earliest, reading.value, label, is_baseline, reading.comparator is not None
            )
        )
        rows.append(
            TrendRow(
                collected=when(reading.source.effective),
                shown=measurement.shown(),
                as_sent=f"{reading.source.value_as_sent} {reading.source.unit_as_sent}".strip(),
                source=reading.source.reference,
                baseline=is_baseline,
                in_window=reading.when.earliest >= window_start,
            )
        )
    notes = []
    if chosen is not None and chosen.derived and part is Part.IMMATURE_GRANULOCYTES:
        notes.append(
            f"The baseline IG# ({chosen.shown()}) was derived from IG% and WBC, so it is not a point of "
            "this chart, which shows reported IG# only."
        )
    if later:
        notes.append(f"{later} result(s) after the reference time are not shown; the score never uses them.")
    if not shown:
        notes.insert(0, f"No usable {SHORT_NAMES[part]} results in this period.")
    chart = (
        trend_chart(points, start=start, end=at, window_start=window_start, cutoff=CUTOFFS[part])
        if shown
        else None
    )
    return TrendView(concept, title, chart, tuple(rows), " ".join(notes) or None)


#: What would fix each kind of unusable result, by the words of fhir_mappings' own sentences
#: (observations.py and baseline.py). Sentences that already say what would fix them are left as
#: they are. A ``kind`` on fhir_mappings.observations.Problem would make this table unnecessary.
_FIXES: tuple[tuple[str, str], ...] = (
    (
        "has a unit that cannot be used",
        "Ask the laboratory to send the UCUM unit code with the result, or, if the spelling is "
        "unambiguous, add it under [unit_aliases] in the site configuration.",
    ),
    (
        "is preliminary",
        "Wait for the final result, or set baseline.accept_preliminary = true if your site accepts "
        "preliminary counts.",
    ),
    ("was reported without a value", "Repeat the blood count, or ask the laboratory why no value was sent."),
    ("has no collection time", "Ask the interface team to send the collection time (effectiveDateTime)."),
    ("unreadable collection time", "Ask the interface team to send a valid FHIR dateTime."),
    ("was sent as text", "Ask the laboratory to send the value as a Quantity with its unit."),
    ("has no quantity value", "Ask the laboratory to send the value as a Quantity with its unit."),
    ("has no value", "Ask the laboratory to send the value as a Quantity with its unit."),
    ("switched off", "Switch the research item on in the analyser if your site uses it."),
    ("negative value", "Ask the laboratory to correct the result."),
    ("unknown comparator", "Ask the laboratory to correct the result."),
    ("has no valid status", "Ask the interface team to send a result status (final, amended, corrected)."),
    ("which is not a result", "Wait for the final result."),
    ("disagree", "Ask the laboratory which result is right; a corrected result replaces the others."),
    ("has no WBC from the same sample", "A WBC from the same sample, or a reported IG#, would fix this."),
    ("without a time zone", "Ask the interface team to send times with their offset, as FHIR requires."),
    ("dated without a time", "Ask the interface team to send the collection time, not only the date."),
    (
        "No sample has both parts",
        "A CBC with differential reporting both NEUT# and IG# gives one-sample inputs.",
    ),
    ("was derived from IG%", "Ask the laboratory to report IG# directly."),
)


def fix_for(sentence: str) -> str | None:
    if "would fix this" in sentence:
        return None
    return next((fix for words, fix in _FIXES if words in sentence), None)


def problems(
    assessment: Assessment,
    record: PatientRecord,
    scope: ScopeAssessment | None,
    context: CardContext,
    client_id: str,
) -> tuple[Problem, ...]:
    """Everything that limits what the page can say, each with what would fix it."""
    found: list[Problem] = []
    if "observations" in record.denied:
        found.append(
            Problem(
                "The EHR did not grant the app access to laboratory results (patient/Observation.rs): "
                "no blood counts could be read, so no score, inputs or trends are shown.",
                _SCOPE_FIX.format(scope="patient/Observation.rs", client=client_id),
                "access",
            )
        )
    if "conditions" in record.denied:
        found.append(
            Problem(
                "The EHR did not grant the app access to diagnoses (patient/Condition.rs): whether the "
                "patient belongs to the population IChIS was derived in is not known.",
                _SCOPE_FIX.format(scope="patient/Condition.rs", client=client_id),
                "access",
            )
        )
    if "patient" in record.denied:
        found.append(
            Problem(
                "The EHR did not grant the app access to the Patient resource (patient/Patient.r): "
                "the banner shows the patient id only.",
                _SCOPE_FIX.format(scope="patient/Patient.r", client=client_id),
                "access",
            )
        )
    found += [Problem(note, None, "access") for note in record.notes]
    if context.note:
        found.append(
            Problem(context.note + " The score is computed as of the time the app was opened.", None, "note")
        )
    if record.observations is not None:
        found += [Problem(reason, fix_for(reason), "data") for reason in assessment.reasons]
    if scope is not None and scope.scope is Scope.UNKNOWN:
        found.append(
            Problem(
                scope.sentence,
                "Record the cancer diagnosis (ICD-10 C34.x or SNOMED CT) in the problem list.",
                "data",
            )
        )
    return tuple(found)


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
    labs_available = record.observations is not None
    at_text = when(at)
    result = assessment.result
    highlighted = result.score if labs_available and result.status is Status.COMPLETE else None
    start = at - timedelta(days=trend_days)
    window_start = at - mapping.lookback
    population = None
    if scope is not None and scope.scope is not Scope.NSCLC:
        population = scope.sentence
    elif scope is None:
        population = (
            "Diagnoses could not be read, so whether the patient is in the study population is unknown."
        )
    companions_of = assessment.baseline.companions
    research = tuple(value_row(companions_of[c], mapping) for c in RESEARCH if c in companions_of)
    configured = [c for c in RESEARCH if mapping.concepts[c].codes and mapping.research_code_systems]
    if research:
        research_note = "From the baseline sample. Research parameters: not part of IChIS, shown for context."
    elif not configured:
        research_note = (
            "This site has not configured the code system its analysers use for research parameters "
            "(research_code_systems), so none can be recognised."
        )
    else:
        research_note = "No Sysmex research parameters were reported with the baseline sample."
    icis = None
    if assessment.icis is not None:
        icis_result = assessment.icis
        headline = (
            f"ICIS {icis_result.score}"
            if icis_result.score is not None
            else f"ICIS between {icis_result.lower} and {icis_result.upper}"
        )
        icis = IcisView(
            headline + " (site-configured cut-offs)",
            tuple(
                (ICIS_LABELS.get(name, name), "unknown" if points is None else str(points))
                for name, points in icis_result.points.items()
            ),
            tuple(ICIS_LABELS.get(name, name) for name in icis_result.missing),
        )
    parts = result.parts
    inputs = tuple(
        input_row(part, parts[part].measurement, parts[part].points, parts[part].explanation, at)
        for part in (Part.NEUTROPHILS, Part.IMMATURE_GRANULOCYTES)
    ) if labs_available else ()  # fmt: skip
    trends = (
        tuple(
            trend_view(assessment, part, concept, at=at, start=start, window_start=window_start)
            for part, concept in ((Part.NEUTROPHILS, NEUTROPHILS), (Part.IMMATURE_GRANULOCYTES, IG))
        )
        if labs_available
        else ()
    )
    return DetailsPage(
        banner=banner(record, patient_id) if show_banner else None,
        score=score_view(assessment, at_text, labs_available),
        context=context,
        at=at,
        at_text=at_text,
        at_from_card=at_from_card,
        population=population,
        strata=strata_rows(highlighted),
        strata_chart=strata_chart(list(PUBLISHED_STRATA.values()), highlighted),
        inputs=inputs,
        trends=trends,
        research=research if labs_available else (),
        research_note=research_note,
        icis=icis if labs_available else None,
        companions=tuple(value_row(companions_of[c], mapping) for c in COMPANIONS if c in companions_of),
        problems=problems(assessment, record, scope, context, client_id),
        labs_available=labs_available,
    )
