"""The baseline sample: which readings feed the score at a reference time (the order time).

Rules (the paper drew baseline blood on the day of the first dose and says no more):

1. Only results at or before the reference time count, and only within the look-back window
   (default 14 days). Instants are compared as instants, whatever their zone offsets; a date
   without a time counts only when its whole day lies before the reference time.
2. Both parts should come from the same blood sample: the most recent sample that has both a
   neutrophil count and an IG# is used. If no sample has both, each part comes from its own most
   recent sample and the result says so.
3. IG# absent but IG% and WBC present in one sample: IG# = IG% x WBC / 100, labelled as derived.
   A measured IG# in the same sample always wins over a derived one.
4. Within one sample and one part: the better-ranked code wins (automated before generic before
   manual count), then corrected/amended before final before preliminary. Results that still
   disagree after that are a conflict: that sample gives no value for the part, and we say so.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, localcontext

from fhir_mappings.config import MappingConfig
from fhir_mappings.observations import Extraction, Problem, Reading, SampleKey
from ichis.measurement import Comparator, Measurement

NEUTROPHILS = "neutrophils"
IG = "immature_granulocytes"
IG_PERCENT = "immature_granulocytes_percent"
WBC = "leukocytes"

#: What a part is called in sentences, and what would fix its absence.
_PART_NAMES = {NEUTROPHILS: "neutrophil count (NEUT#)", IG: "immature granulocyte count (IG#)"}
_FIX = "a CBC with automated differential that reports IG# (or IG% with WBC)"
_FIX_NEW = "a new CBC with automated differential that reports IG# (or IG% with WBC)"


@dataclass
class _Sample:
    key: SampleKey
    readings: dict[str, list[Reading]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PartChoice:
    """The measurement chosen for a part, or None with the sentence saying why."""

    measurement: Measurement | None
    sample: SampleKey | None
    missing_reason: str = ""


@dataclass(frozen=True, slots=True)
class Baseline:
    reference_time: datetime
    neutrophils: PartChoice
    immature_granulocytes: PartChoice
    #: Other readings of the sample the neutrophils came from (WBC, lymphocytes, research items).
    companions: dict[str, Reading]
    reasons: tuple[str, ...]
    #: Every reading in the window, oldest first, for trends.
    window: tuple[Reading, ...]


def _date(moment: datetime) -> str:
    return moment.isoformat()


def _age(reading_time: datetime, at: datetime) -> str:
    days = (at - reading_time).total_seconds() / 86400
    if days < 1:
        hours = max(int((at - reading_time).total_seconds() // 3600), 0)
        return f"{hours} h before"
    return f"{int(days)} day{'s' if int(days) != 1 else ''} before"


def _group(readings: Sequence[Reading]) -> list[_Sample]:
    """Readings by the sample they come from, whatever order they are sent in.

    Readings that name their specimen are grouped first, then those that name only a panel, then
    those known only by their time. A reading joins a sample only when exactly one fits it: a
    result without a specimen, drawn at the instant of two different specimens, belongs to
    neither, so that values of different tubes are never taken as one sample.
    """

    def order(reading: Reading) -> tuple[int, datetime, str]:
        known = 0 if reading.sample.specimen else 1 if reading.sample.panel else 2
        return known, reading.when.earliest, reading.source.reference

    samples: list[_Sample] = []
    for reading in sorted(readings, key=order):
        fits = [sample for sample in samples if sample.key.same_as(reading.sample)]
        if len(fits) > 1 and reading.sample.panel:
            fits = [s for s in fits if s.key.panel == reading.sample.panel] or fits
        if len(fits) == 1:
            sample = fits[0]
        else:
            sample = _Sample(reading.sample)
            samples.append(sample)
        sample.readings.setdefault(reading.concept, []).append(reading)
    return samples


def _pick(readings: list[Reading]) -> tuple[Reading | None, str]:
    """The reading that speaks for one concept in one sample, or a conflict sentence."""
    ordered = sorted(readings, key=lambda r: (r.rank, r.status_preference, r.source.reference))
    best = ordered[0]
    peers = [r for r in ordered if (r.rank, r.status_preference) == (best.rank, best.status_preference)]
    values = {(r.value, r.comparator) for r in peers}
    if len(values) > 1:
        refs = ", ".join(
            f"{r.source.reference} ({r.source.value_as_sent} {r.source.unit_as_sent})" for r in peers
        )
        return None, f"results of the same sample disagree: {refs}"
    return best, ""


def _measurement(reading: Reading) -> Measurement:
    return Measurement(reading.value, reading.source, reading.comparator)


def _derive_ig(percent: Reading, wbc: Reading) -> tuple[Measurement | None, str]:
    """IG# = IG% x WBC / 100 in exact decimals, with the comparator IG% carries."""
    if wbc.comparator is not None:
        return (
            None,
            f"IG# cannot be derived: the WBC {wbc.source.reference} is only a bound "
            f"({wbc.comparator.value}{wbc.source.value_as_sent})",
        )
    with localcontext() as ctx:
        ctx.prec = 60
        value = percent.value * wbc.value / Decimal(100)
    return (
        Measurement(value, percent.source, percent.comparator, derived_from=(percent.source, wbc.source)),
        "",
    )


