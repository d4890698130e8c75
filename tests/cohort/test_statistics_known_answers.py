"""The statistics reproduce R's survival package on classic datasets (known answers, stated tolerances).

Reference values were computed with R 4.2.2 and survival 3.5-3 (Debian packages r-base-core,
r-cran-survival) on the very rows lifelines ships (``load_rossi``, ``load_lung``, ``load_waltons``):

    coxph(Surv(week, arrest) ~ fin + age + race + wexp + mar + paro + prio, rossi, ties = "efron")
    survfit(Surv(time, status) ~ sex, lung, conf.type = "log-log"); survdiff(...); coxph(...)

lifelines' status column in ``lung`` is R's status - 1; the times are identical.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from lifelines.datasets import load_lung, load_rossi, load_waltons  # type: ignore[import-untyped]

from cohort.analysis import cox, fit_cox, kaplan_meier, logrank

#: Coefficients and concordance print to 1e-8 in R; optimisers agree to well below this.
COEF_TOLERANCE = 1e-4

ROSSI_COEFFICIENTS = {
    "fin": -0.37942216649,
    "age": -0.05743774268,
    "race": 0.31389978784,
    "wexp": -0.14979569767,
    "mar": -0.43370387794,
    "paro": -0.08487108250,
    "prio": 0.09149708099,
}


@pytest.fixture(scope="module")
def lung() -> pd.DataFrame:
    return load_lung().rename(columns={"time": "duration", "status": "event"})


def test_cox_coefficients_match_r_coxph_on_rossi() -> None:
    """Efron ties: the seven coefficients and Harrell's C of Fox & Weisberg's recidivism model."""
    rossi = load_rossi()
    model = fit_cox(rossi, "week", "arrest", list(ROSSI_COEFFICIENTS), ph_test=False)
    coefficients = {t.term: math.log(t.hr) for t in model.terms}
    assert pytest.approx(coefficients, abs=COEF_TOLERANCE) == ROSSI_COEFFICIENTS
    assert pytest.approx(model.concordance, abs=COEF_TOLERANCE) == 0.6403292471


@pytest.mark.parametrize(
    ("sex", "expected"),
    [(1, (270.0, 210.0, 306.0)), (2, (426.0, 345.0, 524.0))],
)
def test_kaplan_meier_median_and_ci_match_r_log_log(
    lung: pd.DataFrame, sex: int, expected: tuple[float, ...]
) -> None:
    """The median's 95% CI is R's conf.type="log-log" interval to the day (R's default "log" differs)."""
    rows = lung[lung["sex"] == sex]
    median = kaplan_meier(rows["duration"], rows["event"])
    assert expected == (median.value, median.ci_low, median.ci_high)


def test_log_rank_matches_r_survdiff(lung: pd.DataFrame) -> None:
    """Chi-square 10.32674195 on 1 df for sex (R survdiff), to 1e-6."""
    frame = lung.assign(group=lung["sex"].astype(str))
    result = logrank(frame, "group")
    assert result is not None
    assert (pytest.approx(result.statistic, abs=1e-6), result.df) == (10.32674195, 1)


def test_log_rank_over_three_groups_matches_r(lung: pd.DataFrame) -> None:
    """ph.ecog 0/1/2: chi-square 18.01209669 on 2 df (R survdiff), as for the three IChIS strata."""
    rows = lung[lung["ph.ecog"].notna() & (lung["ph.ecog"] < 3)]
    result = logrank(rows.assign(ecog=rows["ph.ecog"].astype(int).astype(str)), "ecog")
    assert result is not None
    assert (pytest.approx(result.statistic, abs=1e-6), result.df) == (18.01209669, 2)


def test_log_rank_matches_r_on_waltons() -> None:
    """The lifelines tutorial's two fly groups: chi-square 122.2491256 in R."""
    waltons = load_waltons().rename(columns={"T": "duration", "E": "event"})
    result = logrank(waltons, "group")
    assert result is not None
    assert pytest.approx(result.statistic, abs=1e-5) == 122.2491256


def test_categorical_cox_hazard_ratios_and_joint_wald_test_match_r(lung: pd.DataFrame) -> None:
    """Levels against a reference, Wald CIs, and the 2-df joint Wald test of a three-level variable.

    R: coxph(Surv(time, status) ~ factor(ph.ecog) + factor(sex), lung[ph.ecog < 3, ]); the joint test is
    t(b) %*% solve(vcov(m)[1:2, 1:2]) %*% b = 18.12586595, p = 1.158825968e-4 (SPSS reports this p).
    """
    rows = lung[lung["ph.ecog"].notna() & (lung["ph.ecog"] < 3)]
    frame = pd.DataFrame(
        {
            "duration": rows["duration"],
            "event": rows["event"],
            "ph_ecog": rows["ph.ecog"].astype(int).astype(str),
            "sex": rows["sex"].map({1: "Male", 2: "Female"}),
        }
    )
    model = cox(frame, ["ph_ecog", "sex"], ph_test=False)
    assert model is not None
    actual = {t.term: (t.hr, t.ci_low, t.ci_high) for t in model.terms}
    expected = {
        "ph_ecog=1": (1.5188705521, 1.0274202443, 2.2453983818),
        "ph_ecog=2": (2.5765072142, 1.6584935143, 4.0026622761),
        "sex=Female": (0.5799910102, 0.4171591726, 0.8063818179),
    }
    assert expected.keys() == actual.keys()
    for term, values in expected.items():
        assert values == pytest.approx(actual[term], rel=COEF_TOLERANCE)
    assert pytest.approx(model.variable_p["ph_ecog"], rel=1e-3) == 1.158825968e-4
    # With many tied risk scores (two categorical covariates) R and lifelines differ in the 4th decimal.
    assert pytest.approx(model.concordance, abs=5e-4) == 0.6397536165


def simulated(crossing: bool, n: int = 3000) -> pd.DataFrame:
    """Two groups with proportional hazards (HR 2), or with hazards that cross at t = 1."""
    rng = np.random.default_rng(5)
    group = rng.integers(0, 2, n)
    if crossing:
        # Weibull shapes 0.5 and 2: one group dies early, the other late.
        times = np.where(group == 1, rng.weibull(0.5, n), rng.weibull(2.0, n))
    else:
        times = rng.exponential(np.where(group == 1, 0.5, 1.0))
    return pd.DataFrame({"duration": times, "event": 1, "g": group.astype(float)})


@pytest.mark.parametrize(("crossing", "violated"), [(False, False), (True, True)])
def test_the_proportional_hazards_check_flags_crossing_hazards(crossing: bool, violated: bool) -> None:
    """Grambsch-Therneau test on rank time: p < 0.001 for crossing hazards, not for proportional ones.

    (lifelines' test; R >= 3.0 changed cox.zph, so the two are not compared number for number.)
    """
    model = fit_cox(simulated(crossing), "duration", "event", ["g"])
    ((_, _, p),) = model.ph_test
    assert violated == (p < 0.001)
