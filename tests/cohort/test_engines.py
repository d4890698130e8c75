"""One extraction plan, two engines: DuckDB and Spark build the same table, and it is the right one."""

from __future__ import annotations

import csv
import gzip
import json
import re
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from cohort.definition import CohortDefinition
from cohort.engines import DuckDBEngine, SparkEngine
from cohort.errors import CohortInputError
from cohort.extract import ExtractionSummary, extract_rows
from cohort.plan import (
    DUCKDB,
    RESOURCE_TYPES,
    SPARK,
    dose_candidates,
    last_contacts,
    patient_resources,
    view_of,
)
from cohort.sources import discover
from tests.cohort.conftest import administration, count, rxnorm


def table(
    engine: DuckDBEngine | SparkEngine, folder: Path, definition: CohortDefinition
) -> list[dict[str, Any]]:
    return sorted(extract_rows(engine, discover([folder]), definition), key=lambda r: r["patient_id"])


@pytest.fixture(scope="module")
def duckdb_rows(small_cohort: Path) -> list[dict[str, Any]]:
    from cohort.definition import load_definition
    from tests.cohort.conftest import CUTOFF

    with DuckDBEngine() as engine:
        return table(engine, small_cohort, load_definition({}, CUTOFF))


def test_duckdb_and_spark_build_the_same_table(
    duckdb_rows: list[dict[str, Any]], small_cohort: Path, spark: SparkEngine, definition: CohortDefinition
) -> None:
    """Every column of every row is equal, from the same NDJSON (plain and gzipped files)."""
    assert duckdb_rows == table(spark, small_cohort, definition)


def test_rows_built_in_worker_processes_equal_the_rows_built_in_one(
    duckdb_rows: list[dict[str, Any]], small_cohort: Path, definition: CohortDefinition
) -> None:
    """Scoring on every core changes no value and no order (a large cohort's default)."""
    with DuckDBEngine() as engine:
        rows = list(extract_rows(engine, discover([small_cohort]), definition, workers=2))
    assert duckdb_rows == rows


def test_rows_are_still_built_when_a_worker_process_is_killed(
    small_cohort: Path, definition: CohortDefinition
) -> None:
    """A worker killed from outside (the out-of-memory killer, an operator) costs time, not rows."""
    from cohort.extract import first_doses
    from cohort.plan import RESOURCE_TYPES, view_of
    from cohort.records import patient_row
    from cohort.scoring import Scorer
    from tests.cohort.test_narrowing import every_resource_by_patient

    sources = discover([small_cohort])
    with DuckDBEngine() as engine:
        for kind in RESOURCE_TYPES:
            engine.lines(view_of(kind), sources.files.get(kind, []))
        doses = list(first_doses(engine, definition))
    everything = every_resource_by_patient(small_cohort)
    work = [(dose, everything.get(dose.patient, []), None) for dose in doses]
    with Scorer(definition, workers=2) as scorer:
        for process in list(scorer._pool._processes.values()):  # type: ignore[union-attr]  # started by now
            process.kill()
        rows = [row for _, row in scorer.rows(work)]
        assert scorer._broken
    assert rows == [patient_row(dose, lines, definition, None) for dose, lines, _ in work]


CLAUSES = re.compile(
    r"\b(WITH|SELECT|FROM|JOIN|LEFT JOIN|ON|WHERE|BETWEEN|UNION ALL|GROUP BY|ORDER BY|OVER)\b"
)


@pytest.mark.parametrize("build", [dose_candidates, patient_resources, last_contacts])
def test_the_plan_is_one_text_with_a_few_dialect_functions(build: Any, definition: CohortDefinition) -> None:
    """Both engines run the same statements clause for clause; only functions are spelled per dialect."""
    duck, spark = build(definition, DUCKDB), build(definition, SPARK)
    assert CLAUSES.findall(duck) == CLAUSES.findall(spark)
    assert duck != spark


