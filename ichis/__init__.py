"""The IChIS domain: scores, published strata and typed results. No I/O, no FHIR, no clock."""

from ichis.measurement import Comparator, Measurement, Source, format_count, plain
from ichis.reference import CITATION, DERIVATION_POPULATION, NATURE_OF_SCORE, PUBLISHED_STRATA
from ichis.score import IChISResult, Part, PartResult, Status, score_ichis

__all__ = [
    "CITATION",
    "DERIVATION_POPULATION",
    "NATURE_OF_SCORE",
    "PUBLISHED_STRATA",
    "Comparator",
    "IChISResult",
    "Measurement",
    "Part",
    "PartResult",
    "Source",
    "Status",
    "format_count",
    "plain",
    "score_ichis",
]
