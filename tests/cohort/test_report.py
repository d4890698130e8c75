"""Analysis outputs: Tables 3 and 4 in the paper's shape, a self-contained HTML report, synthetic labels."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import pytest

from cohort.table import read_table
from cohort.tables import p_text


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.cohort.test_cli import ichis

    root = tmp_path_factory.mktemp("report")
    for args in (
        ["synth", "--out", str(root / "ndjson"), "-n", "400", "--seed", "8", "--no-cycle-labs"],
        ["extract", str(root / "ndjson"), "--cutoff", "2023-08-31", "--out", str(root / "table")],
        ["analyze", str(root / "table" / "cohort.csv"), "--out", str(root / "report"), "--bootstrap", "50"],
    ):
        done = ichis(*args)
        assert done.returncode == 0, done.stderr
    return root


@pytest.mark.parametrize(
    ("p", "text"), [(0.0004, "<0.001"), (0.001, "0.001"), (0.0494, "0.049"), (0.5, "0.500")]
)
def test_p_values_are_printed_as_in_the_paper(p: float, text: str) -> None:
    """Three decimals, and <0.001 below that."""
    assert text == p_text(p)


def test_table_3_has_the_papers_rows_and_columns(report: Path) -> None:
    """Variables in the paper's order with their levels; IChIS levels carry HRs against IChIS 0."""
    with (report / "report" / "table3_pfs.csv").open(encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    header, body = rows[0], rows[1:]
    assert header == [
        "dataset",
        "Variable",
        "n",
        "Events",
        "Median (95% CI), day",
        "Univariate p (log-rank)",
        "Multivariate p",
        "HR (95% CI)",
    ]
    variables = [r[1] for r in body if not r[4]]  # rows without a median head a variable
    assert variables == [
        "Age, yr",
        "Sex",
        "Smoking status",
        "ECOG",
        "Histology",
        "PD-L1 expression",
        "Agent",
        "IChIS",
    ]
    assert body[0][1] == "All patients"
    ichis = {r[1]: r[7] for r in body[-3:]}
    assert ichis["0"] == "1 (reference)"
    assert all(re.fullmatch(r"\d+\.\d{3} \(\d+\.\d{3}-\d+\.\d{3}\)", ichis[level]) for level in ("1", "2"))
    assert {"SYNTHETIC"} == {r[0] for r in body}


def test_the_html_report_is_self_contained(report: Path) -> None:
    """Plots are data: URIs; nothing is fetched from elsewhere (no scripts, no external links or images)."""
    html = (report / "report" / "report.html").read_text(encoding="utf-8")
    assert html.count('src="data:image/png;base64,') == 2
    assert not re.search(r"<script|<link|src=\"http|url\(http", html)


def test_synthetic_data_are_labelled_in_every_output(report: Path) -> None:
    """The banner, the Markdown heading and the plots say SYNTHETIC; so does every row of the table."""
    html = (report / "report" / "report.html").read_text(encoding="utf-8")
    markdown = (report / "report" / "tables.md").read_text(encoding="utf-8")
    svg = (report / "report" / "km_pfs.svg").read_text(encoding="utf-8")
    table = read_table(report / "table")
    assert ("SYNTHETIC DATA" in html, markdown.startswith("# SYNTHETIC DATA"), "SYNTHETIC DATA" in svg) == (
        True,
        True,
        True,
    )
    assert bool(table["synthetic"].all())
    readme = (report / "ndjson" / "SYNTHETIC-README.txt").read_text(encoding="utf-8")
    assert readme.startswith("SYNTHETIC DATA")


def test_the_report_has_the_validation_sections_a_methodologist_asks_for(report: Path) -> None:
    """Flow of patients, discrimination with bootstrap intervals, and the medians against the paper's,
    in the HTML page and as CSV."""
    html = (report / "report" / "report.html").read_text(encoding="utf-8").replace("&#39;", "'")
    for heading in (
        "Validation (TRIPOD)",
        "Flow of patients (counts from the extraction)",
        "Discrimination of IChIS",
        "Overall survival: local medians against the published ones",
    ):
        assert heading in html
    with (report / "report" / "discrimination.csv").open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["Endpoint"] for r in rows] == ["Progression-free survival", "Overall survival"]
    interval = r"0\.\d{3} \(0\.\d{3}-0\.\d{3}\)"
    for row in rows:
        for column in ("Harrell's C (95% CI)", "Uno's C (95% CI)", "AUC at 6 months (95% CI)"):
            assert re.fullmatch(interval, row[column]), (column, row[column])
    with (report / "report" / "flow.csv").open(encoding="utf-8") as handle:
        flow = {row["Step"]: row["Patients"] for row in csv.DictReader(handle)}
    assert flow["Patients in the input"] == flow["Rows of the cohort table"] == "400"


def test_the_report_states_the_ci_method(report: Path) -> None:
    """Every reader learns that CIs are log-log here and symmetric in the paper (SPSS)."""
    html = (report / "report" / "report.html").read_text(encoding="utf-8")
    assert 'conf.type="log-log"' in html.replace("&#34;", '"')
    assert "SPSS" in html


def small_site_table(report: Path, folder: Path, keep: int, **columns: str) -> Path:
    """The report's cohort table cut to its first ``keep`` rows with some columns overwritten."""
    with (report / "table" / "cohort.csv").open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    folder.mkdir()
    with (folder / "cohort.csv").open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(row | columns for row in rows[:keep])
    return folder


@pytest.mark.parametrize(
    ("keep", "columns", "why"),
    [
        (400, {"pdl1_tps": "", "pdl1_category": ""}, "no patient has all of pdl1, agent, ichis recorded"),
        (400, {"pfs_event": "0", "os_event": "0"}, "no events among the patients"),
        (3, {}, "the model did not converge"),
    ],
)
def test_a_model_that_cannot_be_estimated_is_named_and_the_rest_of_the_report_stands(
    report: Path, tmp_path: Path, keep: int, columns: dict[str, str], why: str
) -> None:
    """A single site's cohort may be small or lack a covariate: no HRs, a stated reason, exit 0."""
    from tests.cohort.test_cli import ichis

    table = small_site_table(report, tmp_path / "table", keep, **columns)
    done = ichis("analyze", str(table), "--out", str(tmp_path / "report"))
    assert done.returncode == 0, done.stderr
    html = (tmp_path / "report" / "report.html").read_text(encoding="utf-8")
    assert f"No multivariate model: {why}" in html
    with (tmp_path / "report" / "strata_pfs.csv").open(encoding="utf-8") as handle:
        hrs = [row["HR (95% CI) vs 0"] for row in csv.DictReader(handle)]
    assert hrs
    assert "1 (reference)" not in hrs