def _build_sides(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The build side (DuckDB builds a hash table of its second child) of every join of a plan."""
    if node["name"] == "HASH_JOIN":
        yield node["children"][1]
    for child in node["children"]:
        yield from _build_sides(child)


def _reads(node: dict[str, Any]) -> int:
    """How many input files' scans (read_json_objects) a plan reads below this node."""
    return (node["name"] == "READ_JSON_OBJECTS") + sum(_reads(child) for child in node["children"])


@pytest.mark.parametrize(
    ("build", "medications"), [(dose_candidates, 1), (patient_resources, 0), (last_contacts, 0)]
)
def test_duckdb_builds_no_hash_table_of_the_input(
    build: Any, medications: int, small_cohort: Path, definition: CohortDefinition
) -> None:
    """Joins hold the cohort's patients (or the Medications) in memory and stream the input through:
    DuckDB's guess of a few hundred rows per input file once made 0.9 million Observation lines
    per 2.5 million the hash table of a join, memory that grew with the export."""
    sources = discover([small_cohort])
    with DuckDBEngine() as engine:
        for kind in RESOURCE_TYPES:
            engine.lines(view_of(kind), sources.files.get(kind, []))
        # More patients than DuckDB guesses lines in an input file, as in a real cohort.
        engine.table("cohort_patients", [(f"p{n}", date(2022, 3, 2)) for n in range(10_000)])
        explained = engine._con.execute(f"EXPLAIN (FORMAT json) {build(definition, DUCKDB)}").fetchall()
    plan = json.loads(explained[0][1])[0]
    sides = list(_build_sides(plan))
    assert sides
    # The dose query's one join builds on the Medication file; the others on cohort_patients.
    assert [_reads(side) for side in sides] == [medications] * len(sides)


def truth(folder: Path) -> dict[str, dict[str, str]]:
    with (folder / "synthetic-truth.csv").open(encoding="utf-8") as handle:
        return {row["patient_id"]: row for row in csv.DictReader(handle)}


def test_every_synthetic_patient_lands_in_the_stratum_it_was_drawn_in(
    duckdb_rows: list[dict[str, Any]], small_cohort: Path
) -> None:
    """IChIS, PFS and OS in the table equal the generator's truth for each patient with a baseline."""
    known = truth(small_cohort)
    checked = 0
    for row in duckdb_rows:
        expected = known.get(row["patient_id"])
        if expected is None:
            continue
        scored = expected["baseline"] == "complete"
        assert (int(expected["stratum"]) if scored else None) == row["ichis"], row["patient_id"]
        outcome = [int(expected[k]) for k in ("pfs_days", "pfs_event", "os_days", "os_event")]
        assert outcome == [row["pfs_days"], row["pfs_event"], row["os_days"], row["os_event"]]
        checked += 1
    assert len(known) == checked


def test_edge_cases_take_the_documented_paths(duckdb_rows: list[dict[str, Any]]) -> None:
    """Panel members take the panel's time; an entered-in-error dose is skipped; IG% x WBC is exact."""
    rows = {r["patient_id"]: r for r in duckdb_rows}
    panel, order = rows["edge-panel"], rows["edge-order"]
    assert (date(2022, 3, 2), 2, "9500", "90", 72) == (
        panel["first_ici_date"],
        panel["ichis"],
        panel["neutrophils_per_uL"],
        panel["ig_per_uL"],
        panel["age_years"],
    )
    # 0.8 % x 10.00 x10^3/uL = 80/uL exactly: not above 80 (binary floats say 80.00000000000001).
    assert (
        order["ici_agent"],
        order["ici_source"],
        order["ig_per_uL"],
        order["ig_derived"],
        order["ig_points"],
        order["ichis"],
    ) == ("atezolizumab", "MedicationRequest/edge-order-1", "80", True, 0, 0)
    assert (order["pfs_days"], order["pfs_event"], order["os_days"], order["os_event"]) == (113, 1, 113, 1)


ONE = '{"resourceType": "Observation"}'


@pytest.mark.parametrize(
    ("kind", "bad"),
    [
        ("MedicationAdministration", "{not json"),
        ("Observation", "{not json"),
        ("Observation", "null"),
        ("Observation", "42"),
        ("Observation", f"[{ONE}]"),
        ("Observation", f"{ONE} x"),
        ("Observation", f"{ONE} {ONE}"),
        ("Observation", f"{ONE}, {ONE}"),
        ("Observation", f"{ONE}]"),
        ("MedicationAdministration", f"{ONE} trailing text"),
    ],
)
def test_a_line_that_is_not_a_json_object_is_a_one_line_input_error(
    tmp_path: Path, definition: CohortDefinition, spark: SparkEngine, kind: str, bad: str
) -> None:
    """Malformed NDJSON, JSON that is no resource, or a line with more than one JSON value stops the
    extraction on both engines alike."""
    dose = administration("a", "Patient/p", "2022-03-02T10:30:00+09:00", **rxnorm("1547545"))
    (tmp_path / "MedicationAdministration.ndjson").write_text(json.dumps(dose) + "\n", encoding="utf-8")
    good = json.dumps(count("o", "Patient/p", "751-8", "9.5", "10*3/uL", when="2022-03-01"), default=float)
    (tmp_path / f"{kind}.1.ndjson").write_text(good + f"\n{bad}\n", encoding="utf-8")
    with DuckDBEngine() as engine, pytest.raises(CohortInputError):
        table(engine, tmp_path, definition)
    with pytest.raises(CohortInputError):
        table(spark, tmp_path, definition)


@pytest.mark.parametrize(
    "lenient",
    [
        lambda good: good[:-1] + ', "note": NaN}',
        lambda good: good[:-1] + ', "note": Infinity}',
        lambda good: good[:-1] + ",}",
        lambda good: good.replace('"', "'"),
    ],
    ids=["NaN", "Infinity", "trailing comma", "single quotes"],
)
def test_a_lab_line_that_only_a_lenient_parser_reads_is_a_one_line_input_error_on_both_engines(
    tmp_path: Path, definition: CohortDefinition, spark: SparkEngine, lenient: Any
) -> None:
    """DuckDB's reader takes NaN, Infinity and trailing commas, Spark's takes single quotes; the
    row is built from the line read again by the service's strict parser, which refuses them all:
    the extraction stops with the resource named, not with a traceback."""
    dose = administration("a", "Patient/p", "2022-03-02T10:30:00+09:00", **rxnorm("1547545"))
    (tmp_path / "MedicationAdministration.ndjson").write_text(json.dumps(dose) + "\n", encoding="utf-8")
    first = json.dumps(count("o1", "Patient/p", "751-8", "9.5", "10*3/uL", when="2022-02-27"), default=float)
    good = json.dumps(count("o2", "Patient/p", "751-8", "9.5", "10*3/uL", when="2022-03-01"), default=float)
    (tmp_path / "Observation.1.ndjson").write_text(f"{first}\n{lenient(good)}\n", encoding="utf-8")
    with DuckDBEngine() as engine, pytest.raises(CohortInputError, match="JSON"):
        table(engine, tmp_path, definition)
    with pytest.raises(CohortInputError, match="JSON"):
        table(spark, tmp_path, definition)


def test_elements_of_the_wrong_json_type_are_read_alike_by_both_engines(
    tmp_path: Path, definition: CohortDefinition, spark: SparkEngine
) -> None:
    """A wrongly typed element is unreadable on its own, not the end of the extraction, on both engines."""
    patient = "Patient/p"
    dose = administration("a", patient, "2022-03-02T10:30:00+09:00", **rxnorm("1547545"))
    neutrophils = count("n", patient, "751-8", "9.5", "10*3/uL", when="2022-03-01T08:00:00+09:00")
    lines = [
        neutrophils
        | {"component": "x", "effectivePeriod": 5}
        | {"code": {"coding": ["x", 5, None, {"system": "http://loinc.org", "code": "751-8"}]}},
        count("ig", patient, "53115-2", "0.09", "10*3/uL", when="2022-03-01T08:00:00+09:00")
        | {"status": ["final"]},
        {
            "resourceType": "Observation",
            "id": "z",
            "code": "x",
            "subject": 5,
            "effectiveDateTime": {},
            "hasMember": 5,
        },
    ]
    # A panel whose hasMember holds a number besides its two members, which take the panel's time.
    other = "Patient/q"
    panel = {
        "resourceType": "Observation",
        "id": "q-cbc",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "57021-8"}]},
        "subject": {"reference": other},
        "effectiveDateTime": "2022-03-01T08:00:00+09:00",
        "hasMember": [5, {"reference": "Observation/q-n"}, {"reference": "Observation/q-ig"}],
    }
    lines += [
        panel,
        count("q-n", other, "751-8", "9.5", "10*3/uL", when=None),
        count("q-ig", other, "53115-2", "0.09", "10*3/uL", when=None),
    ]
    doses = [dose, administration("b", other, "2022-03-02T10:30:00+09:00", **rxnorm("1547545"))]
    (tmp_path / "MedicationAdministration.ndjson").write_text(
        "".join(json.dumps(d) + "\n" for d in doses), encoding="utf-8"
    )
    (tmp_path / "Observation.ndjson").write_text(
        "".join(json.dumps(r, default=float) + "\n" for r in lines), encoding="utf-8"
    )
    with DuckDBEngine() as engine:
        rows = table(engine, tmp_path, definition)
    assert [(r["neutrophils_per_uL"], r["ig_per_uL"], r["ichis_status"]) for r in rows] == [
        ("9500", None, "partial"),
        ("9500", "90", "complete"),
    ]
    assert "has no valid status" in rows[0]["baseline_reasons"]
    assert table(spark, tmp_path, definition) == rows


