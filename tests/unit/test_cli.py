"""`ichis score` as a user runs it: golden files in, JSON out, one-line errors with exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

GOLDEN = Path(__file__).parent.parent / "golden"
CASES = tomllib.loads((GOLDEN / "cases.toml").read_text())


def ichis(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - our own command with test arguments
        [sys.executable, "-m", "ichis_cli", *args],
        capture_output=True,
        text=True,
        input=stdin,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("name", sorted(CASES))
def test_golden_files(name: str) -> None:
    """A realistic record scores exactly as the reviewed expected output says."""
    source = next(GOLDEN.glob(f"{name}.input.*"))
    done = ichis("score", str(source), "--at", CASES[name]["at"])
    assert done.returncode == 0, done.stderr
    actual = json.loads(done.stdout)
    expected_file = GOLDEN / f"{name}.expected.json"
    if os.environ.get("UPDATE_GOLDEN"):
        expected_file.write_text(json.dumps(actual, indent=2, ensure_ascii=False) + "\n")
    assert json.loads(expected_file.read_text()) == actual


def test_standard_input_is_read_with_a_dash() -> None:
    done = ichis(
        "score",
        "-",
        "--at",
        "2024-03-01T10:00:00+09:00",
        stdin=(GOLDEN / "ichis2_searchset.input.json").read_text(),
    )
    assert json.loads(done.stdout)["ichis"] == 2


def test_the_reference_time_defaults_to_now(tmp_path: Path) -> None:
    empty = tmp_path / "empty.json"
    empty.write_text('{"resourceType": "Patient", "id": "p1"}')
    out = json.loads(ichis("score", str(empty)).stdout)
    assert out["status"] == "unavailable"
    assert out["reference_time"].endswith("+00:00")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "the input is empty"),
        ("{not json", "not valid JSON"),
        ('{"resourceType": "Bundle", "entry": {"x": 1}}', "Bundle.entry must be a list"),
        ("[1, 2]", "expected a FHIR resource or Bundle"),
        ('{"resourceType":"Patient"}\n{broken', "NDJSON line 2 is not valid JSON"),
        ('{"a": 1}\n{"b": 2}', "NDJSON line 1: expected a FHIR resource"),
    ],
)
def test_malformed_input_exits_3_with_one_line_and_no_traceback(
    tmp_path: Path, content: str, message: str
) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    done = ichis("score", str(bad), "--at", "2024-03-01T00:00:00Z")
    assert done.returncode == 3
    assert message in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert "Traceback" not in done.stderr


def test_a_file_with_a_byte_order_mark_is_read_without_it(tmp_path: Path) -> None:
    """Windows tools save UTF-8 with a byte-order mark; RFC 8259 lets a parser ignore it."""
    marked = tmp_path / "marked.json"
    marked.write_bytes(b"\xef\xbb\xbf" + (GOLDEN / "ichis2_searchset.input.json").read_bytes())
    done = ichis("score", str(marked), "--at", "2024-03-01T10:00:00+09:00")
    assert (done.returncode, json.loads(done.stdout)["ichis"]) == (0, 2)


@pytest.mark.parametrize(("severity", "code"), [("error", 3), ("fatal", 3), ("warning", 0)])
def test_a_bundle_that_carries_an_error_outcome_is_not_scored(
    tmp_path: Path, severity: str, code: int
) -> None:
    """A server's error OperationOutcome beside the results says they may be partial."""
    bundle = json.loads((GOLDEN / "ichis2_searchset.input.json").read_text())
    issue = {"severity": severity, "code": "incomplete", "diagnostics": "search stopped early"}
    outcome = {"resourceType": "OperationOutcome", "issue": [issue]}
    bundle["entry"].append({"resource": outcome, "search": {"mode": "outcome"}})
    saved = tmp_path / "partial.json"
    saved.write_text(json.dumps(bundle))
    done = ichis("score", str(saved), "--at", "2024-03-01T10:00:00+09:00")
    assert done.returncode == code
    if code:
        assert "error OperationOutcome (search stopped early)" in done.stderr
        assert len(done.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("value", ["9e999999999", "1e-400", "1e5000"])
def test_a_value_beyond_any_laboratory_range_is_reported_not_a_traceback(tmp_path: Path, value: str) -> None:
    """Such numbers overflowed the exact arithmetic or the display; now the result is unusable."""
    text = (GOLDEN / "ichis2_searchset.input.json").read_text()
    saved = tmp_path / "huge.json"
    saved.write_text(text.replace('"value": 12.34', f'"value": {value}'))
    done = ichis("score", str(saved), "--at", "2024-03-01T10:00:00+09:00")
    assert done.returncode == 0, done.stderr
    reasons = " ".join(json.loads(done.stdout)["reasons"])
    assert "out of any laboratory range" in reasons


def test_a_missing_file_exits_3(tmp_path: Path) -> None:
    done = ichis("score", str(tmp_path / "nope.json"))
    assert (done.returncode, "Traceback" in done.stderr) == (3, False)


def test_binary_input_exits_3(tmp_path: Path) -> None:
    bad = tmp_path / "bad.bin"
    bad.write_bytes(b"\xff\xfe\x00\x81")
    assert ichis("score", str(bad)).returncode == 3


@pytest.mark.parametrize("at", ["yesterday", "2024-03-01T10:00:00", "9999-12-31T23:59:59-05:00"])
def test_a_bad_reference_time_exits_2(at: str) -> None:
    done = ichis("score", str(GOLDEN / "stale_only.input.json"), "--at", at)
    assert done.returncode == 2
    assert "--at" in done.stderr


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ("baseline = [", "not valid TOML"),
        ("[baseline]\nlookback_days = -3", "lookback_days"),
        ("[baseline]\nnaive_time_zone = 'Mars/Olympus'", "unknown time zone"),
        ("[lab_codes.neutrophils]\nkind = 'weight'", "kind"),
    ],
)
def test_a_bad_configuration_exits_4(tmp_path: Path, config: str, message: str) -> None:
    site = tmp_path / "site.toml"
    site.write_text(config)
    done = ichis("score", str(GOLDEN / "stale_only.input.json"), "--config", str(site))
    assert done.returncode == 4
    assert message in done.stderr
    assert "Traceback" not in done.stderr


