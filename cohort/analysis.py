"""``ichis cohort analyze``: the paper's survival analysis (Tables 3 and 4) on a cohort table.

Shaped like an estimator: :class:`SurvivalAnalysis` ``fit()`` returns itself and keeps its results in
attributes ending in ``_``; data preparation (:func:`prepare`) is pure.

Methods, as in the paper (SPSS 22) unless said otherwise:
- Kaplan-Meier per stratum (lifelines). The 95% CI of a median is read off the pointwise 95% band of
  the survival curve computed on the log(-log S) scale (lifelines; R survival ``conf.type="log-log"``).
  SPSS prints a symmetric interval (median +/- 1.96 SE), so published and recomputed CIs differ
  somewhat; an upper bound the band never reaches is "NR" (not reached).
- Log-rank test over all groups of a variable, and pairwise between IChIS strata.
- Cox proportional hazards (lifelines; Efron's method for ties, as R ``coxph``), univariate and
  multivariate, hazard ratios with Wald 95% CI; the p-value of a variable with several levels is the
  joint Wald test of its levels. Harrell's concordance index. Proportional hazards checked with the
  Grambsch-Therneau test on rank-transformed time (``proportional_hazard_test``).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from lifelines import CoxPHFitter, KaplanMeierFitter  # type: ignore[import-untyped]
from lifelines.exceptions import ConvergenceError  # type: ignore[import-untyped]
from lifelines.statistics import (  # type: ignore[import-untyped]
    logrank_test,
    multivariate_logrank_test,
    proportional_hazard_test,
)
from lifelines.utils import median_survival_times  # type: ignore[import-untyped]
from scipy.stats import chi2  # type: ignore[import-untyped]

from cohort.errors import CohortInputError

ENDPOINTS = {
    "pfs": ("pfs_days", "pfs_event", "Progression-free survival"),
    "os": ("os_days", "os_event", "Overall survival"),
}


@dataclass(frozen=True, slots=True)
class Variable:
    """A row group of Tables 3 and 4: a label, its levels (the first is the reference) and how to get them."""

    name: str
    label: str
    levels: tuple[str, ...]


VARIABLES: tuple[Variable, ...] = (
    Variable("age", "Age, yr", ("<70", ">=70")),
    Variable("sex", "Sex", ("Male", "Female")),
    Variable("smoking", "Smoking status", ("Never", "Former or current")),
    Variable("ecog", "ECOG", ("0-1", ">=2")),
    Variable("histology", "Histology", ("SqCC", "Non-SqCC")),
    Variable("pdl1", "PD-L1 expression", ("<1%", "1-49%", ">=50%")),
    Variable("agent", "Agent", ("nivolumab", "pembrolizumab", "atezolizumab", "other")),
    Variable("ichis", "IChIS", ("0", "1", "2")),
)
VARIABLE_BY_NAME = {v.name: v for v in VARIABLES}
#: The covariates the paper entered in its multivariate models (Tables 3 and 4).
PAPER_MULTIVARIATE = {"pfs": ("pdl1", "agent", "ichis"), "os": ("ecog", "agent", "ichis")}
#: Above this many subjects lifelines' batch algorithm is used (faster with many ties; same estimates).
BATCH_MODE_FROM = 2000


def prepare(table: pd.DataFrame, endpoint: str) -> pd.DataFrame:
    """The analysis set for one endpoint: patients with a complete IChIS and a known time, with the
    variables of Tables 3 and 4 as labelled categories (missing stays missing)."""
    if endpoint not in ENDPOINTS:
        raise CohortInputError(f"unknown endpoint '{endpoint}': use pfs or os")
    duration, event, _ = ENDPOINTS[endpoint]
    required = {
        "ichis",
        "ichis_status",
        duration,
        event,
        "age_years",
        "sex",
        "ecog",
        "histology",
        "pdl1_category",
        "ici_agent",
        "smoking",
    }
    missing = sorted(required - set(table.columns))
    if missing:
        raise CohortInputError(
            f"the cohort table lacks columns {', '.join(missing)}; re-run `ichis cohort extract`"
        )
    rows = table[(table["ichis_status"] == "complete") & table[duration].notna() & table[event].notna()]
    out = pd.DataFrame(index=rows.index)
    out["duration"] = pd.to_numeric(rows[duration]).astype(float)
    out["event"] = pd.to_numeric(rows[event]).astype(int)
    age = pd.to_numeric(rows["age_years"])
    out["age"] = age.map(lambda a: None if pd.isna(a) else ("<70" if a < 70 else ">=70"))
    out["sex"] = rows["sex"].map({"male": "Male", "female": "Female"})
    ecog = pd.to_numeric(rows["ecog"])
    out["ecog"] = ecog.map(lambda e: None if pd.isna(e) else ("0-1" if e <= 1 else ">=2"))
    out["histology"] = rows["histology"]
    out["pdl1"] = rows["pdl1_category"]
    known = {"nivolumab", "pembrolizumab", "atezolizumab"}
    out["agent"] = rows["ici_agent"].map(
        lambda a: a if a in known else ("other" if isinstance(a, str) else None)
    )
    out["smoking"] = rows["smoking"]
    out["ichis"] = pd.to_numeric(rows["ichis"]).astype(int).astype(str)
    for variable in VARIABLES:
        # One missing marker (None) whatever the column's dtype was.
        column = out[variable.name].astype(object)
        out[variable.name] = column.map(lambda v: None if pd.isna(v) else v)
    return out.reset_index(drop=True)


@dataclass(frozen=True, slots=True)
class Median:
    """A Kaplan-Meier median with its 95% CI; None means not reached (NR)."""

    value: float | None
    ci_low: float | None
    ci_high: float | None

    def text(self) -> str:
        def show(x: float | None) -> str:
            return "NR" if x is None else f"{x:g}"

        return f"{show(self.value)} ({show(self.ci_low)}-{show(self.ci_high)})"


@dataclass(frozen=True, slots=True)
class Group:
    """One level of a variable: its size, events and median survival."""

    level: str
    n: int
    events: int
    median: Median


@dataclass(frozen=True, slots=True)
class TestResult:
    statistic: float
    df: int
    p: float


@dataclass(frozen=True, slots=True)
class HazardRatio:
    term: str  # "variable=level"
    hr: float
    ci_low: float
    ci_high: float
    p: float


@dataclass(frozen=True, slots=True)
class CoxModel:
    variables: tuple[str, ...]
    n: int
    events: int
    terms: tuple[HazardRatio, ...]
    variable_p: dict[str, float]  # joint Wald test per variable
    concordance: float
    ph_test: tuple[tuple[str, float, float], ...]  # term, statistic, p
    warnings: tuple[str, ...]


def _median(fitter: Any) -> Median:

    value = fitter.median_survival_time_
    interval = median_survival_times(fitter.confidence_interval_)

    def finite(x: Any) -> float | None:
        x = float(x)
        return None if math.isinf(x) or math.isnan(x) else x

    return Median(finite(value), finite(interval.iloc[0, 0]), finite(interval.iloc[0, 1]))


def kaplan_meier(duration: pd.Series, event: pd.Series) -> Median:
    """The Kaplan-Meier median with its log-log 95% CI."""

    return _median(KaplanMeierFitter().fit(duration, event))


def logrank(frame: pd.DataFrame, column: str) -> TestResult | None:
    """The log-rank test over the levels of ``column`` (None with fewer than two levels)."""

    rows = frame[frame[column].notna()]
    if rows[column].nunique() < 2:
        return None
    result = multivariate_logrank_test(rows["duration"], rows[column], rows["event"])
    return TestResult(float(result.test_statistic), int(result.degrees_of_freedom), float(result.p_value))


def _design(frame: pd.DataFrame, variables: Sequence[str]) -> pd.DataFrame:
    """Complete cases with one 0/1 column per non-reference level (``variable=level``)."""
    rows = frame.dropna(subset=list(variables))
    design = pd.DataFrame({"duration": rows["duration"], "event": rows["event"]})
    for name in variables:
        variable = VARIABLE_BY_NAME.get(name)
        levels = variable.levels if variable else tuple(sorted(rows[name].unique()))
        present = [level for level in levels if (rows[name] == level).any()]
        for level in present[1:]:
            design[f"{name}={level}"] = (rows[name] == level).astype(float)
    return design


def cox(frame: pd.DataFrame, variables: Sequence[str], *, ph_test: bool = True) -> CoxModel | None:
    """A Cox model of the given categorical variables (None when it cannot be estimated)."""
    return try_cox(frame, variables, ph_test=ph_test)[0]


def try_cox(
    frame: pd.DataFrame, variables: Sequence[str], *, ph_test: bool = True
) -> tuple[CoxModel | None, str | None]:
    """A Cox model of the given categorical variables, or None and why it cannot be estimated.

    Small or unbalanced cohorts are normal at a single site (a stratum without events, a covariate
    recorded for a few patients, levels that coincide): the rest of the report still stands.
    """
    design = _design(frame, variables)
    terms = [c for c in design.columns if c not in ("duration", "event")]
    if len(design) == 0:
        return None, f"no patient has all of {', '.join(variables)} recorded"
    if not terms:
        return None, "every patient with the covariates recorded falls in the same group of each"
    if design["event"].sum() == 0:
        return None, "no events among the patients with the covariates recorded"
    try:
        return fit_cox(design, "duration", "event", terms, variables=variables, ph_test=ph_test), None
    except (ConvergenceError, np.linalg.LinAlgError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        return None, f"the model did not converge ({first[:200]})"


def fit_cox(
    design: pd.DataFrame,
    duration: str,
    event: str,
    terms: Sequence[str],
    *,
    variables: Sequence[str] = (),
    ph_test: bool = True,
) -> CoxModel:
    """Fit lifelines' Cox model (Efron ties) on numeric columns; warnings are kept, not raised."""

    data = design[[duration, event, *terms]]
    caught: list[str] = []
    with warnings.catch_warnings(record=True) as records:
        warnings.simplefilter("always")
        fitter = CoxPHFitter().fit(
            data, duration_col=duration, event_col=event, batch_mode=len(data) >= BATCH_MODE_FROM
        )
        ph: tuple[tuple[str, float, float], ...] = ()
        if ph_test:
            test = proportional_hazard_test(fitter, data, time_transform="rank")
            ph = tuple(
                (str(term), float(row["test_statistic"]), float(row["p"]))
                for term, row in test.summary.iterrows()
            )
        caught = list(dict.fromkeys(str(r.message).splitlines()[0] for r in records))
    summary = fitter.summary
    hazard = tuple(
        HazardRatio(
            term,
            float(summary.loc[term, "exp(coef)"]),
            float(summary.loc[term, "exp(coef) lower 95%"]),
            float(summary.loc[term, "exp(coef) upper 95%"]),
            float(summary.loc[term, "p"]),
        )
        for term in terms
    )
    variable_p = {}
    for name in variables:
        columns = [t for t in terms if t.split("=", 1)[0] == name]
        if columns:
            variable_p[name] = _wald_p(fitter, columns)
    return CoxModel(
        variables=tuple(variables),
        n=len(data),
        events=int(data[event].sum()),
        terms=hazard,
        variable_p=variable_p,
        concordance=float(fitter.concordance_index_),
        ph_test=ph,
        warnings=tuple(caught),
    )