def test_the_summary_counts_the_cohort(small_cohort: Path, definition: CohortDefinition) -> None:
    """62 patients got a checkpoint inhibitor (60 synthetic, 2 edge cases), and every one has a row."""
    summary = ExtractionSummary()
    with DuckDBEngine() as engine:
        rows = list(extract_rows(engine, discover([small_cohort]), definition, summary))
    assert (summary.cohort_patients, len(rows), summary.synthetic_rows) == (62, 62, 60)


def scored_patient() -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """A first dose and the blood count the day before it: neutrophils 9,500/uL, IG# 90/uL (IChIS 2)."""
    patient = "Patient/p"
    return (
        administration("a", patient, "2022-03-02T10:30:00+09:00", **rxnorm("1547545")),
        count("n", patient, "751-8", "9.5", "10*3/uL", when="2022-03-01T08:00:00+09:00"),
        count("ig", patient, "53115-2", "0.09", "10*3/uL", when="2022-03-01T08:00:00+09:00"),
    )


def test_windows_line_ends_and_blank_lines_are_read_alike_by_both_engines(
    tmp_path: Path, definition: CohortDefinition, spark: SparkEngine
) -> None:
    """CRLF line ends, empty lines and lines of spaces between resources change nothing."""
    dose, neutrophils, ig = scored_patient()
    (tmp_path / "MedicationAdministration.ndjson").write_bytes(
        (json.dumps(dose) + "\r\n\r\n").encode("utf-8")
    )
    (tmp_path / "Observation.ndjson").write_bytes(
        (
            json.dumps(neutrophils, default=float)
            + "\r\n   \r\n\t\r\n"
            + json.dumps(ig, default=float)
            + "\r\n\r\n"
        ).encode("utf-8")
    )
    with DuckDBEngine() as engine:
        rows = table(engine, tmp_path, definition)
    assert [(r["neutrophils_per_uL"], r["ig_per_uL"], r["ichis"]) for r in rows] == [("9500", "90", 2)]
    assert table(spark, tmp_path, definition) == rows


