"""Fitted analyses -> tables in the paper's format (Tables 3 and 4), as rows for CSV, Markdown and HTML."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from cohort.analysis import ENDPOINTS, VARIABLES, CoxModel, SurvivalAnalysis
from cohort.validation import HORIZONS, Discrimination, FlowStep, MedianAgreement
from ichis.reference import PUBLISHED_STRATA, Estimate

CI_METHOD = (
    "Medians: Kaplan-Meier, 95% CI from the log(-log) pointwise band (lifelines = R survival "
    'conf.type="log-log"); the paper used SPSS 22, whose CI is symmetric (median +/- 1.96 SE), so CIs '
    "differ somewhat. NR = not reached; NE = not estimable (the curve falls to zero, where the log-log "
    "band is undefined; R prints NA). Univariate p: log-rank. Multivariate: Cox proportional hazards "
    "(Efron ties) on complete cases, HR with Wald 95% CI vs the level marked 1 (reference), the first "
    "level among the model's patients; the p of a variable is its joint Wald test. What the data cannot "
    "give says not estimable, with the reason."
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
#: The HR column names the model's reference stratum: IChIS 0 unless it has no complete cases.
STRATA_HEADER = (
    "IChIS",
    "n",
    "Events",
    "Median (95% CI), day",
    "Published median (95% CI)",
    "HR (95% CI) vs 0",
    "Published HR (95% CI)",
)
NOT_IN_MODEL = "not in model: no complete cases"


def p_text(p: float | None) -> str:
    """p as the paper prints it: three decimals, or <0.001."""
    if p is None:
        return ""
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def hr_text(hr: float, low: float, high: float) -> str:
    return f"{hr:.3f} ({low:.3f}-{high:.3f})"


def not_estimable(reason: str | None) -> str:
    return f"not estimable ({reason})" if reason else "not estimable"


@dataclass(frozen=True)
class Table:
    title: str
    header: tuple[str, ...]
    rows: Sequence[tuple[str, ...]]
    #: Rows that head a variable (shown in bold), by index.
    heads: frozenset[int] = frozenset()


def level_hr(model: CoxModel | None, problem: str | None, variable: str, level: str) -> str:
    """A level's HR cell: its HR, the reference the model actually used, or why there is none."""
    if model is None:
        return not_estimable(problem)
    present = model.levels.get(variable, ())
    if level not in present:
        return NOT_IN_MODEL
    if len(present) == 1:
        return not_estimable("the only group among the model's patients")
    if level == present[0]:
        return "1 (reference)"
    term = f"{variable}={level}"
    for ratio in model.terms:
        if ratio.term == term:
            return hr_text(ratio.hr, ratio.ci_low, ratio.ci_high)
    return not_estimable(model.term_problems.get(term))


def variable_p(model: CoxModel | None, problem: str | None, variable: str) -> str:
    """A variable's joint Wald p in the model, or why there is none."""
    if model is None:
        return not_estimable(problem)
    if variable in model.variable_p:
        return p_text(model.variable_p[variable])
    return not_estimable(model.variable_problems.get(variable))


def survival_table(analysis: SurvivalAnalysis, number: int) -> Table:
    """Table 3 (PFS) or Table 4 (OS): medians by group, log-rank p, multivariate p and HRs."""
    model, problem = analysis.multivariate_, analysis.multivariate_problem_
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
        # Variables left out of the multivariate model by choice have no multivariate cells.
        in_model = variable.name in analysis.multivariate
        heads.add(len(rows))
        rows.append(
            (
                variable.label,
                str(sum(g.n for g in groups)),
                str(sum(g.events for g in groups)),
                "",
                p_text(test.p) if test else not_estimable(analysis.logrank_problems_.get(variable.name)),
                variable_p(model, problem, variable.name) if in_model else "",
                "",
            )
        )
        for group in groups:
            # Without a model its reason stands once, in the variable's multivariate p.
            hr = level_hr(model, None, variable.name, group.level) if in_model else ""
            rows.append(
                ("   " + group.level, str(group.n), str(group.events), group.median.text(), "", "", hr)
            )
    title = f"Table {number}. {ENDPOINTS[analysis.endpoint][2]}: univariate and multivariate analysis"
    return Table(title, TABLE_HEADER, rows, frozenset(heads))


def _published(estimate: Estimate | None) -> str:
    return f"{estimate.value} ({estimate.ci_low}-{estimate.ci_high})" if estimate else "1 (reference)"


def strata_table(analysis: SurvivalAnalysis) -> Table:
    """IChIS strata here next to the paper's (medians with CIs by the paper's SPSS method)."""
    model, problem = analysis.multivariate_, analysis.multivariate_problem_
    present = model.levels.get("ichis", ()) if model else ()
    reference = present[0] if len(present) > 1 else "0"
    header = tuple(f"HR (95% CI) vs {reference}" if h == "HR (95% CI) vs 0" else h for h in STRATA_HEADER)
    rows = []
    for group in analysis.groups_["ichis"]:
        published = PUBLISHED_STRATA[int(group.level)]
        median = published.median_pfs_days if analysis.endpoint == "pfs" else published.median_os_days
        hr = published.pfs_hazard_ratio if analysis.endpoint == "pfs" else published.os_hazard_ratio
        rows.append(
            (
                group.level,
                str(group.n),
                str(group.events),
                group.median.text(),
                _published(median),
                level_hr(model, problem, "ichis", group.level),
                _published(hr),
            )
        )
    title = f"{ENDPOINTS[analysis.endpoint][2]} by IChIS, here and in Kang et al. 2024"
    return Table(title, header, rows)


