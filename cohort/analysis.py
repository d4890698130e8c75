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

Small cohorts give degenerate data (one patient in a stratum, no events, every time tied, a covariate
recorded for one group only). Every step that lifelines would refuse, or answer with a number without
meaning (a CI of zero width, chi-square 0 with p = 1, an HR of 0 with CI 0-inf), ends as None with a
reason that the tables print as "not estimable (reason)"; the rest of the report stands.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from lifelines import CoxPHFitter, KaplanMeierFitter
from lifelines.exceptions import ConvergenceError
from lifelines.statistics import (
    multivariate_logrank_test,
    proportional_hazard_test,
)
from scipy.stats import chi2

from cohort.errors import CohortInputError, CohortNothingToAnalyse

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
    # A table edited by hand can hold what extract never writes; a survival time cannot be negative.
    if (out["duration"] < 0).any() or not out["event"].isin((0, 1)).all():
        bad = int(((out["duration"] < 0) | ~out["event"].isin((0, 1))).sum())
        raise CohortInputError(
            f"{bad} row(s) have a negative {duration} or an {event} other than 0 or 1; fix the table"
        )
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
    """A Kaplan-Meier median with its 95% CI; None means not reached (NR).

    Where the curve falls to zero the log-log band is undefined (R prints NA): a bound the band would
    reach only there is not estimable (NE), not a time.
    """

    value: float | None
    ci_low: float | None
    ci_high: float | None
    reaches_zero: bool = False

    def text(self) -> str:
        missing = "NE" if self.reaches_zero else "NR"

        def show(x: float | None, absent: str) -> str:
            return absent if x is None else f"{x:g}"

        low, high = show(self.ci_low, missing), show(self.ci_high, missing)
        return f"{show(self.value, 'NR')} ({low}-{high})"


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
class Comparison:
    """A log-rank test between two IChIS strata, or why the data cannot give it."""

    first: str
    second: str
    test: TestResult | None
    problem: str | None


@dataclass(frozen=True, slots=True)
class HazardRatio:
    term: str  # "variable=level"
    hr: float
    ci_low: float
    ci_high: float
    p: float


@dataclass(frozen=True, slots=True)
class CoxModel:
    """A fitted Cox model; what the data cannot give is named with its reason, never left out silently."""

    variables: tuple[str, ...]
    n: int
    events: int
    terms: tuple[HazardRatio, ...]  # the estimable ones
    variable_p: dict[str, float]  # joint Wald test per variable
    concordance: float
    ph_test: tuple[tuple[str, float, float], ...]  # term, statistic, p
    warnings: tuple[str, ...]
    #: Each categorical variable's levels among the model's complete cases, the reference first.
    levels: dict[str, tuple[str, ...]] = field(default_factory=dict)
    #: Terms ("variable=level") and variables whose estimate the data cannot give, with the reason.
    term_problems: dict[str, str] = field(default_factory=dict)
    variable_problems: dict[str, str] = field(default_factory=dict)
    #: Why the proportional-hazards test cannot be computed (None when it was, or was not asked for).
    ph_problem: str | None = None


#: Harrell's C and the Cox partial likelihood both need a patient still at risk without the event at
#: some event time; lifelines' concordance index raises ZeroDivisionError without one.
NOT_COMPARABLE = "no two patients can be compared: at every event time, everyone still at risk has the event"


def _median(fitter: Any) -> Median:
    times = fitter.survival_function_.index.to_numpy(dtype=float)
    survival = fitter.survival_function_.iloc[:, 0].to_numpy(dtype=float)
    band = fitter.confidence_interval_.to_numpy(dtype=float)
    # lifelines draws the band at (0, 0) where the curve is 0, but log(-log S) is undefined there (R
    # survival gives NA): such a point must not end a CI, or one patient gets a CI of zero width.
    defined = survival > 0

    def first_at_or_below_half(curve: np.ndarray, where: np.ndarray) -> float | None:
        # 3 of 6 events is 0.5000000000000001 in floating point: exactly half must count.
        hits = np.flatnonzero(where & (curve <= 0.5 + 1e-9))
        return float(times[hits[0]]) if len(hits) else None

    return Median(
        first_at_or_below_half(survival, np.ones_like(defined)),
        first_at_or_below_half(band[:, 0], defined),
        first_at_or_below_half(band[:, 1], defined),
        reaches_zero=not bool(defined.all()),
    )