def test_an_object_with_spaces_around_it_on_its_line_is_read_alike_by_both_engines(
    tmp_path: Path, definition: CohortDefinition, spark: SparkEngine
) -> None:
    """JSON whitespace before or after the object is no second value: Spark's line check takes
    the object by its closing brace, and only then looks past trailing spaces and tabs."""
    dose, neutrophils, ig = scored_patient()
    (tmp_path / "MedicationAdministration.ndjson").write_text(f"  {json.dumps(dose)}\t \n", encoding="utf-8")
    (tmp_path / "Observation.ndjson").write_text(
        f"{json.dumps(neutrophils, default=float)}   \n\t{json.dumps(ig, default=float)}\n", encoding="utf-8"
    )
    with DuckDBEngine() as engine:
        rows = table(engine, tmp_path, definition)
    assert [(r["neutrophils_per_uL"], r["ig_per_uL"], r["ichis"]) for r in rows] == [("9500", "90", 2)]
    assert table(spark, tmp_path, definition) == rows


def test_a_file_that_starts_with_a_byte_order_mark_is_read_without_it_by_both_engines(
    tmp_path: Path, definition: CohortDefinition, spark: SparkEngine
) -> None:
    """Windows tools save UTF-8 with a byte-order mark; RFC 8259 lets a parser ignore it, and we do,
    plain or gzipped, and say which files had one."""
    dose, neutrophils, ig = scored_patient()
    bom = b"\xef\xbb\xbf"
    (tmp_path / "MedicationAdministration.ndjson").write_bytes(bom + (json.dumps(dose) + "\n").encode())
    observations = "".join(json.dumps(r, default=float) + "\n" for r in (neutrophils, ig))
    (tmp_path / "Observation.ndjson.gz").write_bytes(gzip.compress(bom + observations.encode()))
    summary = ExtractionSummary()
    with DuckDBEngine() as engine:
        rows = list(extract_rows(engine, discover([tmp_path]), definition, summary))
    assert [(r["neutrophils_per_uL"], r["ig_per_uL"], r["ichis"]) for r in rows] == [("9500", "90", 2)]
    assert sorted(summary.bom_files) == ["MedicationAdministration.ndjson", "Observation.ndjson.gz"]
    assert table(spark, tmp_path, definition) == rows