def test_usage_errors_exit_2() -> None:
    assert ichis("score").returncode == 2
    assert ichis("frobnicate").returncode == 2


def _two_patients(tmp_path: Path) -> Path:
    lines = []
    for patient, neut in (("p1", "12.0"), ("p2", "4.0")):
        lines.append(json.dumps({"resourceType": "Patient", "id": patient}))
        for code, value in (("751-8", neut), ("53115-2", "0.02")):
            lines.append(json.dumps({
                "resourceType": "Observation", "id": f"{patient}-{code}", "status": "final",
                "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
                "subject": {"reference": f"Patient/{patient}"},
                "effectiveDateTime": "2024-03-01T08:00:00Z",
                "valueQuantity": {"value": float(value), "unit": "10*3/uL"},
            }))  # fmt: skip
    path = tmp_path / "two.ndjson"
    path.write_text("\n".join(lines))
    return path


def test_a_file_of_several_patients_is_refused_unless_one_is_chosen(tmp_path: Path) -> None:
    """Results of two patients are never scored together."""
    path = _two_patients(tmp_path)
    refused = ichis("score", str(path), "--at", "2024-03-02T00:00:00Z")
    assert refused.returncode == 3
    assert "holds results of 2 patients; choose one with --patient ID" in refused.stderr
    first = json.loads(ichis("score", str(path), "--at", "2024-03-02T00:00:00Z", "--patient", "p1").stdout)
    second = json.loads(
        ichis("score", str(path), "--at", "2024-03-02T00:00:00Z", "--patient", "Patient/p2").stdout
    )
    assert (first["ichis"], second["ichis"]) == (1, 0)
    assert (first["patient"], len(first["left_out"]["other_patient"])) == ("Patient/p1", 2)
    assert "2 results of another patient were ignored" in "\n".join(first["reasons"])


def test_a_file_whose_results_name_no_patient_is_refused(tmp_path: Path) -> None:
    """A result without a subject cannot be told from another patient's: never scored."""
    lines = [json.loads(line) for line in _two_patients(tmp_path).read_text().splitlines()]
    lines = [r for r in lines if r["resourceType"] == "Observation"]
    for resource in lines:
        del resource["subject"]
    path = tmp_path / "anonymous.ndjson"
    path.write_text("\n".join(json.dumps(r) for r in lines))
    refused = ichis("score", str(path), "--at", "2024-03-02T00:00:00Z")
    assert refused.returncode == 3
    assert "names no patient" in refused.stderr
    chosen = json.loads(ichis("score", str(path), "--at", "2024-03-02T00:00:00Z", "--patient", "p1").stdout)
    assert (chosen["status"], len(chosen["left_out"]["no_subject"])) == ("unavailable", 4)


