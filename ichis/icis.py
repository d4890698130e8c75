"""ICIS, the five-parameter Sysmex score IChIS comes from, driven only by site-configured cut-offs.

van der Geest et al., Crit Care 2016;20:180 scores NEUT-SFL, Delta-He, NEUT#, AS-LYMP# and IG#
with 1, 2 or 4 points at three cut-offs each (total 0-20). The cut-off table IChIS's authors used is
not available to us, so this module ships **no defaults**: a site that has validated cut-offs for
its analysers configures them, and without them ICIS is simply not computed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal

from ichis.measurement import Comparator


class IcisConfigurationError(ValueError):
    """The site's ICIS cut-offs are unusable (empty, unordered, or not the five parameters)."""


#: The five parameters of ICIS, by the names this project uses in configuration.
ICIS_PARAMETERS = ("neut_sfl", "delta_he", "neutrophils", "as_lymp", "immature_granulocytes")


@dataclass(frozen=True, slots=True)
class Band:
    """``points`` are earned when the value is strictly above ``above``."""

    above: Decimal
    points: int


@dataclass(frozen=True, slots=True)
class IcisRule:
    """Cut-offs for one parameter, in the parameter's own unit (ch, pg, cells/uL)."""

    parameter: str
    unit: str
    bands: tuple[Band, ...]

    def __post_init__(self) -> None:
        if not self.bands:
            raise IcisConfigurationError(f"ICIS {self.parameter}: no cut-offs configured")
        thresholds = [b.above for b in self.bands]
        points = [b.points for b in self.bands]
        if thresholds != sorted(thresholds) or len(set(thresholds)) != len(thresholds):
            raise IcisConfigurationError(f"ICIS {self.parameter}: cut-offs must increase strictly")
        if points != sorted(points) or any(p <= 0 for p in points):
            raise IcisConfigurationError(f"ICIS {self.parameter}: points must be positive and rising")

    @property
    def maximum(self) -> int:
        return self.bands[-1].points

    def points(self, value: Decimal, comparator: Comparator | None) -> int | None:
        """Points for a value; None when a comparator leaves the band undecided."""
        earned = [b.points for b in self.bands if value > b.above]
        exact = earned[-1] if earned else 0
        if comparator is None:
            return exact
        # A bounded report decides the band only if every value it allows falls in the same band.
        if comparator in (Comparator.LT, Comparator.LE):
            below = [b for b in self.bands if b.above < value]
            # true <= value: the band is settled if no cut-off lies strictly between 0 and value.
            return 0 if not below else None
        # > or >=: settled only at the top band.
        top = self.bands[-1].above
        return self.maximum if value >= top else None


@dataclass(frozen=True, slots=True)
class IcisConfig:
    rules: Mapping[str, IcisRule]

    def __post_init__(self) -> None:
        missing = [p for p in ICIS_PARAMETERS if p not in self.rules]
        unknown = [p for p in self.rules if p not in ICIS_PARAMETERS]
        if missing or unknown:
            raise IcisConfigurationError(
                "ICIS needs cut-offs for exactly these parameters: "
                + ", ".join(ICIS_PARAMETERS)
                + (f"; missing {', '.join(missing)}" if missing else "")
                + (f"; unknown {', '.join(unknown)}" if unknown else "")
            )


@dataclass(frozen=True, slots=True)
class IcisValue:
    """A parameter's value in its own unit (Delta-He may be negative), with any comparator."""

    value: Decimal
    comparator: Comparator | None = None


@dataclass(frozen=True, slots=True)
class IcisResult:
    score: int | None
    lower: int
    upper: int
    points: Mapping[str, int | None]
    missing: Sequence[str]


def score_icis(config: IcisConfig, values: Mapping[str, IcisValue | None]) -> IcisResult:
    """Sum the configured points; unknown parameters widen the bounds instead of counting as 0."""
    points: dict[str, int | None] = {}
    lower = upper = 0
    missing: list[str] = []
    for name in ICIS_PARAMETERS:
        rule = config.rules[name]
        given = values.get(name)
        earned = rule.points(given.value, given.comparator) if given else None
        points[name] = earned
        if earned is None:
            missing.append(name)
            upper += rule.maximum
        else:
            lower += earned
            upper += earned
    score = lower if not missing else None
    return IcisResult(score, lower, upper, points, missing)
