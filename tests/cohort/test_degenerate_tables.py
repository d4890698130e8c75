"""Small and odd cohort tables: what the data cannot give is named with its reason, never a traceback.

A single site's table may have three patients, a covariate recorded for one agent only, a stratum of one
patient. The report must still be written, must label as reference the level each model actually used,
and must say "not estimable (reason)" where lifelines would raise or print a number without meaning.

Known answers from R 4.2.2 / survival 3.5-3 (``survfit(..., conf.type = "log-log")``, ``survdiff``,
``coxph(..., ties = "efron")``), as in ``test_statistics_known_answers.py``.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from cohort.analysis import NOT_COMPARABLE, SurvivalAnalysis, kaplan_meier, try_cox, try_logrank
from cohort.records import COLUMN_NAMES
from cohort.report import analyze
from cohort.table import write_rows
from cohort.tables import NOT_IN_MODEL, model_table, strata_table, survival_table

#: Coefficients print to 1e-8 in R; optimisers agree to well below this.
HR_TOLERANCE = 1e-4


def patient(i: int, **columns: Any) -> dict[str, Any]:
    """A cohort-table row with every covariate recorded; ``columns`` overwrite."""
    row: dict[str, Any] = dict.fromkeys(COLUMN_NAMES)
    row.update(
        patient_id=f"p{i}",
        synthetic=False,
        ichis=i % 3,
        ichis_status="complete",
        pfs_days=10 + 7 * i,
        pfs_event=1,
        os_days=20 + 9 * i,
        os_event=1,
        age_years=60 + i % 20,
        sex=("male", "female")[i % 2],
        ecog=i % 3,
        histology=("SqCC", "Non-SqCC")[i % 2],
        pdl1_category=("<1%", "1-49%", ">=50%")[i % 3],
        ici_agent=("nivolumab", "pembrolizumab", "atezolizumab")[(i // 3) % 3],
        smoking="Never",
    )
    return row | columns


def nivolumab_without_pdl1(*, ichis_0_without_pdl1: bool = False) -> pd.DataFrame:
    """36 patients; nivolumab needs no PD-L1 test, so its 12 patients have none (as in the review).

    Also written as ``duration, event, agent, pdl1, ichis`` for R, which gave the answers below.
    """
    rows = []
    for i in range(36):
        agent = ("nivolumab", "pembrolizumab", "atezolizumab")[i % 3]
        ichis = (i // 9) % 3
        no_pdl1 = agent == "nivolumab" or (ichis_0_without_pdl1 and ichis == 0)
        rows.append(
            patient(
                i,
                pfs_days=20 + (i * 37) % 400,
                pfs_event=0 if i % 5 == 0 else 1,
                ici_agent=agent,
                pdl1_category=None if no_pdl1 else ("<1%", "1-49%", ">=50%")[(i // 3) % 3],
                ichis=ichis,
            )
        )
    return pd.DataFrame(rows)


def cells(table: Any, column: str) -> dict[str, str]:
    """A table's column by the first cell of each row (levels without their indent)."""
    index = table.header.index(column)
    return {row[0].strip(): row[index] for row in table.rows}


def level_cells(table: Any, label: str, column: str = "HR (95% CI)") -> dict[str, str]:
    """The cells of one variable's level rows in Table 3 or 4."""
    index = table.header.index(column)
    start = [row[0] for row in table.rows].index(label) + 1
    found = {}
    for row in table.rows[start:]:
        if not row[0].startswith("   "):
            break
        found[row[0].strip()] = row[index]
    return found


# --- Defect 1: the reference is the level the model used ---------------------------------------------


def test_a_level_without_complete_cases_is_named_and_the_next_level_is_the_reference() -> None:
    """Nivolumab patients lack PD-L1: pembrolizumab is the model's reference, atezolizumab is against it."""
    analysis = SurvivalAnalysis("pfs").fit(nivolumab_without_pdl1())
    expected = {
        "nivolumab": NOT_IN_MODEL,
        "pembrolizumab": "1 (reference)",
        "atezolizumab": "0.835 (0.320-2.181)",
    }
    assert expected == level_cells(survival_table(analysis, 3), "Agent")