def test_last_contact_follow_up_counts_events_and_skips_withdrawn_records_on_both_engines(
    tmp_path: Path, spark: SparkEngine
) -> None:
    """With follow_up = "last-contact": a recorded progression is contact (so it is counted as an
    event, not left beyond the end of follow-up); a result entered in error and an administration
    not done are no contact."""
    from cohort.definition import load_definition
    from tests.cohort.conftest import CUTOFF

    site = {
        "cohort": {
            "follow_up": "last-contact",
            "progression": {
                "rules": [{"resource": "Condition", "codes": [{"system": "urn:x", "code": "PD"}]}]
            },
        }
    }
    definition = load_definition(site, CUTOFF)
    patient = "Patient/p"
    given = administration("a", patient, "2023-02-01T10:00:00+09:00", **rxnorm("1547545"))
    skipped = administration(
        "b", patient, "2023-07-01T10:00:00+09:00", status="not-done", **rxnorm("1547545")
    )
    seen = count("n", patient, "751-8", "9.5", "10*3/uL", when="2023-03-01T08:00:00+09:00")
    withdrawn = count("w", patient, "751-8", "9.5", "10*3/uL", when="2023-06-10T08:00:00+09:00") | {
        "status": "entered-in-error"
    }
    progression = {
        "resourceType": "Condition",
        "id": "pd",
        "subject": {"reference": patient},
        "code": {"coding": [{"system": "urn:x", "code": "PD"}]},
        "onsetDateTime": "2023-05-01",
    }
    (tmp_path / "MedicationAdministration.ndjson").write_text(
        "".join(json.dumps(r) + "\n" for r in (given, skipped)), encoding="utf-8"
    )
    (tmp_path / "Observation.ndjson").write_text(
        "".join(json.dumps(r, default=float) + "\n" for r in (seen, withdrawn)), encoding="utf-8"
    )
    (tmp_path / "Condition.ndjson").write_text(json.dumps(progression) + "\n", encoding="utf-8")
    with DuckDBEngine() as engine:
        rows = table(engine, tmp_path, definition)
    (row,) = rows
    assert (row["follow_up_end"], row["pfs_days"], row["pfs_event"], row["os_days"], row["os_event"]) == (
        date(2023, 5, 1),
        89,
        1,
        89,
        0,
    )
    assert table(spark, tmp_path, definition) == rows


