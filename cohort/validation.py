"""What an external validation study reports beyond the paper's tables (TRIPOD items 10d, 13a, 16).

Discrimination of IChIS as a risk score (a higher score, a worse prognosis):

- Harrell's C (lifelines ``concordance_index``): of the pairs of patients whose order of events is
  known, the share in which the higher score had the earlier event; ties in score count one half.
  Censoring makes it depend on the follow-up of the cohort.
- Uno's C (scikit-survival ``concordance_index_ipcw``): the same pairs weighted by the inverse of the
  probability of remaining uncensored (Kaplan-Meier of the censoring times), which estimates a C that
  does not depend on the censoring, up to the truncation time tau (two years, or earlier where the
  censoring curve reaches zero).
- Time-dependent AUC at 6 and 12 months (scikit-survival ``cumulative_dynamic_auc``, cumulative
  cases / dynamic controls with the same weights): how well the score separates patients with an
  event by then from those still event-free.

Each with a 95% percentile bootstrap interval (patients resampled with replacement, a fixed seed so
that a report can be reproduced; a resample in which a statistic cannot be computed is skipped and
the number used is stated).

Agreement with the paper: for each stratum, the local Kaplan-Meier median beside the published
one, and a test of H0 "the median here is the published median", i.e. S(m) = 0.5 at the published
median m (Brookmeyer and Crowley), on the log(-log) scale with Greenwood's variance, so that p < 0.05
exactly when 0.5 lies outside the pointwise 95% band that gives the median's CI.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from lifelines import KaplanMeierFitter
from lifelines.utils import concordance_index
from scipy.stats import norm
from sksurv.metrics import (
    concordance_index_ipcw,
    cumulative_dynamic_auc,
)
from sksurv.util import Surv

from cohort.analysis import Median, kaplan_meier
from ichis.reference import PUBLISHED_STRATA, Estimate

#: Horizons of the time-dependent AUC, in days (6 and 12 months of 365.25 / 12 days, rounded).
HORIZONS = {"6 months": 183, "12 months": 365}
#: Uno's C is truncated at two years (or earlier, where the censoring curve reaches zero).
UNO_TAU_DAYS = 730
RESAMPLES = 1000
SEED = 2024


@dataclass(frozen=True, slots=True)
class Interval:
    """A statistic with its 95% bootstrap interval; ``problem`` says why it cannot be computed."""

    value: float | None
    low: float | None = None
    high: float | None = None
    #: Resamples in which the statistic could be computed (the interval rests on these).
    resamples: int = 0
    problem: str | None = None

    def text(self) -> str:
        if self.value is None:
            return f"not estimable ({self.problem})" if self.problem else "not estimable"
        if self.low is None or self.high is None:
            return f"{self.value:.3f}"
        return f"{self.value:.3f} ({self.low:.3f}-{self.high:.3f})"


@dataclass(frozen=True, slots=True)
class Discrimination:
    """How well IChIS orders one endpoint's patients, with bootstrap intervals."""

    endpoint: str
    n: int
    events: int
    harrell: Interval
    uno: Interval
    uno_tau: float | None
    #: Time-dependent AUC by horizon label ("6 months": ...).
    auc: dict[str, Interval] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class MedianAgreement:
    """One stratum's local median beside the published one, and the test that they agree."""

    stratum: str
    n: int
    events: int
    local: Median
    published: Estimate
    #: Kaplan-Meier survival here at the published median (0.5 if the medians agree).
    survival_at_published: float | None
    z: float | None
    p: float | None
    problem: str | None = None


def harrell_c(duration: np.ndarray, event: np.ndarray, score: np.ndarray) -> float:
    """Harrell's C of a risk score (higher = earlier event); lifelines takes predicted times, so the
    score is negated."""
    return float(concordance_index(duration, -score, event))


def _surv(duration: np.ndarray, event: np.ndarray) -> Any:
    return Surv.from_arrays(event=event.astype(bool), time=duration.astype(float))


