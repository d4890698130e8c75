"""The synthetic cohort: labelled synthetic everywhere, deterministic, and calibrated to the strata."""

from __future__ import annotations

import csv
import json
import math
from collections import Counter
from datetime import date
from pathlib import Path

import pytest

from cohort.codes import SYNTHETIC_TAG
from cohort.synth import STRATA, SynthOptions, simulate, write_cohort

CUTOFF = date(2023, 8, 31)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("synth")
    write_cohort(path, 143, seed=1, cutoff=CUTOFF)
    return path


def test_every_resource_carries_the_synthetic_tag(folder: Path) -> None:
    """HL7 ActReason HTEST ("test health data") on each resource; Patients are named synthetic."""
    tags, names = set(), set()
    for path in folder.glob("*.ndjson"):
        for line in path.read_text(encoding="utf-8").splitlines():
            resource = json.loads(line)
            tags.add(tuple((t["system"], t["code"]) for t in resource["meta"]["tag"]))
            if resource["resourceType"] == "Patient":
                names.add(resource["name"][0]["text"].split(" ")[0])
    assert ({(SYNTHETIC_TAG,)}, {"Synthetic"}) == (tags, names)


def test_the_folder_says_it_is_synthetic(folder: Path) -> None:
    """A README and a truth table, both marked synthetic, sit beside the NDJSON."""
    with (folder / "synthetic-truth.csv").open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert ({"true"}, 143) == ({r["synthetic"] for r in rows}, len(rows))
    assert (folder / "SYNTHETIC-README.txt").read_text(encoding="utf-8").startswith("SYNTHETIC DATA")


def test_the_same_seed_writes_the_same_files(folder: Path, tmp_path: Path) -> None:
    """Deterministic for a seed, so tests and demos are reproducible."""
    write_cohort(tmp_path, 143, seed=1, cutoff=CUTOFF)
    for path in folder.glob("*.ndjson"):
        assert path.read_bytes() == (tmp_path / path.name).read_bytes()


def test_stratum_shares_are_plausible_for_the_papers_cohort() -> None:
    """About 65% / 27% / 8% of patients in IChIS 0 / 1 / 2 (binomial 4-sigma bounds on n = 20,000)."""
    n = 20_000
    counts = Counter(p.stratum for p in simulate(n, seed=4, cutoff=CUTOFF))
    for stratum in STRATA:
        sigma = math.sqrt(n * stratum.share * (1 - stratum.share))
        assert abs(counts[stratum.score] - n * stratum.share) < 4 * sigma


def test_progression_never_comes_after_death() -> None:
    """PFS is never longer than OS, and a recorded progression precedes any death."""
    for p in simulate(2000, seed=9, cutoff=CUTOFF):
        assert p.pfs_days <= p.os_days
        if p.progression_day and p.death_day:
            assert p.progression_day < p.death_day


def test_benchmark_options_add_volume_without_changing_the_cohort(tmp_path: Path) -> None:
    """Vital signs and patients without a checkpoint inhibitor only add Observations and Patients."""
    summary = write_cohort(
        tmp_path,
        5,
        seed=1,
        cutoff=CUTOFF,
        options=SynthOptions(extra_observations=10, patients_without_ici=3),
    )
    plain = write_cohort(tmp_path / "plain", 5, seed=1, cutoff=CUTOFF)
    assert (8, summary.resources["Condition"]) == (summary.resources["Patient"], plain.resources["Condition"])
    assert summary.resources["Observation"] > plain.resources["Observation"] + 50