def test_a_registry_entry_of_a_death_counts_as_contact_on_the_day_of_death_not_the_day_it_was_typed(
    tmp_path: Path, spark: SparkEngine
) -> None:
    """With follow_up = "last-contact", an event Observation is dated as the row builder dates it (its
    valueDateTime first), on both engines: a death typed in during follow-up with a date before the
    first dose (a data error the notes name) does not extend follow-up to the day it was typed."""
    from cohort.definition import load_definition
    from tests.cohort.conftest import CUTOFF
    from tests.cohort.test_narrowing import SITE, registry_death

    definition = load_definition({"cohort": {**SITE["cohort"], "follow_up": "last-contact"}}, CUTOFF)
    patient = "Patient/p"
    given = administration("a", patient, "2023-02-01T10:00:00+09:00", **rxnorm("1547545"))
    seen = count("n", patient, "751-8", "9.5", "10*3/uL", when="2023-03-01T08:00:00+09:00")
    typed_in = registry_death(
        "death", patient, effectiveDateTime="2023-06-20T10:00:00+09:00", valueDateTime="2021-02-03"
    )
    (tmp_path / "MedicationAdministration.ndjson").write_text(json.dumps(given) + "\n", encoding="utf-8")
    (tmp_path / "Observation.ndjson").write_text(
        "".join(json.dumps(r, default=float) + "\n" for r in (seen, typed_in)), encoding="utf-8"
    )
    with DuckDBEngine() as engine:
        rows = table(engine, tmp_path, definition)
    (row,) = rows
    assert (row["follow_up_end"], row["os_days"], row["os_event"]) == (date(2023, 3, 1), None, None)
    assert "a death dated 2021-02-03 before the first dose" in row["notes"]
    assert table(spark, tmp_path, definition) == rows


def test_a_drug_name_outside_ascii_is_found_when_the_json_escapes_it(
    tmp_path: Path, spark: SparkEngine
) -> None:
    """A site names its drugs in its language; exports may write them as \\u escapes, and the
    engines' text pre-filter reads raw lines."""
    from cohort.definition import load_definition
    from tests.cohort.conftest import CUTOFF

    site = {"checkpoint_inhibitors": {"pembrolizumab": {"names": ["키트루다"]}}}
    definition = load_definition(site, CUTOFF)
    given = administration(
        "a", "Patient/p", "2023-02-01T10:00:00+09:00", medicationCodeableConcept={"text": "키트루다 200mg"}
    )
    line = json.dumps(given)  # ensure_ascii: the name is written as \uXXXX escapes
    assert "\\ud0a4" in line
    (tmp_path / "MedicationAdministration.ndjson").write_text(line + "\n", encoding="utf-8")
    with DuckDBEngine() as engine:
        rows = table(engine, tmp_path, definition)
    assert [(r["patient_id"], r["ici_agent"]) for r in rows] == [("p", "pembrolizumab")]
    assert table(spark, tmp_path, definition) == rows


def test_a_malformed_line_in_a_file_with_a_byte_order_mark_is_named_by_the_original_file(
    tmp_path: Path, definition: CohortDefinition
) -> None:
    """The engines read a copy without the mark; the error names the file the user gave."""
    dose = administration("a", "Patient/p", "2022-03-02T10:30:00+09:00", **rxnorm("1547545"))
    marked = tmp_path / "MedicationAdministration.ndjson"
    marked.write_bytes(b"\xef\xbb\xbf" + (json.dumps(dose) + "\n{not json\n").encode())
    with DuckDBEngine() as engine, pytest.raises(CohortInputError) as raised:
        table(engine, tmp_path, definition)
    assert f"{marked} (read without its byte-order mark)" in str(raised.value)
    assert "ichis-bom-" not in str(raised.value)
