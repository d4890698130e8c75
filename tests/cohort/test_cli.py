"""`ichis cohort` as a user runs it: synth, extract, analyze; one-line errors with exit codes."""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ichis_cli.main import main


def ichis(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - our own command with test arguments
        [sys.executable, "-m", "ichis_cli", "cohort", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder where the three commands of the README ran one after the other."""
    root = tmp_path_factory.mktemp("cli")
    for args in (
        ["synth", "--out", str(root / "ndjson"), "-n", "143", "--seed", "3", "--gzip"],
        ["extract", str(root / "ndjson"), "--cutoff", "2023-08-31", "--out", str(root / "table")],
        ["analyze", str(root / "table"), "--out", str(root / "report"), "--bootstrap", "50"],
    ):
        done = ichis(*args)
        assert done.returncode == 0, done.stderr
    return root


def test_the_three_commands_write_the_documented_files(pipeline: Path) -> None:
    """Gzipped NDJSON in, Parquet and CSV table, CSV and Markdown tables, PNG and SVG plots, one HTML."""
    written = {p.relative_to(pipeline).as_posix() for p in pipeline.rglob("*") if p.is_file()}
    expected = {
        "table/cohort.parquet",
        "table/cohort.csv",
        "report/table3_pfs.csv",
        "report/table4_os.csv",
        "report/tables.md",
        "report/km_pfs.png",
        "report/km_os.svg",
        "report/report.html",
    }
    assert expected <= written
    assert any(name.endswith(".ndjson.gz") for name in written)


def test_extract_says_what_it_found_on_standard_output(tmp_path: Path, pipeline: Path) -> None:
    """The summary names the table, the cohort size and that the data are synthetic."""
    done = ichis(
        "extract",
        str(pipeline / "ndjson"),
        "--cutoff",
        "2023-08-31",
        "--out",
        str(tmp_path),
        "--format",
        "csv",
    )
    assert done.returncode == 0, done.stderr
    expected = ["cohort table", "patients with a first", "SYNTHETIC DATA"]
    assert expected == [
        line[: len(start)] for line, start in zip(done.stdout.splitlines(), expected, strict=False)
    ]
    assert not (tmp_path / "cohort.parquet").exists()


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (
            ["extract", "/nonexistent", "--cutoff", "2023-08-31", "--out", "{tmp}"],
            3,
            "no such file or folder",
        ),
        (["extract", "--cutoff", "2023-08-31", "--out", "{tmp}"], 2, "give NDJSON files or folders"),
        (["extract", "x", "--cutoff", "31.08.2023", "--out", "{tmp}"], 2, "is not a date"),
        (
            ["extract", "{tmp}", "--cutoff", "2023-08-31", "--out", "{tmp}", "--config", "/nonexistent.toml"],
            4,
            "cannot read configuration",
        ),
        (["analyze", "/nonexistent.parquet", "--out", "{tmp}"], 3, "cannot read the cohort table"),
        (["extract", "{tmp}", "--cutoff", "9999-12-31", "--out", "{tmp}"], 2, "is in the future"),
        (["synth", "--out", "{tmp}", "-n", "0"], 2, "-n must be at least 1"),
        (
            [
                "extract",
                "--fhir-server",
                "http://127.0.0.1:9/fhir",
                "--cutoff",
                "2023-08-31",
                "--out",
                "{tmp}",
            ],
            5,
            "failed",
        ),
    ],
)
def test_errors_are_one_line_with_an_exit_code(
    args: list[str], code: int, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Wrong usage 2, unreadable input 3, bad configuration 4, server failure 5; never a traceback."""
    actual = main(["cohort", *(a.replace("{tmp}", str(tmp_path)) for a in args)])
    err = capsys.readouterr().err
    assert (code, True) == (actual, message in err)
    assert "Traceback" not in err
    assert len([line for line in err.splitlines() if line.startswith("ichis cohort")]) == 1


def test_a_bad_cohort_setting_is_named_in_the_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An unknown follow_up value is reported with the setting's name and exit code 4."""
    config = tmp_path / "site.toml"
    config.write_text('[cohort]\nfollow_up = "forever"\n', encoding="utf-8")
    code = main(
        [
            "cohort",
            "extract",
            str(tmp_path),
            "--cutoff",
            "2023-08-31",
            "--out",
            str(tmp_path),
            "--config",
            str(config),
        ]
    )
    assert (code, capsys.readouterr().err.split(":")[1].strip()) == (4, "cohort.follow_up")


@pytest.mark.parametrize("command", ["synth", "extract", "analyze"])
def test_an_output_folder_that_cannot_be_made_is_one_line_with_exit_code_1(
    command: str, pipeline: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder", encoding="utf-8")
    out = str(blocker / "out")
    args = {
        "synth": ["synth", "--out", out, "-n", "3"],
        "extract": ["extract", str(pipeline / "ndjson"), "--cutoff", "2023-08-31", "--out", out],
        "analyze": ["analyze", str(pipeline / "table"), "--out", out],
    }[command]
    code = main(["cohort", *args])
    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith(f"ichis cohort: cannot write {blocker / 'out'}: ")
    assert "Traceback" not in err


def test_extract_names_the_files_it_read_without_their_byte_order_mark(
    pipeline: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The same table as without the mark, and one line per file that had it."""
    marked = tmp_path / "ndjson"
    shutil.copytree(pipeline / "ndjson", marked)
    patients = next(marked.glob("Patient*.ndjson.gz"))
    patients.write_bytes(gzip.compress(b"\xef\xbb\xbf" + gzip.decompress(patients.read_bytes())))
    args = ["extract", str(marked), "--cutoff", "2023-08-31", "--format", "csv", "--out"]
    assert main(["cohort", *args, str(tmp_path / "table")]) == 0
    said = capsys.readouterr().out
    assert f"read without the byte-order mark it starts with: {patients.name}" in said.splitlines()
    table = (tmp_path / "table" / "cohort.csv").read_text(encoding="utf-8")
    assert table == (pipeline / "table" / "cohort.csv").read_text(encoding="utf-8")


def test_extract_says_who_it_left_out_and_why(tmp_path: Path) -> None:
    """Patients seen, with a first dose, and each reason for leaving one out: on standard error and
    in extraction-summary.json (the counts of a flow diagram)."""
    assert (
        ichis(
            "synth", "--out", str(tmp_path / "in"), "-n", "20", "--seed", "4", "--bystanders", "5"
        ).returncode
        == 0
    )
    done = ichis("extract", str(tmp_path / "in"), "--cutoff", "2023-08-31", "--out", str(tmp_path / "table"))
    assert done.returncode == 0, done.stderr
    summary = json.loads((tmp_path / "table" / "extraction-summary.json").read_text())
    assert (
        summary["patients_seen"],
        summary["left_out"]["no checkpoint-inhibitor order or administration"],
    ) == (25, 5)
    assert summary["patients_seen"] == summary["with_first_dose"] + sum(summary["left_out"].values())
    assert "patients seen: 25" in done.stderr
    assert "left out: 5 patient(s): no checkpoint-inhibitor order or administration" in done.stderr


def test_a_cutoff_before_every_dose_leaves_nothing_to_analyse_and_analyze_says_so(tmp_path: Path) -> None:
    """Every first dose after the cut-off: no row; `cohort analyze` then exits 6 with its sentence."""
    assert ichis("synth", "--out", str(tmp_path / "in"), "-n", "10", "--seed", "5").returncode == 0
    done = ichis("extract", str(tmp_path / "in"), "--cutoff", "2001-01-01", "--out", str(tmp_path / "table"))
    assert done.returncode == 0, done.stderr
    summary = json.loads((tmp_path / "table" / "extraction-summary.json").read_text())
    assert (summary["with_first_dose"], summary["left_out"]) == (
        0,
        {"first checkpoint-inhibitor dose after the cut-off": 10},
    )
    analysed = ichis("analyze", str(tmp_path / "table"), "--out", str(tmp_path / "report"))
    assert analysed.returncode == 6
    assert (
        "nothing to analyse for PFS: no patient has both a complete IChIS and a follow-up time"
        in analysed.stderr
    )
    assert "Traceback" not in analysed.stderr