def _wald_p(fitter: Any, columns: Sequence[str]) -> float:
    """Joint Wald test that all coefficients of ``columns`` are zero (one p per variable, as SPSS)."""

    beta = fitter.params_.loc[list(columns)].to_numpy()
    covariance = fitter.variance_matrix_.loc[list(columns), list(columns)].to_numpy()
    statistic = float(beta @ np.linalg.solve(covariance, beta))
    return float(chi2.sf(statistic, len(columns)))


class SurvivalAnalysis:
    """Kaplan-Meier, log-rank and Cox models for one endpoint, as in Tables 3 and 4 of the paper."""

    def __init__(self, endpoint: str, multivariate: Sequence[str] | None = None) -> None:
        if endpoint not in ENDPOINTS:
            raise CohortInputError(f"unknown endpoint '{endpoint}': use pfs or os")
        unknown = [v for v in multivariate or () if v not in VARIABLE_BY_NAME]
        if unknown:
            names = ", ".join(VARIABLE_BY_NAME)
            raise CohortInputError(f"unknown covariate {', '.join(unknown)}: choose from {names}")
        self.endpoint = endpoint
        self.multivariate = tuple(multivariate or PAPER_MULTIVARIATE[endpoint])
        if "ichis" not in self.multivariate:
            self.multivariate = (*self.multivariate, "ichis")

    def fit(self, table: pd.DataFrame) -> SurvivalAnalysis:
        """Prepare the analysis set from a cohort table and fit every model."""
        data = prepare(table, self.endpoint)
        if len(data) == 0:
            raise CohortInputError("no patient has both a complete IChIS and a follow-up time")
        self.data_ = data
        self.n_excluded_ = int(len(table) - len(data))
        self.overall_ = Group(
            "all", len(data), int(data["event"].sum()), kaplan_meier(data["duration"], data["event"])
        )
        self.groups_: dict[str, list[Group]] = {}
        self.logrank_: dict[str, TestResult | None] = {}
        self.univariate_: dict[str, CoxModel | None] = {}
        for variable in VARIABLES:
            rows = data[data[variable.name].notna()]
            self.groups_[variable.name] = [
                Group(level, len(sub), int(sub["event"].sum()), kaplan_meier(sub["duration"], sub["event"]))
                for level in variable.levels
                if len(sub := rows[rows[variable.name] == level])
            ]
            self.logrank_[variable.name] = logrank(data, variable.name)
            self.univariate_[variable.name] = cox(data, [variable.name], ph_test=False)
        self.pairwise_ = self._pairwise(data)
        self.multivariate_, self.multivariate_problem_ = try_cox(data, self.multivariate)
        return self

    @staticmethod
    def _pairwise(data: pd.DataFrame) -> list[tuple[str, str, TestResult]]:
        found = []
        levels = [lv for lv in VARIABLE_BY_NAME["ichis"].levels if (data["ichis"] == lv).any()]
        for i, a in enumerate(levels):
            for b in levels[i + 1 :]:
                x, y = data[data["ichis"] == a], data[data["ichis"] == b]
                result = logrank_test(x["duration"], y["duration"], x["event"], y["event"])
                found.append((a, b, TestResult(float(result.test_statistic), 1, float(result.p_value))))
        return found