_NOT_BELOW = frozenset({None, Comparator.GT, Comparator.GE})
_NOT_ABOVE = frozenset({None, Comparator.LT, Comparator.LE})


def _above_wbc(sample: _Sample, reading: Reading) -> str:
    """Why a part of the leukocytes cannot be right: it exceeds the WBC of its own sample.

    Checked only where the comparators decide it (``>10`` against a WBC of 5 does; ``<10`` does
    not). Which of the two results is wrong cannot be known, so the part is not scored from it.
    """
    if WBC not in sample.readings:
        return ""
    wbc, _ = _pick(sample.readings[WBC])
    if wbc is None or reading.comparator not in _NOT_BELOW or wbc.comparator not in _NOT_ABOVE:
        return ""
    if reading.value <= wbc.value:
        return ""
    return (
        f"{reading.source.reference} ({reading.source.value_as_sent} {reading.source.unit_as_sent}) is "
        f"above the WBC of the same sample, {wbc.source.reference} ({wbc.source.value_as_sent} "
        f"{wbc.source.unit_as_sent}), which is impossible: one of them is wrong"
    )


def _measured(sample: _Sample, concept: str) -> tuple[Measurement | None, str]:
    reading, conflict = _pick(sample.readings[concept])
    if reading is None:
        return None, conflict
    if impossible := _above_wbc(sample, reading):
        return None, impossible
    return _measurement(reading), ""


def _part_candidates(sample: _Sample, part: str) -> tuple[Measurement | None, str]:
    """A sample's measurement for a part (IG# measured, else derived), or why it has none."""
    if part == NEUTROPHILS:
        if NEUTROPHILS not in sample.readings:
            return None, ""
        return _measured(sample, NEUTROPHILS)
    if IG in sample.readings:
        return _measured(sample, IG)
    if IG_PERCENT in sample.readings:
        percent, conflict = _pick(sample.readings[IG_PERCENT])
        if percent is None:
            return None, conflict
        if WBC not in sample.readings:
            return None, f"IG% {percent.source.reference} has no WBC from the same sample to derive IG# from"
        wbc, conflict = _pick(sample.readings[WBC])
        if wbc is None:
            return None, conflict
        return _derive_ig(percent, wbc)
    return None, ""