def uno_tau(duration: np.ndarray, event: np.ndarray) -> float | None:
    """The truncation time of Uno's C: two years, or the longest follow-up if shorter (only times
    before it count, where the censoring curve is above zero); None without events."""
    return min(float(UNO_TAU_DAYS), float(duration.max())) if event.any() else None


def uno_c(duration: np.ndarray, event: np.ndarray, score: np.ndarray, tau: float | None) -> float:
    """Uno's C of a risk score up to ``tau`` (scikit-survival; the cohort is its own reference for
    the censoring weights)."""
    y = _surv(duration, event)
    return float(concordance_index_ipcw(y, y, score, tau=tau)[0])


def time_dependent_auc(
    duration: np.ndarray, event: np.ndarray, score: np.ndarray, times: Sequence[float]
) -> list[float]:
    """Cumulative/dynamic AUC of a risk score at each of ``times`` (scikit-survival)."""
    y = _surv(duration, event)
    auc, _ = cumulative_dynamic_auc(y, y, score, list(times))
    return [float(a) for a in np.atleast_1d(auc)]


def _why(error: Exception) -> str:
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return text.rstrip(".")[:200]


def _statistics(
    duration: np.ndarray, event: np.ndarray, score: np.ndarray, tau: float | None
) -> dict[str, Any]:
    """Every statistic on one sample: a float, or the reason it cannot be computed."""
    found: dict[str, Any] = {}
    try:
        found["harrell"] = harrell_c(duration, event, score)
    except (ValueError, ZeroDivisionError) as error:
        found["harrell"] = _why(error)
    try:
        found["uno"] = uno_c(duration, event, score, tau) if tau is not None else "no events"
    except (ValueError, ZeroDivisionError) as error:
        found["uno"] = _why(error)
    for label, days in HORIZONS.items():
        try:
            found[label] = time_dependent_auc(duration, event, score, [days])[0]
        except (ValueError, ZeroDivisionError) as error:
            found[label] = _why(error)
    return found


def discrimination(
    data: pd.DataFrame,
    endpoint: str,
    *,
    resamples: int = RESAMPLES,
    seed: int = SEED,
    progress: Callable[[int], None] | None = None,
) -> Discrimination:
    """Harrell's C, Uno's C and the AUC at 6 and 12 months of IChIS on an analysis set (``prepare``),
    each with a percentile bootstrap 95% interval from ``resamples`` resamples."""
    duration = data["duration"].to_numpy(dtype=float)
    event = data["event"].to_numpy(dtype=int)
    score = pd.to_numeric(data["ichis"]).to_numpy(dtype=float)
    n, events = len(duration), int(event.sum())
    tau = uno_tau(duration, event.astype(bool))
    point = _statistics(duration, event, score, tau)
    samples: dict[str, list[float]] = {name: [] for name in point}
    rng = np.random.default_rng(seed)
    for _ in range(resamples if n > 1 else 0):
        pick = rng.integers(0, n, n)
        for name, value in _statistics(duration[pick], event[pick], score[pick], tau).items():
            if isinstance(value, float) and math.isfinite(value):
                samples[name].append(value)
        if progress:
            progress(1)

    def interval(name: str) -> Interval:
        value = point[name]
        if not isinstance(value, float) or not math.isfinite(value):
            return Interval(None, problem=value if isinstance(value, str) else "undefined on these data")
        drawn = samples[name]
        if len(drawn) < 2:
            return Interval(value, resamples=len(drawn))
        low, high = np.percentile(drawn, [2.5, 97.5])
        return Interval(value, float(low), float(high), len(drawn))

    return Discrimination(
        endpoint=endpoint,
        n=n,
        events=events,
        harrell=interval("harrell"),
        uno=interval("uno"),
        uno_tau=tau,
        auc={label: interval(label) for label in HORIZONS},
    )