def test_hazard_ratios_against_the_models_reference_match_r() -> None:
    """R: coxph(Surv(duration, event) ~ pdl1 + agent + ichis), 24 complete cases, pembrolizumab first."""
    model, problem = try_cox(
        SurvivalAnalysis("pfs").fit(nivolumab_without_pdl1()).data_, ["pdl1", "agent", "ichis"]
    )
    assert (problem, model is not None) == (None, True)
    assert model is not None
    assert (model.n, model.events) == (24, 19)
    assert model.levels["agent"] == ("pembrolizumab", "atezolizumab")
    expected = {
        "pdl1=1-49%": (1.5584126733, 0.4132709331, 5.8766534636),
        "pdl1=>=50%": (1.5887442894, 0.4525630548, 5.5773629565),
        "agent=atezolizumab": (0.8348591594, 0.3196015883, 2.1808083614),
        "ichis=1": (1.4939423392, 0.4554612991, 4.9002269066),
        "ichis=2": (1.2910821378, 0.3364292396, 4.9546617549),
    }
    actual = {t.term: (t.hr, t.ci_low, t.ci_high) for t in model.terms}
    assert expected.keys() == actual.keys()
    for term, values in expected.items():
        assert values == pytest.approx(actual[term], rel=HR_TOLERANCE)
    assert pytest.approx(model.variable_p["ichis"], rel=1e-3) == 0.7986495569


def test_the_cox_table_names_each_variables_reference_and_absent_levels() -> None:
    """The term table no longer leaves the reader to guess what atezolizumab is compared with."""
    analysis = SurvivalAnalysis("pfs").fit(nivolumab_without_pdl1())
    hrs = cells(model_table(analysis), "HR (95% CI)")
    assert (hrs["agent=nivolumab"], hrs["agent=pembrolizumab"], hrs["pdl1=<1%"], hrs["ichis=0"]) == (
        NOT_IN_MODEL,
        "1 (reference)",
        "1 (reference)",
        "1 (reference)",
    )


def test_ichis_0_without_complete_cases_makes_ichis_1_the_reference_of_the_strata_table() -> None:
    """The HR column says "vs 1"; R gives IChIS 2 vs 1 as 1.766 (0.345-9.045) on the 12 complete cases."""
    analysis = SurvivalAnalysis("pfs").fit(nivolumab_without_pdl1(ichis_0_without_pdl1=True))
    strata = strata_table(analysis)
    assert "HR (95% CI) vs 1" in strata.header
    expected = {"0": NOT_IN_MODEL, "1": "1 (reference)", "2": "1.766 (0.345-9.045)"}
    assert expected == cells(strata, "HR (95% CI) vs 1")
    assert expected == level_cells(survival_table(analysis, 3), "IChIS")


def test_a_covariate_with_one_level_among_complete_cases_says_so() -> None:
    """Every patient with PD-L1 had pembrolizumab: agent has no contrast in the model; the table says so."""
    table = nivolumab_without_pdl1()
    table.loc[table["pdl1_category"].notna(), "ici_agent"] = "pembrolizumab"
    analysis = SurvivalAnalysis("pfs").fit(table)
    survival = survival_table(analysis, 3)
    expected = {
        "nivolumab": NOT_IN_MODEL,
        "pembrolizumab": "not estimable (the only group among the model's patients)",
    }
    assert expected == level_cells(survival, "Agent")
    agent_head = next(row for row in survival.rows if row[0] == "Agent")
    assert agent_head[5] == "not estimable (only one group among the model's patients)"


# --- Defect 2: degenerate data end as "not estimable (reason)" ----------------------------------------

REVIEW_THREE_ROWS = [
    patient(0, pfs_days=50, pfs_event=0, os_days=50, os_event=0),
    patient(1, pfs_days=100, pfs_event=1, os_days=120, os_event=1),
    patient(2, pfs_days=100, pfs_event=1, os_days=120, os_event=1),
]


@pytest.mark.parametrize(
    ("rows", "why"),
    [
        (REVIEW_THREE_ROWS, NOT_COMPARABLE),
        ([patient(i, pfs_days=30, os_days=60) for i in range(30)], NOT_COMPARABLE),
        (
            [patient(i, pfs_event=0, os_event=0) for i in range(30)],
            "no events among the patients with the covariates recorded",
        ),
        ([patient(1)], "every patient with the covariates recorded falls in the same group of each"),
        (
            [patient(i, pfs_event=int(i == 29), os_event=int(i == 29)) for i in range(30)],
            NOT_COMPARABLE,
        ),
        (
            [patient(i, pfs_event=int(i == 15), os_event=int(i == 15)) for i in range(30)],
            "the model did not converge (Convergence halted due to matrix inversion problems: covariates "
            "that coincide among these patients, or a group without events)",
        ),
    ],
    ids=[
        "three rows of the review",
        "every duration equal",
        "all censored",
        "one row",
        "the only event last",
        "the only event midway",
    ],
)
def test_a_degenerate_table_gives_a_report_with_the_reason(
    tmp_path: Path, rows: list[dict[str, Any]], why: str
) -> None:
    """The whole report is written (warnings are errors here); the model's reason is in HTML and CSV."""
    analyze(pd.DataFrame(rows), tmp_path, source="test")
    html = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert f"No multivariate model: {why}" in html.replace("&#39;", "'")
    with (tmp_path / "cox_pfs.csv").open(encoding="utf-8") as handle:
        assert [["site data", "model", f"not estimable ({why})", "", "", ""]] == list(csv.reader(handle))[1:]
    with (tmp_path / "strata_pfs.csv").open(encoding="utf-8") as handle:
        assert {f"not estimable ({why})"} == {row["HR (95% CI) vs 0"] for row in csv.DictReader(handle)}