def test_relative_and_absolute_references_to_one_patient_are_one_patient(tmp_path: Path) -> None:
    """Patient/p1 and https://ehr.example/fhir/Patient/p1 are the same subject: the file is scored
    without --patient, and --patient keeps both results."""
    path = _two_patients(tmp_path)
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    one = [r for r in lines if r["id"].startswith("p1")]
    one[-1]["subject"]["reference"] = "https://ehr.example/fhir/Patient/p1"
    path.write_text("\n".join(json.dumps(r) for r in one))
    for extra in ([], ["--patient", "p1"]):
        done = ichis("score", str(path), "--at", "2024-03-02T00:00:00Z", *extra)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["status"] == "complete"


def test_loinc_is_recognised_under_its_oid() -> None:
    from fhir_mappings.config import load_mapping_config

    assert load_mapping_config().lookup("urn:oid:2.16.840.1.113883.6.1", "751-8") is not None


def test_a_site_code_written_under_another_loinc_spelling_matches_data_in_any_spelling() -> None:
    """A site that lists LOINC as its OID matches results coded http://loinc.org, and the reverse."""
    from fhir_mappings.config import load_mapping_config

    site = {
        "lab_codes": {
            "immature_granulocytes": {
                "codes": [{"system": "urn:oid:2.16.840.1.113883.6.1", "code": "99999-9"}]
            }
        }
    }
    config = load_mapping_config(site)
    for system in ("http://loinc.org", "urn:oid:2.16.840.1.113883.6.1", "https://loinc.org/"):
        found = config.lookup(system, "99999-9")
        assert found is not None, system
        assert found[0].name == "immature_granulocytes"


def test_a_reader_that_goes_away_ends_the_command_without_a_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`ichis score FILE | head`: the pipe closes before the JSON is written."""
    from ichis_cli.main import main

    read_end, write_end = os.pipe()
    os.close(read_end)
    with os.fdopen(write_end, "w") as closed_pipe:
        monkeypatch.setattr(sys, "stdout", closed_pipe)
        code = main(
            ["score", str(GOLDEN / "ichis2_searchset.input.json"), "--at", "2024-03-01T10:00:00+09:00"]
        )
        monkeypatch.undo()
    assert code == 1
    assert "Traceback" not in capsys.readouterr().err


def test_a_result_deleted_in_a_history_bundle_does_not_count(tmp_path: Path) -> None:
    """A history Bundle lists versions newest first; a DELETE entry removes the versions after it."""

    def version(number: str, neutrophils: str) -> dict[str, Any]:
        return {
            "fullUrl": "https://ehr.example/fhir/Observation/n1",
            "request": {"method": "PUT", "url": "Observation/n1"},
            "resource": {
                "resourceType": "Observation", "id": "n1", "status": "final",
                "meta": {"versionId": number},
                "code": {"coding": [{"system": "http://loinc.org", "code": "751-8"}]},
                "subject": {"reference": "Patient/p1"},
                "effectiveDateTime": "2024-03-01T08:00:00+09:00",
                "valueQuantity": {"value": float(neutrophils), "unit": "10*3/uL"},
            },
        }  # fmt: skip

    deletion = {"request": {"method": "DELETE", "url": "Observation/n1"}, "response": {"status": "204"}}
    deleted = [deletion, version("1", "12.0")]  # version 1, then deleted
    recreated = [version("3", "12.0"), deletion, version("1", "4.0")]  # deleted, then written again
    for entries, expected in ((deleted, None), (recreated, "12000")):
        saved = tmp_path / "history.json"
        saved.write_text(json.dumps({"resourceType": "Bundle", "type": "history", "entry": entries}))
        out = json.loads(ichis("score", str(saved), "--at", "2024-03-02T00:00:00Z", "--patient", "p1").stdout)
        assert out["parts"]["neutrophils"]["value_per_uL"] == expected