def model_table(analysis: SurvivalAnalysis) -> Table:
    """The multivariate model: each level's HR and p, and each term's proportional-hazards test."""
    model = analysis.multivariate_
    title = f"{ENDPOINTS[analysis.endpoint][2]}: multivariate Cox model and proportional-hazards test"
    header = ("Term", "HR (95% CI)", "p", "PH test statistic (rank time)", "PH test p")
    if model is None:
        return Table(title, header, [("model", not_estimable(analysis.multivariate_problem_), "", "", "")])
    ratios = {t.term: t for t in model.terms}
    ph = {term: (stat, p) for term, stat, p in model.ph_test}
    rows: list[tuple[str, ...]] = []
    for name in model.variables:
        for group in analysis.groups_[name]:
            term = f"{name}={group.level}"
            hr = level_hr(model, None, name, group.level)
            ratio = ratios.get(term)
            if ratio is None:  # the reference, a level not in the model, or not estimable: hr says which
                rows.append((term, hr, "", "", ""))
            elif term in ph:
                stat, p = ph[term]
                rows.append((term, hr, p_text(ratio.p), f"{stat:.3f}", p_text(p)))
            else:
                rows.append((term, hr, p_text(ratio.p), not_estimable(model.ph_problem), ""))
    return Table(title, header, rows)


def pairwise_table(analysis: SurvivalAnalysis) -> Table:
    rows = [
        (f"IChIS {c.first} vs {c.second}", f"{c.test.statistic:.3f}", p_text(c.test.p))
        if c.test is not None
        else (f"IChIS {c.first} vs {c.second}", not_estimable(c.problem), "")
        for c in analysis.pairwise_
    ]
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


VALIDATION_METHOD = (
    "Discrimination of IChIS (a higher score, a worse prognosis): Harrell's C (lifelines), Uno's C "
    "truncated at tau days with inverse-probability-of-censoring weights, and the cumulative/dynamic "
    "AUC at 6 (183 days) and 12 months (365 days) with the same weights (scikit-survival); 95% "
    "percentile bootstrap intervals from the resamples stated (patients drawn with replacement, fixed "
    "seed). Agreement with the paper: H0 'the median here is the published median', i.e. S(m) = 0.5 "
    "at the published median m (Brookmeyer-Crowley, log(-log) scale, Greenwood variance): p < 0.05 "
    "exactly when 0.5 lies outside the pointwise band that gives the local median's CI; z > 0 means a "
    "shorter median here."
)


def discrimination_table(results: Sequence[Discrimination]) -> Table:
    """Harrell's C, Uno's C and the time-dependent AUC of each endpoint, with bootstrap intervals."""
    header = (
        "Endpoint",
        "n",
        "Events",
        "Harrell's C (95% CI)",
        "Uno's C (95% CI)",
        "Uno's tau, days",
        *(f"AUC at {label} (95% CI)" for label in HORIZONS),
        "Bootstrap resamples used",
    )
    rows = [
        (
            ENDPOINTS[r.endpoint][2],
            str(r.n),
            str(r.events),
            r.harrell.text(),
            r.uno.text(),
            f"{r.uno_tau:g}" if r.uno_tau is not None else "",
            *(r.auc[label].text() for label in HORIZONS),
            ", ".join(
                f"{name} {value.resamples}"
                for name, value in (("Harrell", r.harrell), ("Uno", r.uno), *r.auc.items())
            ),
        )
        for r in results
    ]
    return Table("Discrimination of IChIS", header, rows)


def median_agreement_table(endpoint: str, results: Sequence[MedianAgreement]) -> Table:
    """Each stratum's median here beside the paper's, with the test that they agree."""
    header = (
        "IChIS",
        "n",
        "Events",
        "Median here (95% CI), day",
        "Published median (95% CI, SPSS)",
        "S(published median) here",
        "z",
        "p (H0: same median)",
    )
    rows = [
        (
            r.stratum,
            str(r.n),
            str(r.events),
            r.local.text(),
            f"{r.published.value} ({r.published.ci_low}-{r.published.ci_high})",
            f"{r.survival_at_published:.3f}"
            if r.survival_at_published is not None
            else not_estimable(r.problem),
            f"{r.z:.2f}" if r.z is not None else "",
            p_text(r.p),
        )
        for r in results
    ]
    title = f"{ENDPOINTS[endpoint][2]}: local medians against the published ones (Kang et al. 2024)"
    return Table(title, header, rows)


def flow_table(steps: Sequence[FlowStep]) -> Table:
    """The flow diagram as rows: each box, then who was left out before it and why."""
    rows: list[tuple[str, ...]] = []
    heads = set()
    for step in steps:
        for reason, count in step.left_out:
            rows.append(("   left out: " + reason, str(count)))
        heads.add(len(rows))
        rows.append((step.label, "" if step.n is None else str(step.n)))
    return Table(
        "Flow of patients (counts from the extraction)", ("Step", "Patients"), rows, frozenset(heads)
    )