def test_the_reviewers_three_rows_end_with_exit_0_and_no_traceback(tmp_path: Path) -> None:
    """The review's table, which raised ZeroDivisionError, now exits 0 with nothing on standard error."""
    from tests.cohort.test_cli import ichis

    write_rows(REVIEW_THREE_ROWS, tmp_path / "table", ("csv",))
    done = ichis("analyze", str(tmp_path / "table"), "--out", str(tmp_path / "report"))
    assert (done.returncode, done.stderr) == (0, "")
    assert (
        "PFS median days (95% CI, log-log): IChIS 0: NR (NR-NR), IChIS 1: 100 (NE-NE), IChIS 2: 100 (NE-NE)"
        in (done.stdout)
    )


def test_without_a_model_table_3_states_the_reason_once_per_variable() -> None:
    """The variable's multivariate p carries the reason; its levels say not estimable."""
    analysis = SurvivalAnalysis("pfs").fit(pd.DataFrame(REVIEW_THREE_ROWS))
    table = survival_table(analysis, 3)
    ichis_head = next(row for row in table.rows if row[0] == "IChIS")
    assert (ichis_head[4], ichis_head[5]) == (
        "not estimable (no information: at every event time one group alone was at risk or all at risk "
        "had the event)",
        f"not estimable ({NOT_COMPARABLE})",
    )
    expected = {"0": "not estimable", "1": "not estimable", "2": "not estimable"}
    assert expected == level_cells(table, "IChIS")


def test_a_stratum_of_one_patient_with_the_first_event_has_no_hazard_ratio() -> None:
    """Its coefficient diverges (R prints an upper bound of Inf); the other covariates' estimates stand."""
    analysis = SurvivalAnalysis("pfs").fit(
        pd.DataFrame([patient(i, ichis=2 if i == 0 else 0) for i in range(30)])
    )
    model = analysis.multivariate_
    assert model is not None
    assert model.term_problems == {
        "ichis=2": "the estimate diverges: groups that separate completely or coincide with other covariates"
    }
    assert model.variable_problems == {"ichis": "a group's hazard ratio is not estimable"}
    assert {t.term for t in model.terms} == {
        "pdl1=1-49%",
        "pdl1=>=50%",
        "agent=pembrolizumab",
        "agent=atezolizumab",
    }
    strata = strata_table(analysis)
    assert [("0", "1 (reference)"), ("2", "not estimable (" + model.term_problems["ichis=2"] + ")")] == [
        (row[0], row[5]) for row in strata.rows
    ]
    assert strata.rows[1][3] == "10 (NE-NE)"


@pytest.mark.parametrize(
    ("agent", "why"),
    [
        ("atezolizumab", "no events in this group among the model's patients"),
        ("nivolumab", "no events in the reference group among the model's patients"),
    ],
)
def test_a_group_without_events_is_named_as_the_reason(agent: str, why: str) -> None:
    """Three patients followed longest without an event: their HR against the rest diverges (monotone
    likelihood; R prints 0-Inf or Inf)."""
    rows = [
        patient(i, pfs_days=500 + i, pfs_event=0, ici_agent=agent)
        if i < 3
        else patient(i, pfs_event=int(i % 4 != 0), ici_agent="pembrolizumab")
        for i in range(40)
    ]
    model, problem = try_cox(SurvivalAnalysis("pfs").fit(pd.DataFrame(rows)).data_, ["agent", "ichis"])
    assert problem is None
    assert model is not None
    term = "agent=pembrolizumab" if agent == "nivolumab" else "agent=atezolizumab"
    assert (model.term_problems, {t.term for t in model.terms}) == ({term: why}, {"ichis=1", "ichis=2"})


def test_the_proportional_hazards_test_needs_two_event_times() -> None:
    """Four events on one day among ten patients: HRs exist, the Grambsch-Therneau test cannot."""
    rows = [patient(i, pfs_days=10 if i < 4 else 20, pfs_event=int(i < 4), ichis=i % 2) for i in range(10)]
    model, problem = try_cox(SurvivalAnalysis("pfs").fit(pd.DataFrame(rows)).data_, ["ichis"])
    assert problem is None
    assert model is not None
    assert ([t.term for t in model.terms], model.ph_test, model.ph_problem) == (
        ["ichis=1"],
        (),
        "needs events at two or more distinct times",
    )