def choose_baseline(extraction: Extraction, at: datetime, config: MappingConfig) -> Baseline:
    """Pick the baseline measurements for IChIS at reference time ``at`` (timezone-aware)."""
    if at.tzinfo is None:
        raise ValueError("the reference time must carry a time zone")
    start = at - config.lookback
    window: list[Reading] = []
    later: list[Reading] = []
    stale: list[Reading] = []
    straddling: list[Reading] = []
    for reading in extraction.readings:
        if reading.when.earliest > at:
            later.append(reading)
        elif reading.when.latest > at:
            straddling.append(reading)
        elif reading.when.earliest < start:
            stale.append(reading)
        else:
            window.append(reading)
    samples = sorted(_group(window), key=lambda s: s.key.instant, reverse=True)
    reasons: list[str] = []
    found: dict[str, list[tuple[_Sample, Measurement]]] = {NEUTROPHILS: [], IG: []}
    conflicts: dict[str, list[tuple[SampleKey, str]]] = {NEUTROPHILS: [], IG: []}
    for sample in samples:
        for part in (NEUTROPHILS, IG):
            measurement, why = _part_candidates(sample, part)
            if measurement is not None:
                found[part].append((sample, measurement))
            elif why:
                conflicts[part].append((sample.key, why))
    choice: dict[str, tuple[_Sample, Measurement] | None] = {NEUTROPHILS: None, IG: None}
    both = [(sample, n, i) for sample, n in found[NEUTROPHILS] for s2, i in found[IG] if s2 is sample]
    if both:
        sample, n, i = both[0]  # samples are newest first
        choice[NEUTROPHILS], choice[IG] = (sample, n), (sample, i)
        for part in (NEUTROPHILS, IG):
            newer = [s for s, _ in found[part] if s.key.instant > sample.key.instant]
            if newer:
                reasons.append(
                    f"A newer {_PART_NAMES[part]} from {_date(newer[0].key.instant)} was not used: "
                    f"its sample lacks the other part, and both parts are taken from the sample of "
                    f"{_date(sample.key.instant)}."
                )
    else:
        for part in (NEUTROPHILS, IG):
            choice[part] = found[part][0] if found[part] else None
        n_choice, i_choice = choice[NEUTROPHILS], choice[IG]
        if n_choice and i_choice:
            reasons.append(
                f"No sample has both parts: the neutrophil count is from {_date(n_choice[0].key.instant)} "
                f"and the IG# from {_date(i_choice[0].key.instant)}."
            )
    parts: dict[str, PartChoice] = {}
    for part in (NEUTROPHILS, IG):
        picked = choice[part]
        if picked:
            sample, measurement = picked
            parts[part] = PartChoice(measurement, sample.key)
            if measurement.derived:
                pct, wbc = measurement.derived_from
                reasons.append(
                    f"IG# {measurement.shown()} was derived from IG% {pct.value_as_sent} {pct.unit_as_sent} "
                    f"({pct.reference}) x WBC {wbc.value_as_sent} {wbc.unit_as_sent} ({wbc.reference}) "
                    f"of the same sample; no IG# was reported."
                )
            continue
        parts[part] = PartChoice(
            None,
            None,
            _missing(
                part,
                stale=stale,
                later=later,
                straddling=straddling,
                problems=extraction.problems,
                conflicts=[why for _, why in conflicts[part]],
                at=at,
                start=start,
                config=config,
            ),
        )
    for part in (NEUTROPHILS, IG):
        reasons.extend(f"Sample {key.label()}: {why}." for key, why in conflicts[part])
    # Problems with results that would otherwise have been in the window, or lack a time.
    for problem in extraction.problems:
        if problem.when is None or (problem.when.latest <= at and problem.when.earliest >= start):
            reasons.append(problem.message)
    if straddling:
        reasons.append(
            f"{len(straddling)} result(s) dated without a time on the reference day were not used: "
            "they cannot be placed before the reference time."
        )
    if later:
        reasons.append(f"{len(later)} result(s) dated after the reference time were not used.")
    reasons.extend(extraction.notes)
    companions: dict[str, Reading] = {}
    anchor = parts[NEUTROPHILS].sample or parts[IG].sample
    if anchor is not None:
        for reading in window:
            if reading.sample.same_as(anchor) and reading.concept not in (NEUTROPHILS, IG):
                companions.setdefault(reading.concept, reading)
    return Baseline(
        reference_time=at,
        neutrophils=parts[NEUTROPHILS],
        immature_granulocytes=parts[IG],
        companions=companions,
        reasons=tuple(dict.fromkeys(reasons)),
        window=tuple(sorted(window, key=lambda r: r.when.earliest)),
    )


def _missing(
    part: str,
    *,
    stale: list[Reading],
    later: list[Reading],
    straddling: list[Reading],
    problems: Sequence[Problem],
    conflicts: Sequence[str],
    at: datetime,
    start: datetime,
    config: MappingConfig,
) -> str:
    """Why a part has no value, with what would fix it."""
    concepts = {part} if part == NEUTROPHILS else {IG, IG_PERCENT}
    name = _PART_NAMES[part]
    days = config.lookback.days
    if conflicts:
        return f"no usable {name}: {conflicts[0]}"
    old = [r for r in stale if r.concept in concepts]
    if old:
        newest = max(old, key=lambda r: r.when.earliest)
        return (
            f"the most recent {name}, {newest.source.reference} from {_date(newest.when.earliest)} "
            f"({_age(newest.when.earliest, at)} the reference time), is older than the {days}-day "
            f"look-back window; {_FIX_NEW} would fix this"
        )
    unusable = [
        p
        for p in problems
        if p.concept in concepts and (p.when is None or (p.when.latest <= at and p.when.earliest >= start))
    ]
    if unusable:
        return (
            f"no usable {name} in the last {days} days "
            f"({len(unusable)} result(s) could not be used, see reasons)"
        )
    if any(r.concept in concepts for r in later + straddling):
        return f"no {name} before the reference time within {days} days (only results after it)"
    return f"no {name} in the last {days} days; {_FIX} would fix this"
