"""The validation report's statistics give published answers, and its flow diagram adds up.

Known answers for the concordance and the time-dependent AUC are the small cases published with
scikit-survival's own tests (``tests/test_metrics.py`` of sebp/scikit-survival: ``no_ties``,
``tied_risk_1``, ``single_time``, ``two_times``), which this module's functions must reproduce to
1e-6 with the orientation they use (a higher IChIS, a worse prognosis). Harrell's C comes from
lifelines there, so the Harrell cases also check that lifelines and scikit-survival agree.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from lifelines import KaplanMeierFitter  # type: ignore[import-untyped]
from lifelines.datasets import load_lung  # type: ignore[import-untyped]

from cohort.analysis import prepare
from cohort.table import read_table
from cohort.validation import (
    discrimination,
    flow,
    harrell_c,
    median_test,
    time_dependent_auc,
    uno_c,
)

#: scikit-survival's published cases print 6 to 15 decimals.
TOLERANCE = 1e-6

EIGHT = {
    "event": [0, 1, 1, 0, 0, 1, 0, 0],
    "time": [1, 5, 6, 11, 34, 45, 46, 50],
}
TEN = {
    "event": [0, 1, 1, 0, 1, 0, 1, 0, 0, 1],
    "time": [1, 5, 6, 10, 11, 34, 45, 46, 50, 56],
}
FIFTEEN = {
    "event": [1, 0, 1, 0, 1, 1, 1, 1, 1, 0, 0, 1, 0, 0, 1],
    "time": [
        10.88,
        19.78,
        40.92,
        98.7,
        70.19,
        10.15,
        28.95,
        29.57,
        17.9,
        63.78,
        36.22,
        83.14,
        13.69,
        99.51,
        3.19,
    ],
    "score": [
        *(-1.019, -0.016, 0.132, 0.269, -0.777, -1.077, 0.894, -1.227),
        *(-0.417, 0.072, -1.275, -0.91, -0.825, -0.292, -0.045),
    ],
}


def arrays(case: dict[str, list[float]], score: list[float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return np.array(case["time"], dtype=float), np.array(case["event"]), np.array(score, dtype=float)


@pytest.mark.parametrize(
    ("score", "expected"),
    [
        ([5, 8, 11, 34, 12, 3, 9, 12], 0.2307692),  # no_ties
        ([5, 15, 11, 34, 12, 3, 9, 12], 0.59375),  # tied_risk: a tie in score counts one half
    ],
)
def test_harrells_c_reproduces_the_published_cases(score: list[float], expected: float) -> None:
    """Harrell's C of a risk score (lifelines) equals scikit-survival's published values."""
    case = EIGHT if score[1] == 8 else EIGHT | {"event": [0, 1, 1, 0, 1, 1, 0, 0]}
    assert pytest.approx(expected, abs=TOLERANCE) == harrell_c(*arrays(case, score))


@pytest.mark.parametrize(
    ("score", "expected"),
    [
        ([5, 8, 11, 19, 34, 12, 3, 9, 12, 20], 0.347890360332615),  # no_ties
        ([5, 8, 11, 11, 34, 12, 3, 9, 12, 20], 0.365629810028969),  # tied_risk_1
    ],
)
def test_unos_c_reproduces_the_published_cases(score: list[float], expected: float) -> None:
    """Uno's C with the cohort as its own censoring reference, untruncated, as published."""
    assert pytest.approx(expected, abs=TOLERANCE) == uno_c(*arrays(TEN, score), tau=None)


@pytest.mark.parametrize(
    ("times", "expected"),
    [([28], [0.362963]), ([15, 66], [0.3030303, 0.45])],
)
def test_the_time_dependent_auc_reproduces_the_published_cases(
    times: list[float], expected: list[float]
) -> None:
    """Cumulative/dynamic AUC at given times, as published (single_time, two_times)."""
    duration, event, score = arrays(FIFTEEN, FIFTEEN["score"])
    assert pytest.approx(expected, abs=TOLERANCE) == time_dependent_auc(duration, event, score, times)