def kaplan_meier(duration: pd.Series, event: pd.Series) -> Median:
    """The Kaplan-Meier median with its log-log 95% CI."""

    return _median(KaplanMeierFitter().fit(duration, event))


def _at_risk(duration: np.ndarray, event: np.ndarray, groups: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """At each distinct event time: the number at risk in each group (one column per group), and the
    number of events."""
    times, deaths = np.unique(duration[event], return_counts=True)
    labels = np.unique(groups)
    at_risk = np.empty((len(times), len(labels)))
    for column, label in enumerate(labels):
        ordered = np.sort(duration[groups == label])
        at_risk[:, column] = len(ordered) - np.searchsorted(ordered, times, side="left")
    return at_risk, deaths.astype(float)


def _comparable(duration: np.ndarray, event: np.ndarray) -> bool:
    """Whether some event time has a patient at risk who does not have the event then."""
    at_risk, deaths = _at_risk(duration, event, np.zeros(len(duration)))
    return bool((at_risk[:, 0] > deaths).any())


def _logrank_df(duration: np.ndarray, event: np.ndarray, groups: np.ndarray) -> int:
    """The log-rank test's degrees of freedom as R ``survdiff`` counts them: the groups with expected
    events, less one; 0 when the test has no information (a variance of zero).

    A group never at risk at an event time (one patient censored before the first event) has no
    expected events and adds none; lifelines counts every group.
    """
    at_risk, deaths = _at_risk(duration, event, groups)
    total = at_risk.sum(axis=1)
    weight = np.zeros(len(total))
    several = total > 1
    # Hypergeometric variance at each event time: zero when every patient at risk has the event.
    weight[several] = (
        deaths[several] * (total - deaths)[several] / (total[several] ** 2 * (total[several] - 1))
    )
    variance = np.diag((weight * total) @ at_risk) - (at_risk * weight[:, None]).T @ at_risk
    if not variance.size or not np.any(variance):
        return 0
    expected = (at_risk * (deaths / np.where(total > 0, total, 1))[:, None]).sum(axis=0)
    return max(int((expected > 0).sum()) - 1, 0)


NO_LOGRANK_INFORMATION = (
    "no information: at every event time one group alone was at risk or all at risk had the event"
)


def logrank(frame: pd.DataFrame, column: str) -> TestResult | None:
    """The log-rank test over the levels of ``column`` (None when the data cannot give it)."""
    return try_logrank(frame, column)[0]


def try_logrank(frame: pd.DataFrame, column: str) -> tuple[TestResult | None, str | None]:
    """The log-rank test over the levels of ``column``, or None and why the data cannot give it."""

    rows = frame[frame[column].notna()]
    if rows[column].nunique() < 2:
        return None, "only one group"
    if rows["event"].sum() == 0:
        return None, "no events"
    df = _logrank_df(
        rows["duration"].to_numpy(dtype=float),
        rows["event"].to_numpy(dtype=bool),
        rows[column].astype(str).to_numpy(),
    )
    if df == 0:
        # lifelines would print chi-square 0, p = 1; R survdiff stops on the singular variance.
        return None, NO_LOGRANK_INFORMATION
    result = multivariate_logrank_test(rows["duration"], rows[column], rows["event"])
    statistic = float(result.test_statistic)
    return TestResult(statistic, df, float(chi2.sf(statistic, df))), None


def _design(frame: pd.DataFrame, variables: Sequence[str]) -> tuple[pd.DataFrame, dict[str, tuple[str, ...]]]:
    """Complete cases with one 0/1 column per non-reference level (``variable=level``), and each
    variable's levels among them: the first present is the reference."""
    rows = frame.dropna(subset=list(variables))
    design = pd.DataFrame({"duration": rows["duration"], "event": rows["event"]})
    levels: dict[str, tuple[str, ...]] = {}
    for name in variables:
        variable = VARIABLE_BY_NAME.get(name)
        candidates = variable.levels if variable else tuple(sorted(rows[name].unique()))
        levels[name] = tuple(level for level in candidates if (rows[name] == level).any())
        for level in levels[name][1:]:
            design[f"{name}={level}"] = (rows[name] == level).astype(float)
    return design, levels


def cox(frame: pd.DataFrame, variables: Sequence[str], *, ph_test: bool = True) -> CoxModel | None:
    """A Cox model of the given categorical variables (None when it cannot be estimated)."""
    return try_cox(frame, variables, ph_test=ph_test)[0]


def _first_sentence(error: BaseException) -> str:
    text = str(error).strip()
    if not text:
        return type(error).__name__
    # lifelines appends tips and a documentation URL to its first sentence.
    first = text.splitlines()[0].split(". ")[0].rstrip(".")
    return first[:200]


def try_cox(
    frame: pd.DataFrame, variables: Sequence[str], *, ph_test: bool = True
) -> tuple[CoxModel | None, str | None]:
    """A Cox model of the given categorical variables, or None and why it cannot be estimated.

    Small or unbalanced cohorts are normal at a single site (a stratum without events, a covariate
    recorded for a few patients, levels that coincide): the rest of the report still stands.
    """
    design, levels = _design(frame, variables)
    terms = [c for c in design.columns if c not in ("duration", "event")]
    if len(design) == 0:
        return None, f"no patient has all of {', '.join(variables)} recorded"
    if not terms:
        return None, "every patient with the covariates recorded falls in the same group of each"
    if design["event"].sum() == 0:
        return None, "no events among the patients with the covariates recorded"
    if not _comparable(design["duration"].to_numpy(dtype=float), design["event"].to_numpy(dtype=bool)):
        return None, NOT_COMPARABLE
    try:
        model = fit_cox(
            design, "duration", "event", terms, variables=variables, ph_test=ph_test, levels=levels
        )
    except (ConvergenceError, np.linalg.LinAlgError) as error:
        because = _first_sentence(error)
        if "matrix inversion" in because or "singular" in because:
            because += ": covariates that coincide among these patients, or a group without events"
        return None, f"the model did not converge ({because})"
    except ZeroDivisionError:
        # lifelines' concordance index without comparable pairs; _comparable() should have said so first.
        return None, NOT_COMPARABLE
    if not model.terms:
        reasons = "; ".join(sorted(set(model.term_problems.values())))
        return None, f"no hazard ratio can be estimated: {reasons}"
    return model, None


def _estimable(ratio: HazardRatio) -> bool:
    """A finite HR with a CI inside (0, inf); a diverging coefficient gives 0 or inf (R prints 0-Inf)."""
    values = (ratio.hr, ratio.ci_low, ratio.ci_high, ratio.p)
    return all(math.isfinite(v) for v in values) and ratio.ci_low > 0


def _term_problem(data: pd.DataFrame, event: str, terms: Sequence[str], term: str) -> str:
    """Why a term's estimate diverges, in the words a clinician would check in the data."""
    name, _, _ = term.partition("=")
    if name and term in data and set(data[term].unique()) <= {0.0, 1.0}:
        if data.loc[data[term] == 1, event].sum() == 0:
            return "no events in this group among the model's patients"
        siblings = [t for t in terms if t.partition("=")[0] == name]
        if data.loc[(data[siblings] == 0).all(axis=1), event].sum() == 0:
            return "no events in the reference group among the model's patients"
    return "the estimate diverges: groups that separate completely or coincide with other covariates"


def _ph_test(
    fitter: Any, data: pd.DataFrame, duration: str, event: str
) -> tuple[tuple[tuple[str, float, float], ...], str | None]:
    """The Grambsch-Therneau test per term, or why it cannot be computed."""
    if data.loc[data[event] == 1, duration].nunique() < 2:
        # It correlates residuals with (rank) time over the events: one event time gives no slope.
        return (), "needs events at two or more distinct times"
    try:
        test = proportional_hazard_test(fitter, data, time_transform="rank")
    except (ArithmeticError, np.linalg.LinAlgError) as error:
        return (), f"the test failed ({_first_sentence(error)})"
    rows = tuple(
        (str(term), float(row["test_statistic"]), float(row["p"])) for term, row in test.summary.iterrows()
    )
    # A diverging coefficient gives an undefined statistic for its term; the other terms' stand.
    finite = tuple(row for row in rows if math.isfinite(row[1]) and math.isfinite(row[2]))
    return finite, None if len(finite) == len(rows) else "the test statistic is undefined on these data"


def fit_cox(
    design: pd.DataFrame,
    duration: str,
    event: str,
    terms: Sequence[str],
    *,
    variables: Sequence[str] = (),
    ph_test: bool = True,
    levels: dict[str, tuple[str, ...]] | None = None,
) -> CoxModel:
    """Fit lifelines' Cox model (Efron ties) on numeric columns; warnings are kept, not raised."""

    data = design[[duration, event, *terms]]
    with warnings.catch_warnings(record=True) as records:
        warnings.simplefilter("always")
        fitter = CoxPHFitter().fit(
            data, duration_col=duration, event_col=event, batch_mode=len(data) >= BATCH_MODE_FROM
        )
        # lifelines computes the concordance index on first access: here, so its warnings are kept too.
        concordance = float(fitter.concordance_index_)
        ph, ph_problem = _ph_test(fitter, data, duration, event) if ph_test else ((), None)
        caught = list(dict.fromkeys(str(r.message).splitlines()[0] for r in records))
    summary = fitter.summary
    hazard: list[HazardRatio] = []
    term_problems: dict[str, str] = {}
    for term in terms:
        ratio = HazardRatio(
            term,
            float(summary.loc[term, "exp(coef)"]),
            float(summary.loc[term, "exp(coef) lower 95%"]),
            float(summary.loc[term, "exp(coef) upper 95%"]),
            float(summary.loc[term, "p"]),
        )
        if _estimable(ratio):
            hazard.append(ratio)
        else:
            term_problems[term] = _term_problem(data, event, terms, term)
    variable_p: dict[str, float] = {}
    variable_problems: dict[str, str] = {}
    for name in variables:
        columns = [t for t in terms if t.split("=", 1)[0] == name]
        if not columns:
            variable_problems[name] = "only one group among the model's patients"
        elif any(c in term_problems for c in columns):
            variable_problems[name] = "a group's hazard ratio is not estimable"
        elif (p := _wald_p(fitter, columns)) is None:
            variable_problems[name] = "the estimates' covariance is singular"
        else:
            variable_p[name] = p
    return CoxModel(
        variables=tuple(variables),
        n=len(data),
        events=int(data[event].sum()),
        terms=tuple(hazard),
        variable_p=variable_p,
        concordance=concordance,
        ph_test=ph,
        warnings=tuple(caught),
        levels=dict(levels or {}),
        term_problems=term_problems,
        variable_problems=variable_problems,
        ph_problem=ph_problem,
    )


def _wald_p(fitter: Any, columns: Sequence[str]) -> float | None:
    """Joint Wald test that all coefficients of ``columns`` are zero (one p per variable, as SPSS);
    None when their covariance is singular."""

    beta = fitter.params_.loc[list(columns)].to_numpy()
    covariance = fitter.variance_matrix_.loc[list(columns), list(columns)].to_numpy()
    try:
        statistic = float(beta @ np.linalg.solve(covariance, beta))
    except np.linalg.LinAlgError:
        return None
    p = float(chi2.sf(statistic, len(columns)))
    return p if math.isfinite(p) else None


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
            raise CohortNothingToAnalyse(
                f"nothing to analyse for {self.endpoint.upper()}: no patient has both a complete IChIS and "
                "a follow-up time (see the extraction summary for who was left out and why)"
            )
        self.data_ = data
        self.n_excluded_ = int(len(table) - len(data))
        self.overall_ = Group(
            "all", len(data), int(data["event"].sum()), kaplan_meier(data["duration"], data["event"])
        )
        self.groups_: dict[str, list[Group]] = {}
        self.logrank_: dict[str, TestResult | None] = {}
        self.logrank_problems_: dict[str, str] = {}
        self.univariate_: dict[str, CoxModel | None] = {}
        self.univariate_problems_: dict[str, str] = {}
        for variable in VARIABLES:
            rows = data[data[variable.name].notna()]
            self.groups_[variable.name] = [
                Group(level, len(sub), int(sub["event"].sum()), kaplan_meier(sub["duration"], sub["event"]))
                for level in variable.levels
                if len(sub := rows[rows[variable.name] == level])
            ]
            test, problem = try_logrank(data, variable.name)
            self.logrank_[variable.name] = test
            if problem:
                self.logrank_problems_[variable.name] = problem
            model, problem = try_cox(data, [variable.name], ph_test=False)
            self.univariate_[variable.name] = model
            if problem:
                self.univariate_problems_[variable.name] = problem
        self.pairwise_ = self._pairwise(data)
        self.multivariate_, self.multivariate_problem_ = try_cox(data, self.multivariate)
        return self

    @staticmethod
    def _pairwise(data: pd.DataFrame) -> list[Comparison]:
        found = []
        levels = [lv for lv in VARIABLE_BY_NAME["ichis"].levels if (data["ichis"] == lv).any()]
        for i, a in enumerate(levels):
            for b in levels[i + 1 :]:
                test, problem = try_logrank(data[data["ichis"].isin((a, b))], "ichis")
                found.append(Comparison(a, b, test, problem))
        return found
