"""Fitted analyses -> tables in the paper's format (Tables 3 and 4), as rows for CSV, Markdown and HTML."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from cohort.analysis import ENDPOINTS, VARIABLES, HazardRatio, SurvivalAnalysis
from ichis.reference import PUBLISHED_STRATA, Estimate

CI_METHOD = (
    "Medians: Kaplan-Meier, 95% CI from the log(-log) pointwise band (lifelines = R survival "
    'conf.type="log-log"); the paper used SPSS 22, whose CI is symmetric (median +/- 1.96 SE), so CIs '
    "differ somewhat. NR = not reached. Univariate p: log-rank. Multivariate: Cox proportional hazards "
    "(Efron ties), HR with Wald 95% CI vs the first level; the p of a variable is its joint Wald test."
)
TABLE_HEADER = (
    "Variable",
    "n",
    "Events",
    "Median (95% CI), day",
    "Univariate p (log-rank)",
    "Multivariate p",
    "HR (95% CI)",
)
STRATA_HEADER = (
    "IChIS",
    "n",
    "Events",
    "Median (95% CI), day",
    "Published median (95% CI)",
    "HR (95% CI) vs 0",
    "Published HR (95% CI)",
)


def p_text(p: float | None) -> str:
    """p as the paper prints it: three decimals, or <0.001."""
    if p is None:
        return ""
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def hr_text(hr: float, low: float, high: float) -> str:
    return f"{hr:.3f} ({low:.3f}-{high:.3f})"


@dataclass(frozen=True)
class Table:
    title: str
    header: tuple[str, ...]
    rows: Sequence[tuple[str, ...]]
    #: Rows that head a variable (shown in bold), by index.
    heads: frozenset[int] = frozenset()


def survival_table(analysis: SurvivalAnalysis, number: int) -> Table:
    """Table 3 (PFS) or Table 4 (OS): medians by group, log-rank p, multivariate p and HRs."""
    model = analysis.multivariate_
    terms = {t.term: t for t in model.terms} if model else {}
    overall = analysis.overall_
    rows: list[tuple[str, ...]] = [
        ("All patients", str(overall.n), str(overall.events), overall.median.text(), "", "", "")
    ]
    heads = {0}
    for variable in VARIABLES:
        groups = analysis.groups_[variable.name]
        if not groups:
            continue
        test = analysis.logrank_[variable.name]
        in_model = model is not None and variable.name in model.variable_p
        heads.add(len(rows))
        rows.append(
            (
                variable.label,
                str(sum(g.n for g in groups)),
                str(sum(g.events for g in groups)),
                "",
                p_text(test.p if test else None),
                p_text(model.variable_p[variable.name]) if model and in_model else "",
                "",
            )
        )
        for position, group in enumerate(groups):
            term = terms.get(f"{variable.name}={group.level}")
            hr = (
                hr_text(term.hr, term.ci_low, term.ci_high)
                if term
                else ("1 (reference)" if in_model and position == 0 else "")
            )
            rows.append(
                ("   " + group.level, str(group.n), str(group.events), group.median.text(), "", "", hr)
            )
    title = f"Table {number}. {ENDPOINTS[analysis.endpoint][2]}: univariate and multivariate analysis"
    return Table(title, TABLE_HEADER, rows, frozenset(heads))


def _published(estimate: Estimate | None) -> str:
    return f"{estimate.value} ({estimate.ci_low}-{estimate.ci_high})" if estimate else "1 (reference)"


def _stratum_hr(term: HazardRatio | None, *, first: bool, model: bool) -> str:
    """The stratum's HR; the first stratum is the model's reference; without a model, none."""
    if term is not None:
        return hr_text(term.hr, term.ci_low, term.ci_high)
    if first:
        return "1 (reference)" if model else ""
    return "not estimable"


def strata_table(analysis: SurvivalAnalysis) -> Table:
    """IChIS strata here next to the paper's (medians with CIs by the paper's SPSS method)."""
    model = analysis.multivariate_
    terms = {t.term: t for t in model.terms} if model else {}
    rows = []
    for group in analysis.groups_["ichis"]:
        published = PUBLISHED_STRATA[int(group.level)]
        median = published.median_pfs_days if analysis.endpoint == "pfs" else published.median_os_days
        hr = published.pfs_hazard_ratio if analysis.endpoint == "pfs" else published.os_hazard_ratio
        term = terms.get(f"ichis={group.level}")
        rows.append(
            (
                group.level,
                str(group.n),
                str(group.events),
                group.median.text(),
                _published(median),
                _stratum_hr(term, first=group is analysis.groups_["ichis"][0], model=model is not None),
                _published(hr),
            )
        )
    title = f"{ENDPOINTS[analysis.endpoint][2]} by IChIS, here and in Kang et al. 2024"
    return Table(title, STRATA_HEADER, rows)


def model_table(analysis: SurvivalAnalysis) -> Table:
    """The multivariate model: each term's HR, p and proportional-hazards test."""
    model = analysis.multivariate_
    rows: list[tuple[str, ...]] = []
    if model is not None:
        ph = {term: (stat, p) for term, stat, p in model.ph_test}
        for term in model.terms:
            stat, p = ph.get(term.term, (float("nan"), float("nan")))
            rows.append(
                (
                    term.term,
                    hr_text(term.hr, term.ci_low, term.ci_high),
                    p_text(term.p),
                    f"{stat:.3f}",
                    p_text(p),
                )
            )
    title = f"{ENDPOINTS[analysis.endpoint][2]}: multivariate Cox model and proportional-hazards test"
    header = ("Term", "HR (95% CI)", "p", "PH test statistic (rank time)", "PH test p")
    return Table(title, header, rows)


def pairwise_table(analysis: SurvivalAnalysis) -> Table:
    rows = [(f"IChIS {a} vs {b}", f"{t.statistic:.3f}", p_text(t.p)) for a, b, t in analysis.pairwise_]
    return Table(
        f"{ENDPOINTS[analysis.endpoint][2]}: pairwise log-rank tests", ("Comparison", "Chi-square", "p"), rows
    )


def markdown(table: Table) -> str:
    """A GitHub Markdown table with its title."""

    def cell(text: str) -> str:
        return (
            text.replace("|", "\\|").replace("   ", "&nbsp;&nbsp;&nbsp;", 1)
            if text.startswith("   ")
            else text.replace("|", "\\|")
        )

    lines = [
        f"**{table.title}**",
        "",
        "| " + " | ".join(table.header) + " |",
        "|" + "---|" * len(table.header),
    ]
    for index, row in enumerate(table.rows):
        cells = [cell(c) for c in row]
        if index in table.heads:
            cells[0] = f"**{cells[0]}**"
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