@pytest.mark.parametrize("median", [150.0, 250.0, 270.0, 310.0, 350.0, 450.0])
def test_the_median_test_rejects_exactly_when_half_lies_outside_lifelines_band(median: float) -> None:
    """p < 0.05 if and only if 0.5 is outside lifelines' pointwise log-log 95% band at the median
    tested (lung, men): the test is the one whose inversion gives the median's CI."""
    lung = load_lung()
    men = lung[lung["sex"] == 1]
    fitter = KaplanMeierFitter().fit(men["time"], men["status"])
    band = fitter.confidence_interval_
    low, high = (float(band[column].loc[band.index <= median].iloc[-1]) for column in band.columns)
    survival, _, p = median_test(men["time"], men["status"], median)
    assert (p < 0.05) == (not low <= 0.5 <= high)
    assert pytest.approx(float(fitter.survival_function_at_times(median).iloc[0])) == survival


def test_the_median_test_says_why_when_follow_up_ends_before_the_published_median() -> None:
    """Nobody is followed to the published median: no test, a reason."""
    with pytest.raises(ValueError, match="follow-up ends before the published median"):
        median_test(pd.Series([10.0, 20.0, 30.0]), pd.Series([1, 0, 1]), 60.0)


@pytest.fixture(scope="module")
def analysis_set(tmp_path_factory: pytest.TempPathFactory) -> tuple[pd.DataFrame, dict[str, object], Path]:
    """A synthetic cohort of 200 extracted by the command, prepared for PFS."""
    from tests.cohort.test_cli import ichis

    root = tmp_path_factory.mktemp("validation")
    for args in (
        [
            "synth",
            "--out",
            str(root / "ndjson"),
            "-n",
            "200",
            "--seed",
            "3",
            "--no-cycle-labs",
            "--bystanders",
            "5",
        ],
        ["extract", str(root / "ndjson"), "--cutoff", "2023-08-31", "--out", str(root / "table")],
    ):
        done = ichis(*args)
        assert done.returncode == 0, done.stderr
    table = read_table(root / "table")
    summary = json.loads((root / "table" / "extraction-summary.json").read_text(encoding="utf-8"))
    return table, summary, root


def test_bootstrap_intervals_hold_the_estimate_and_repeat_with_the_seed(
    analysis_set: tuple[pd.DataFrame, dict[str, object], Path],
) -> None:
    """Every interval contains its point estimate, rests on every resample, and a second run with
    the same seed gives the same numbers."""
    table, _, _ = analysis_set
    data = prepare(table, "pfs")
    first = discrimination(data, "pfs", resamples=40, seed=7)
    statistics = [first.harrell, first.uno, *first.auc.values()]
    for statistic in statistics:
        assert statistic.value is not None
        assert statistic.low is not None
        assert statistic.high is not None
        assert (statistic.low <= statistic.value <= statistic.high, statistic.resamples) == (True, 40)
    assert first == discrimination(data, "pfs", resamples=40, seed=7)


def test_a_statistic_the_data_cannot_give_is_named_with_its_reason() -> None:
    """Without events there is no concordance: not estimable, with scikit-survival's reason."""
    data = pd.DataFrame({"duration": [10.0, 20.0, 30.0], "event": [0, 0, 0], "ichis": ["0", "1", "2"]})
    result = discrimination(data, "os", resamples=5)
    assert (result.uno.value, result.uno.problem) == (None, "no events")
    assert result.auc["6 months"].text().startswith("not estimable (")


def test_the_flow_diagram_adds_up_from_the_input_to_the_analysis(
    analysis_set: tuple[pd.DataFrame, dict[str, object], Path],
) -> None:
    """Each box holds the one before it less those left out on the way, with the extraction's reasons."""
    table, summary, _ = analysis_set
    analysed = {"pfs": len(prepare(table, "pfs")), "os": len(prepare(table, "os"))}
    steps = flow(summary, table, analysed)
    assert [s.label for s in steps][:4] == [
        "Patients in the input",
        "With a first checkpoint-inhibitor dose by the cut-off",
        "Rows of the cohort table",
        "IChIS complete",
    ]
    assert steps[0].n == 205
    assert steps[1].left_out == (("no checkpoint-inhibitor order or administration", 5),)
    for before, after in itertools.pairwise(steps[:4]):
        assert after.n == (before.n or 0) - sum(count for _, count in after.left_out)
    for step in steps[4:]:
        assert step.n == (steps[3].n or 0) - sum(count for _, count in step.left_out)
