"""The whole pipeline recovers the published medians from a large synthetic cohort (n = 20,000).

The generator draws exponential times with the published medians of Tables 3 and 4 (Kang et al.
2024); the cohort is written as NDJSON, extracted with DuckDB through the CDS service's own scoring,
and analysed with Kaplan-Meier. Tolerance: four standard errors of a Kaplan-Meier median plus one day
(times are whole days). For exponential data the standard error of log(median) is 1/sqrt(events);
Kaplan-Meier is less efficient than that bound, so 1.25/sqrt(events) is used.
"""

from __future__ import annotations

import math
from datetime import date

import pandas as pd
import pytest

from cohort.analysis import kaplan_meier, prepare
from cohort.definition import load_definition
from cohort.engines import DuckDBEngine
from cohort.extract import extract_rows
from cohort.sources import discover
from cohort.synth import SynthOptions, write_cohort
from ichis.reference import PUBLISHED_STRATA

N = 20_000
CUTOFF = date(2024, 12, 31)  # two years after the last first dose: most medians are well observed


@pytest.fixture(scope="module")
def large_table(tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    folder = tmp_path_factory.mktemp("large-synthetic")
    write_cohort(folder, N, seed=2024, cutoff=CUTOFF, options=SynthOptions(labs_per_cycle=False))
    with DuckDBEngine() as engine:
        rows = list(extract_rows(engine, discover([folder]), load_definition({}, CUTOFF)))
    return pd.DataFrame(rows)


def tolerance(median: float, events: int) -> float:
    return 4 * median * 1.25 / math.sqrt(events) + 1


@pytest.mark.parametrize("endpoint", ["pfs", "os"])
@pytest.mark.parametrize("stratum", [0, 1, 2])
def test_the_pipeline_recovers_the_published_median(
    large_table: pd.DataFrame, endpoint: str, stratum: int
) -> None:
    """Median PFS and OS per IChIS stratum lie within sampling error of Tables 3 and 4."""
    data = prepare(large_table, endpoint)
    rows = data[data["ichis"] == str(stratum)]
    published = PUBLISHED_STRATA[stratum]
    expected = float((published.median_pfs_days if endpoint == "pfs" else published.median_os_days).value)
    median = kaplan_meier(rows["duration"], rows["event"])
    assert median.value is not None
    assert expected == pytest.approx(median.value, abs=tolerance(expected, int(rows["event"].sum())))


def test_almost_every_synthetic_patient_is_scored(large_table: pd.DataFrame) -> None:
    """Only the 3% drawn without a usable baseline blood count lack a complete IChIS."""
    complete = (large_table["ichis_status"] == "complete").mean()
    assert 0.96 < complete < 0.98