def median_test(duration: pd.Series, event: pd.Series, median: float) -> tuple[float, float, float]:
    """The Brookmeyer-Crowley test of H0 "the median survival is ``median``": the Kaplan-Meier S at
    ``median``, and z and the two-sided p of log(-log S) against log(-log 0.5) with Greenwood's
    variance. Raises ValueError when S there is 0 or 1, or nobody is followed that long."""
    fitter = KaplanMeierFitter().fit(duration, event)
    if median > float(duration.max()):
        raise ValueError("follow-up ends before the published median")
    survival = float(fitter.survival_function_at_times(median).iloc[0])
    table = fitter.event_table
    upto = table[table.index <= median]
    deaths = upto["observed"].to_numpy(dtype=float)
    at_risk = upto["at_risk"].to_numpy(dtype=float)
    if not 0 < survival < 1:
        raise ValueError(f"the survival curve is {survival:g} at the published median")
    greenwood = float(np.sum(deaths / (at_risk * (at_risk - deaths))))
    se = math.sqrt(greenwood) / abs(math.log(survival))
    z = (math.log(-math.log(survival)) - math.log(-math.log(0.5))) / se
    return survival, z, float(2 * norm.sf(abs(z)))


def median_agreement(data: pd.DataFrame, endpoint: str) -> list[MedianAgreement]:
    """Each IChIS stratum's median here beside the paper's, with the test of agreement."""
    found = []
    for stratum in ("0", "1", "2"):
        rows = data[data["ichis"] == stratum]
        published = PUBLISHED_STRATA[int(stratum)]
        estimate = published.median_pfs_days if endpoint == "pfs" else published.median_os_days
        if rows.empty:
            continue
        local = kaplan_meier(rows["duration"], rows["event"])
        n, events = len(rows), int(rows["event"].sum())
        try:
            survival, z, p = median_test(rows["duration"], rows["event"], float(estimate.value))
        except ValueError as error:
            found.append(MedianAgreement(stratum, n, events, local, estimate, None, None, None, _why(error)))
            continue
        found.append(MedianAgreement(stratum, n, events, local, estimate, survival, z, p))
    return found


@dataclass(frozen=True, slots=True)
class FlowStep:
    """One box of the flow diagram: who remains, and who was left out on the way there and why."""

    label: str
    n: int | None
    left_out: tuple[tuple[str, int], ...] = ()


def flow(
    summary: Mapping[str, Any] | None, table: pd.DataFrame, analysed: Mapping[str, int]
) -> list[FlowStep]:
    """From the patients in the input to those analysed per endpoint (counts from the extraction's
    ``extraction-summary.json`` when it is beside the table, else from the table alone)."""
    steps: list[FlowStep] = []
    status = table["ichis_status"].value_counts().to_dict()
    if summary is not None:
        left_out = dict(summary.get("left_out", {}))
        diagnosis = "no condition among the cohort's diagnosis codes"
        before_dose = tuple(
            sorted(((k, int(v)) for k, v in left_out.items() if k != diagnosis), key=lambda kv: -kv[1])
        )
        steps.append(FlowStep("Patients in the input", int(summary.get("patients_seen", 0))))
        steps.append(
            FlowStep(
                "With a first checkpoint-inhibitor dose by the cut-off",
                int(summary.get("with_first_dose", 0)),
                before_dose,
            )
        )
        by_diagnosis = ((diagnosis, int(left_out[diagnosis])),) if diagnosis in left_out else ()
        steps.append(FlowStep("Rows of the cohort table", int(summary.get("rows", len(table))), by_diagnosis))
    else:
        steps.append(FlowStep("Rows of the cohort table (no extraction summary beside it)", len(table)))
    not_scored = tuple(
        (f"IChIS {kind}: the baseline blood count does not give the score", int(status[kind]))
        for kind in ("partial", "unavailable")
        if status.get(kind)
    )
    complete = int(status.get("complete", 0))
    steps.append(FlowStep("IChIS complete", complete, not_scored))
    for endpoint, n in analysed.items():
        steps.append(
            FlowStep(
                f"Analysed for {endpoint.upper()}",
                n,
                (
                    (
                        f"no {endpoint.upper()} time (unknown or undated event; see the row's notes)",
                        complete - n,
                    ),
                )
                if complete - n
                else (),
            )
        )
    return steps