# --- Kaplan-Meier and log-rank on degenerate data, against R ------------------------------------------


@pytest.mark.parametrize(
    ("durations", "events", "text"),
    [
        ([5], [1], "5 (NE-NE)"),  # R: 5, NA, NA
        ([5, 5, 5], [1, 1, 1], "5 (NE-NE)"),  # R: 5, NA, NA
        ([1, 2, 3], [1, 1, 1], "2 (1-NE)"),  # R: 2, 1, NA
        ([3, 5, 7, 9, 11], [1, 1, 1, 1, 1], "7 (3-NE)"),  # R: 7, 3, NA
        ([3, 5, 5, 9], [1, 1, 1, 0], "5 (3-NR)"),  # R: 5, 3, NA
        ([50, 100, 100], [0, 1, 1], "100 (NE-NE)"),  # R: 100, NA, NA
        ([2, 4, 6], [0, 0, 0], "NR (NR-NR)"),  # R: NA, NA, NA
    ],
)
def test_a_median_ci_that_only_the_curves_fall_to_zero_would_end_is_not_estimable(
    durations: list[int], events: list[int], text: str
) -> None:
    """The log-log band is undefined where S = 0 (R: NA); lifelines drew it at 0 (one patient: "5 (5-5)")."""
    assert text == kaplan_meier(pd.Series(durations, dtype=float), pd.Series(events)).text()


def frame(durations: list[float], events: list[int], groups: list[str]) -> pd.DataFrame:
    return pd.DataFrame({"duration": durations, "event": events, "group": groups})


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (frame([1, 2, 3, 4], [0, 0, 0, 0], ["a", "a", "b", "b"]), "no events"),  # R: p = NA
        (
            frame([5, 5, 5, 5], [1, 1, 1, 1], ["a", "a", "b", "b"]),  # R: "system is exactly singular"
            "no information: at every event time one group alone was at risk or all at risk had the event",
        ),
        (frame([1, 2, 3], [1, 1, 0], ["a", "a", "a"]), "only one group"),
    ],
)
def test_a_log_rank_test_without_information_is_not_estimable(data: pd.DataFrame, why: str) -> None:
    """lifelines printed chi-square 0 and p = 1 where R gives NA or stops."""
    assert (None, why) == try_logrank(data, "group")


def test_a_stratum_never_at_risk_at_an_event_adds_no_degree_of_freedom() -> None:
    """One IChIS 2 patient censored before the first event: R survdiff gives chi-square 0.1347396942 on 1 df,
    p = 0.713567506 (lifelines alone said 2 df, p = 0.935)."""
    data = frame(
        [3, 5, 8, 12, 20, 4, 6, 6, 9, 15, 1],
        [1, 1, 0, 1, 1, 1, 1, 1, 0, 1, 0],
        ["0"] * 5 + ["1"] * 5 + ["2"],
    )
    test, problem = try_logrank(data, "group")
    assert problem is None
    assert test is not None
    assert (pytest.approx(test.statistic, abs=1e-8), test.df, pytest.approx(test.p, abs=1e-8)) == (
        0.1347396942,
        1,
        0.713567506,
    )


@pytest.mark.parametrize(("column", "value"), [("pfs_days", -3), ("pfs_event", 2)])
def test_a_hand_edited_table_with_impossible_times_is_refused(column: str, value: int) -> None:
    """extract never writes a negative time or an event other than 0/1; a table that holds one is
    refused with the column named, not analysed into a CI like '4 (-3-NR)'."""
    from cohort.analysis import prepare
    from cohort.errors import CohortInputError

    table = pd.DataFrame(
        {
            "ichis": [0, 1],
            "ichis_status": ["complete", "complete"],
            "pfs_days": [10, 20],
            "pfs_event": [1, 0],
            "age_years": [60, 70],
            "sex": ["male", "female"],
            "ecog": [0, 1],
            "histology": ["SqCC", "Non-SqCC"],
            "pdl1_category": [None, None],
            "ici_agent": ["pembrolizumab", "nivolumab"],
            "smoking": [None, None],
        }
    )
    table.loc[0, column] = value
    with pytest.raises(CohortInputError, match=column):
        prepare(table, "pfs")


def test_a_curve_at_exactly_one_half_gives_that_time_as_the_median() -> None:
    """3 of 6 events is 0.5000000000000001 in floating point; the median is still the first time the
    curve is at or below one half (41), not the next event time (90). R prints the midpoint, 65.5."""
    median = kaplan_meier(pd.Series([10, 15, 41, 90, 130, 166]), pd.Series([1] * 6))
    assert median.value == 41
