"""Published reference data for IChIS: cut-offs, outcome strata and the citation.

Every number here is transcribed from Kang et al. 2024 (Tables 2, 3 and 4), the only source of
IChIS. They are reference data about one cohort, not predictions for a patient.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

#: Table 2: one point for NEUT# strictly greater than 9,000 cells/uL.
NEUTROPHIL_CUTOFF_PER_UL = Decimal("9000")
#: Table 2: one point for IG# strictly greater than 80 cells/uL.
IMMATURE_GRANULOCYTE_CUTOFF_PER_UL = Decimal("80")


@dataclass(frozen=True, slots=True)
class Citation:
    """A bibliographic reference, short enough for a card and complete enough to find."""

    text: str
    #: ``None`` until verified against the publisher: a wrong link on a card is worse than none.
    doi: str | None


CITATION = Citation(
    text=(
        "Kang DH, Choi CM, Park CK, Oh IJ, Kim YC, Yoon SH, Kim Y, Lee JE. Immune Checkpoint "
        "Inhibitor Score Predicts Survival Benefit of Immunotherapy in Patients with Non-small "
        "Cell Lung Cancer. Tuberc Respir Dis (Seoul) 2024;87(4):483-493."
    ),
    doi=None,
)

#: Who the score was derived in; every place that shows a stratum must also show this.
DERIVATION_POPULATION = (
    "143 patients with advanced non-small cell lung cancer on second-line PD-1/PD-L1 "
    "monotherapy (nivolumab, pembrolizumab, atezolizumab), 4 Korean centres, 2021-2022; "
    "not externally validated"
)

#: What the score is, in one sentence, for cards and pages.
NATURE_OF_SCORE = (
    "IChIS is a prognostic research marker from a single cohort; it does not predict benefit "
    "for an individual patient and is not a reason to withhold treatment."
)


@dataclass(frozen=True, slots=True)
class Estimate:
    """A published point estimate with its 95% confidence interval, exactly as printed."""

    value: Decimal
    ci_low: Decimal
    ci_high: Decimal

    def __str__(self) -> str:
        return f"{self.value} (95% CI {self.ci_low}-{self.ci_high})"


@dataclass(frozen=True, slots=True)
class PublishedStratum:
    """Outcomes the paper reports for one IChIS value (Tables 3 and 4).

    Medians are in days with the paper's 95% CI (SPSS, symmetric interval). Hazard ratios come from
    the multivariate Cox models against IChIS 0; ``None`` marks the reference stratum.
    """

    score: int
    median_pfs_days: Estimate
    median_os_days: Estimate
    pfs_hazard_ratio: Estimate | None
    os_hazard_ratio: Estimate | None
    label: str


def stratum_heading(stratum: PublishedStratum) -> str:
    return f"Published outcomes for IChIS {stratum.score}"


def stratum_outcomes(stratum: PublishedStratum) -> str:
    """The published numbers of a stratum in one sentence (after its heading), as the card and the
    app state them."""
    pfs, os_ = stratum.median_pfs_days, stratum.median_os_days
    text = (
        "(Kang et al. 2024, Tables 3 and 4; 95% CI as published): "
        f"median progression-free survival {pfs.value} days ({pfs.ci_low}-{pfs.ci_high}), "
        f"median overall survival {os_.value} days ({os_.ci_low}-{os_.ci_high})"
    )
    if stratum.os_hazard_ratio and stratum.pfs_hazard_ratio:
        os_hr, pfs_hr = stratum.os_hazard_ratio, stratum.pfs_hazard_ratio
        text += (
            f"; hazard ratio vs IChIS 0 for death {os_hr.value} ({os_hr.ci_low}-{os_hr.ci_high}), "
            f"for progression {pfs_hr.value} ({pfs_hr.ci_low}-{pfs_hr.ci_high})"
        )
    else:
        text += "; the reference stratum of the hazard ratios"
    return text + "."


def _e(value: str, low: str, high: str) -> Estimate:
    return Estimate(Decimal(value), Decimal(low), Decimal(high))


#: Tables 3 and 4 of the paper. The PFS HR for IChIS 2 is printed as 3.213 (0.493-6.912): a lower
#: bound below 1 alongside p=0.011 looks like a typesetting error in the source, but we reproduce
#: the publication rather than correct it.
PUBLISHED_STRATA: dict[int, PublishedStratum] = {
    0: PublishedStratum(
        score=0,
        median_pfs_days=_e("120", "85.8", "154.2"),
        median_os_days=_e("305", "203.1", "406.9"),
        pfs_hazard_ratio=None,
        os_hazard_ratio=None,
        label="longest survival of the three strata",
    ),
    1: PublishedStratum(
        score=1,
        median_pfs_days=_e("58", "49.8", "66.2"),
        median_os_days=_e("203", "68.2", "337.8"),
        pfs_hazard_ratio=_e("1.239", "0.780", "1.968"),
        os_hazard_ratio=_e("1.476", "0.896", "2.431"),
        label="intermediate survival",
    ),
    2: PublishedStratum(
        score=2,
        median_pfs_days=_e("30", "0.0", "64.6"),
        median_os_days=_e("54", "0.0", "126.1"),
        pfs_hazard_ratio=_e("3.213", "0.493", "6.912"),
        os_hazard_ratio=_e("6.108", "2.766", "13.487"),
        label="shortest survival of the three strata",
    ),
}

#: Whole cohort (Results, section 2), for context next to the strata.
WHOLE_COHORT_MEDIAN_PFS_DAYS = _e("89", "56.3", "121.7")
WHOLE_COHORT_MEDIAN_OS_DAYS = _e("250", "197.4", "302.6")
