"""The details page as plain data: what the templates read, one class a part of the page.

Built by ``smart_app.details.build_page``; nothing here computes anything.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from ichis.reference import CITATION, DERIVATION_POPULATION, NATURE_OF_SCORE, PublishedStratum
from smart_app.charts import StrataChart, TrendChart
from smart_app.context import CardContext


@dataclass(frozen=True, slots=True)
class Banner:
    """Who the patient is, for a page shown without the EHR's own banner (and on paper)."""

    patient_id: str
    name: str | None
    gender: str | None
    birth_date: str | None
    identifier: str | None
    #: Why the details are missing, when they are.
    note: str | None = None


@dataclass(frozen=True, slots=True)
class ScoreView:
    """The score at the top of the page: headline, sentence and the stratum it falls in."""

    headline: str
    status: str
    sentence: str
    #: ``warning`` for a complete IChIS 2, ``info`` otherwise: the card's indicator policy.
    tone: str
    stratum: PublishedStratum | None
    stratum_line: str | None


@dataclass(frozen=True, slots=True)
class StratumRow:
    """One published stratum in the strata table; ``is_patient`` marks the patient's."""

    score: int
    pfs: str
    pfs_hr: str
    os: str
    os_hr: str
    label: str
    is_patient: bool


@dataclass(frozen=True, slots=True)
class InputRow:
    """One part of the score: the result as sent, normalised, when, and the points it gave."""

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
    """One reading in a trend's table, the baseline one marked."""

    collected: str
    shown: str
    as_sent: str
    source: str
    baseline: bool
    in_window: bool


@dataclass(frozen=True, slots=True)
class TrendView:
    """One part's readings over the trend period: the chart and its table."""

    part: str
    title: str
    chart: TrendChart | None
    rows: tuple[TrendRow, ...]
    #: Why there is no chart, or what it leaves out.
    note: str | None


@dataclass(frozen=True, slots=True)
class ValueRow:
    """A companion or research result of the baseline sample."""

    concept: str
    label: str
    value: str
    collected: str
    source: str


@dataclass(frozen=True, slots=True)
class IcisView:
    """ICIS, the Sysmex score IChIS comes from, shown only where the site configured its cut-offs."""

    headline: str
    rows: tuple[tuple[str, str], ...]
    missing: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Problem:
    """Something that limits what the page can say, and what would fix it."""

    sentence: str
    fix: str | None
    kind: str  # "access", "data" or "note"


@dataclass(frozen=True)
class DetailsPage:
    """Everything the details page shows, in the order it shows it."""

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
