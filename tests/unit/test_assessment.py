"""From FHIR Observations to IChIS: every mapping and baseline rule, one table of cases each."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from fhir_mappings.assessment import Assessment, assess, assessment_json
from fhir_mappings.config import load_mapping_config
from fhir_mappings.subjects import CallPatient
from ichis.measurement import plain
from ichis.score import Part
from tests.builders import IG_COUNT, IG_PERCENT, NEUT, WBC, entries, observation, quantity

AT = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)
DAY_BEFORE = "2024-02-29T09:00:00Z"
CONFIG = load_mapping_config()
#: The builders' default subject.
P1 = CallPatient("p1")


def run(*resources: dict[str, Any], at: datetime = AT, site: dict[str, Any] | None = None) -> Assessment:
    return assess(entries(*resources), at, load_mapping_config(site) if site else CONFIG, patient=P1)


def score_of(*resources: dict[str, Any], **kwargs: Any) -> tuple[int | None, int, int]:
    result = run(*resources, **kwargs).result
    return result.score, result.lower, result.upper


def neut(value: str, unit: str = "10*3/uL", oid: str = "n", **kw: Any) -> dict[str, Any]:
    kw.setdefault("effective", DAY_BEFORE)
    return observation(oid, NEUT, value, unit, **kw)


def ig(value: str, unit: str = "10*3/uL", oid: str = "i", **kw: Any) -> dict[str, Any]:
    kw.setdefault("effective", DAY_BEFORE)
    return observation(oid, IG_COUNT, value, unit, **kw)


def reasons(assessment: Assessment) -> str:
    return "\n".join(assessment.reasons)


# --- cut-offs through the whole path, in the units laboratories send ---------------------------


@pytest.mark.parametrize(
    ("neutrophils", "n_unit", "immature", "i_unit", "expected"),
    [
        ("9.0", "10*9/L", "0.08", "10*3/uL", 0),  # both exactly at the cut-off
        ("9000", "/uL", "80", "/uL", 0),
        ("9.01", "10*3/uL", "0.09", "10*3/uL", 2),
        ("9.00", "K/uL", "0.09", "x10E3/uL", 1),
        ("9.1", "G/L", "0.08", "G/L", 1),
        ("9100", "{cells}/uL", "81", "/mm3", 2),
        ("9.0", "/nL", "0.081", "/nL", 1),
    ],
)
def test_cutoffs_hold_in_every_unit(
    neutrophils: str, n_unit: str, immature: str, i_unit: str, expected: int
) -> None:
    """0.08 x10^3/uL is exactly 80/uL and scores 0; binary floats would say 80.000...01."""
    assert score_of(neut(neutrophils, n_unit), ig(immature, i_unit)) == (expected, expected, expected)


def test_a_quantity_with_only_unit_text_and_no_code_is_read() -> None:
    text_only = observation(
        "i", IG_COUNT, None, effective=DAY_BEFORE, quantity=quantity("0.09", "x10^3/uL", code=None)
    )
    assert score_of(neut("5.0"), text_only) == (1, 1, 1)


def test_an_unknown_unit_is_reported_for_that_value_and_leaves_the_part_unknown() -> None:
    assessment = run(neut("5.0"), ig("0.09", "Tsd/µl"))
    assert (assessment.result.score, assessment.result.lower, assessment.result.upper) == (None, 0, 1)
    assert "Observation/i has a unit that cannot be used: unknown unit 'Tsd/µl'" in reasons(assessment)


def test_the_value_as_sent_is_kept_next_to_the_normalised_value() -> None:
    out = assessment_json(run(neut("9.450"), ig("0.080")))
    assert out["parts"]["neutrophils"]["value_as_sent"] == "9.450"
    assert out["parts"]["neutrophils"]["value_per_uL"] == "9450"
    assert out["parts"]["immature_granulocytes"]["value_per_uL"] == "80"


# --- status, absent values, comparators, odd values ------------------------------------------------


@pytest.mark.parametrize("status", ["final", "amended", "corrected"])
def test_final_amended_and_corrected_results_count(status: str) -> None:
    assert score_of(neut("9.5", status=status), ig("0.01", status=status)) == (1, 1, 1)


@pytest.mark.parametrize("status", ["entered-in-error", "cancelled"])
def test_withdrawn_results_never_count(status: str) -> None:
    assessment = run(neut("9.5", status=status), ig("0.01"))
    assert assessment.result.score is None
    assert "entered-in-error or cancelled were left out" in reasons(assessment)


def test_preliminary_results_count_only_when_the_site_accepts_them() -> None:
    resources = (neut("9.5", status="preliminary"), ig("0.01"))
    default = run(*resources)
    assert default.result.score is None
    assert "is preliminary and may still change" in reasons(default)
    accepting = run(*resources, site={"baseline": {"accept_preliminary": True}})
    assert accepting.result.score == 1


@pytest.mark.parametrize("status", ["registered", "unknown", "bogus", None])
def test_results_without_a_result_status_are_reported(status: str | None) -> None:
    obs = neut("9.5")
    obs["status"] = status
    assessment = run(obs, ig("0.01"))
    assert (assessment.result.lower, assessment.result.upper) == (0, 1)
    assert "Observation/n" in reasons(assessment)


def test_data_absent_reason_is_reported_not_scored() -> None:
    absent = observation(
        "i", IG_COUNT, None, effective=DAY_BEFORE, dataAbsentReason={"coding": [{"code": "error"}]}
    )
    assessment = run(neut("5.0"), absent)
    assert assessment.result.upper == 1
    assert "reported without a value (dataAbsentReason: error)" in reasons(assessment)


@pytest.mark.parametrize(
    ("value", "unit", "comparator", "points"),
    [
        ("0.01", "10*3/uL", "<", 0),  # <10/uL: the bound decides
        ("0.08", "10*3/uL", "<=", 0),
        ("0.1", "10*3/uL", "<", None),  # <100/uL: could be either side of 80
        ("0.1", "10*3/uL", ">", 1),
    ],
)
def test_a_comparator_settles_the_ig_point_only_when_the_bound_decides_it(
    value: str, unit: str, comparator: str, points: int | None
) -> None:
    bounded = observation(
        "i", IG_COUNT, None, effective=DAY_BEFORE, quantity=quantity(value, unit, comparator=comparator)
    )
    out = assessment_json(run(neut("5.0"), bounded))
    assert out["parts"]["immature_granulocytes"]["points"] == points
    assert out["parts"]["immature_granulocytes"]["comparator"] == comparator


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (-0.02, "negative value"),
        ("abc", "not a number"),
        (True, "not a number"),
        (None, "has no value"),
    ],
)
def test_impossible_or_non_numeric_values_are_rejected(value: Any, message: str) -> None:
    obs = ig("0.01")
    if value is None:
        del obs["valueQuantity"]
    else:
        obs["valueQuantity"]["value"] = Decimal(str(value)) if isinstance(value, float) else value
    assessment = run(neut("5.0"), obs)
    assert assessment.result.upper == 1
    assert message in reasons(assessment)


def test_a_number_sent_as_text_is_reported_because_it_has_no_unit() -> None:
    obs = ig("0.01")
    del obs["valueQuantity"]
    obs["valueString"] = "0.09"
    assert "sent as text ('0.09') without a unit" in reasons(run(neut("5.0"), obs))


def test_a_float_value_is_read_from_its_shortest_repr() -> None:
    """JSON parsed without Decimal gives 0.08 as a float; 0.08 * 1000 must still not exceed 80."""
    obs = ig("0.08")
    obs["valueQuantity"]["value"] = 0.08
    assert score_of(neut("5.0"), obs) == (0, 0, 0)


# --- components, panels, research parameters, derived IG# -----------------------------------------


def test_values_inside_components_are_read() -> None:
    cbc = {
        "resourceType": "Observation",
        "id": "cbc",
        "subject": {"reference": "Patient/p1"},
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "58410-2"}]},
        "effectiveDateTime": DAY_BEFORE,
        "component": [
            {
                "code": {"coding": [{"system": "http://loinc.org", "code": NEUT}]},
                "valueQuantity": quantity("9.3"),
            },
            {
                "code": {"coding": [{"system": "http://loinc.org", "code": IG_COUNT}]},
                "valueQuantity": quantity("0.12"),
            },
        ],
    }
    out = assessment_json(run(cbc))
    assert out["ichis"] == 2
    assert out["parts"]["neutrophils"]["observation"] == "Observation/cbc"


def cbc_panel(*members: str, pid: str = "panel", status: str = "final", **extra: Any) -> dict[str, Any]:
    """A CBC panel (LOINC 57021-8) drawn the day before, pointing at ``members`` by reference."""
    return {
        "resourceType": "Observation",
        "id": pid,
        "subject": {"reference": "Patient/p1"},
        "status": status,
        "code": {"coding": [{"system": "http://loinc.org", "code": "57021-8"}]},
        "effectiveDateTime": DAY_BEFORE,
        "hasMember": [{"reference": member} for member in members],
        **extra,
    }


def test_panel_members_are_read_with_the_panels_time_and_specimen() -> None:
    member_n = observation("m1", NEUT, "9.3", effective=None)
    member_i = {**observation("m2", IG_COUNT, "0.02", effective=None), "id": "m2"}
    panel = cbc_panel(
        "Observation/m1", "#m2", specimen={"reference": "Specimen/s1"}, contained=[{**member_i, "id": "m2"}]
    )
    out = assessment_json(run(panel, member_n))
    assert out["ichis"] == 1
    assert out["parts"]["neutrophils"]["sample"] == "Specimen/s1"
    assert out["parts"]["immature_granulocytes"]["observation"] == "Observation/panel#m2"


@pytest.mark.parametrize(
    "reference",
    [
        "https://ehr.example/fhir/Observation/m1",
        "Observation/m1/_history/2",
        "https://ehr.example/fhir/Observation/m1/_history/2",
    ],
)
def test_a_member_is_found_by_an_absolute_or_versioned_reference(reference: str) -> None:
    """NDJSON has no fullUrl: an absolute or versioned hasMember still points at Observation/m1,
    whose value then takes the panel's time instead of reading as having none."""
    member = observation("m1", NEUT, "9.3", effective=None)
    out = assessment_json(run(cbc_panel(reference), member, ig("0.02")))
    assert (out["ichis"], out["parts"]["neutrophils"]["observation"]) == (1, "Observation/m1")


def test_a_result_that_a_valid_panel_also_holds_is_not_withdrawn_by_another_panel() -> None:
    """An old panel entered in error and its replacement point at the same members: the members
    count, whichever panel comes first."""
    members = [observation("m1", NEUT, "9.3", effective=DAY_BEFORE), ig("0.09", oid="m2")]
    old = cbc_panel("Observation/m1", "Observation/m2", pid="old", status="entered-in-error")
    new = cbc_panel("Observation/m1", "Observation/m2", pid="new")
    assert score_of(old, new, *members) == (2, 2, 2)
    assert score_of(new, old, *members) == (2, 2, 2)


def test_the_contained_members_of_a_withdrawn_panel_do_not_count() -> None:
    member = {**observation("m1", NEUT, "9.3", effective=None), "id": "m1"}
    panel = cbc_panel("#m1", status="entered-in-error", contained=[member])
    assert run(panel, ig("0.02")).result.parts[Part.NEUTROPHILS].measurement is None


def test_the_members_of_a_withdrawn_panel_are_withdrawn_too() -> None:
    """Sent standalone, the members of a withdrawn panel do not count either: where they sit does
    not decide."""
    member = observation("m1", NEUT, "9.3", effective=DAY_BEFORE)
    assessment = run(cbc_panel("Observation/m1", status="entered-in-error"), member, ig("0.02"))
    assert assessment.result.parts[Part.NEUTROPHILS].measurement is None
    assert "1 result(s) of a panel or report marked entered-in-error or cancelled were left out." in reasons(
        assessment
    )


def version(resource: dict[str, Any], **meta: str) -> dict[str, Any]:
    return {**resource, "meta": meta}


@pytest.mark.parametrize(
    ("versions", "expected", "note"),
    [
        # The lab withdrew the result in version 2: version 1 no longer counts.
        (
            [
                version(neut("12.5", status="entered-in-error"), versionId="2"),
                version(neut("12.5"), versionId="1"),
            ],
            None,
            "1 older version(s) of results were left out",
        ),
        # A corrected value in version 2 replaces version 1, with no conflict between them.
        (
            [version(neut("8.0"), versionId="1"), version(neut("12.5", status="amended"), versionId="2")],
            "12500",
            "1 older version(s) of results were left out",
        ),
        # Without versionId, lastUpdated orders them.
        (
            [
                version(neut("12.5"), lastUpdated="2024-02-29T10:00:00Z"),
                version(neut("8.0", status="corrected"), lastUpdated="2024-03-01T08:00:00+09:00"),
            ],
            "8000",
            "1 older version(s) of results were left out",
        ),
        # Versions that cannot be ordered, one withdrawn: the withdrawal may be the latest word.
        ([neut("12.5", status="entered-in-error"), neut("12.5")], None, "versions that cannot be ordered"),
    ],
)
def test_only_the_current_version_of_a_result_counts(
    versions: list[dict[str, Any]], expected: str | None, note: str
) -> None:
    """A history Bundle or concatenated incremental exports hold several versions of one id."""
    assessment = run(*versions, ig("0.02"))
    measurement = assessment.result.parts[Part.NEUTROPHILS].measurement
    assert (plain(measurement.value_per_uL) if measurement else None) == expected
    assert note in reasons(assessment)


RESEARCH = "http://hospital.example/sysmex-xn"


def test_zero_filled_research_parameters_are_missing_but_a_zero_ig_count_is_real() -> None:
    site = {"research_code_systems": [RESEARCH]}
    zero_sfl = observation(
        "sfl",
        "NEUT-SFL",
        None,
        system=RESEARCH,
        effective=DAY_BEFORE,
        quantity=quantity("0", "ch", code=None),
    )
    assessment = run(neut("5.0"), ig("0.00"), zero_sfl, site=site)
    assert assessment.result.score == 0  # IG# 0.00 x10^3/uL is a real result
    assert "research item is switched off; treated as missing" in reasons(assessment)


def test_ig_count_is_derived_from_percent_and_wbc_of_the_same_sample() -> None:
    out = assessment_json(
        run(
            neut("5.0"),
            observation("p", IG_PERCENT, "1.2", "%", effective=DAY_BEFORE),
            observation("w", WBC, "7.5", effective=DAY_BEFORE),
        )
    )
    part = out["parts"]["immature_granulocytes"]
    assert (part["points"], part["value_per_uL"], part["derived"]) == (1, "90", True)
    assert [d["observation"] for d in part["derived_from"]] == ["Observation/p", "Observation/w"]
    assert any("was derived from IG% 1.2" in r for r in out["reasons"])


def test_derived_ig_at_exactly_80_scores_0() -> None:
    """1.0 % of 8.0 x10^3/uL is exactly 80/uL."""
    assert score_of(
        neut("5.0"),
        observation("p", IG_PERCENT, "1.0", "%", effective=DAY_BEFORE),
        observation("w", WBC, "8.0", effective=DAY_BEFORE),
    ) == (0, 0, 0)


def test_a_measured_ig_count_wins_over_a_derived_one() -> None:
    out = assessment_json(
        run(
            neut("5.0"),
            ig("0.05"),
            observation("p", IG_PERCENT, "5", "%", effective=DAY_BEFORE),
            observation("w", WBC, "7.5", effective=DAY_BEFORE),
        )
    )
    assert out["parts"]["immature_granulocytes"]["derived"] is False
    assert out["ichis"] == 0


def test_ig_percent_without_wbc_of_the_same_sample_is_not_derived() -> None:
    assessment = run(
        neut("5.0"),
        observation("p", IG_PERCENT, "1.2", "%", effective=DAY_BEFORE),
        observation("w", WBC, "7.5", effective="2024-02-27T09:00:00Z"),
    )
    assert assessment.result.score is None
    assert "has no WBC from the same sample" in reasons(assessment)


# --- time: look-back, results after the order, time zones -----------------------------------------


@pytest.mark.parametrize(
    ("days_before", "used"),
    [(0, True), (13, True), (14, True), (15, False), (60, False)],
)
def test_results_older_than_the_lookback_window_are_stale(days_before: int, used: bool) -> None:
    when = (AT - timedelta(days=days_before)).isoformat()
    assessment = run(neut("9.5", effective=when), ig("0.01", effective=when))
    assert (assessment.result.score is not None) is used
    if not used:
        assert "is older than the 14-day look-back window" in reasons(assessment)


def test_the_lookback_window_is_configurable() -> None:
    when = (AT - timedelta(days=20)).isoformat()
    assert (
        run(
            neut("9.5", effective=when), ig("0.01", effective=when), site={"baseline": {"lookback_days": 30}}
        ).result.score
        == 1
    )


def test_results_after_the_reference_time_are_never_used() -> None:
    later = "2024-03-01T12:00:01Z"
    assessment = run(neut("9.5", effective=later), ig("0.5", effective=later))
    assert assessment.result.score is None
    assert "2 result(s) dated after the reference time were not used." in reasons(assessment)


@pytest.mark.parametrize(
    ("effective", "used"),
    [
        ("2024-03-01T20:59:00+09:00", True),  # 11:59 UTC, before noon UTC
        ("2024-03-01T21:00:00+09:00", True),  # exactly the reference time
        ("2024-03-01T21:01:00+09:00", False),  # one minute after
        ("2024-03-01T07:30:00-05:00", False),  # 12:30 UTC
        ("2024-03-01T06:59:00-05:00", True),
    ],
)
def test_instants_are_compared_across_time_zones(effective: str, used: bool) -> None:
    assessment = run(neut("9.5", effective=effective), ig("0.01", effective=effective))
    assert (assessment.result.score is not None) is used


def test_the_most_recent_instant_wins_even_when_its_text_sorts_first() -> None:
    """2024-02-29T20:00Z is later than 2024-03-01T01:00+09:00 (= 2024-02-29T16:00Z)."""
    out = assessment_json(
        run(
            neut("9.5", oid="early", effective="2024-03-01T01:00:00+09:00"),
            ig("0.01", oid="i-early", effective="2024-03-01T01:00:00+09:00"),
            neut("5.0", oid="late", effective="2024-02-29T20:00:00Z"),
            ig("0.01", oid="i-late", effective="2024-02-29T20:00:00Z"),
        )
    )
    assert out["parts"]["neutrophils"]["observation"] == "Observation/late"
    assert out["ichis"] == 0


def test_a_date_without_time_on_the_reference_day_is_not_used() -> None:
    assessment = run(neut("9.5", effective="2024-03-01"), ig("0.01", effective="2024-03-01"))
    assert assessment.result.score is None
    assert "dated without a time on the reference day were not used" in reasons(assessment)


def test_a_date_without_time_before_the_reference_day_is_used() -> None:
    assert score_of(neut("9.5", effective="2024-02-28"), ig("0.01", effective="2024-02-28")) == (1, 1, 1)


def test_a_time_without_offset_is_read_in_the_site_zone_and_said_so() -> None:
    assessment = run(
        neut("9.5", effective="2024-03-01T11:00:00"), ig("0.01", effective="2024-03-01T11:00:00")
    )
    assert assessment.result.score == 1
    assert "read in the site's zone (UTC)" in reasons(assessment)
    evening = "2024-03-01T20:00:00"  # 20:00 UTC is after the reference time; 20:00 in Seoul is 11:00 UTC
    assert run(neut("9.5", effective=evening), ig("0.01", effective=evening)).result.score is None
    seoul = run(
        neut("9.5", effective=evening),
        ig("0.01", effective=evening),
        site={"baseline": {"naive_time_zone": "Asia/Seoul"}},
    )
    assert seoul.result.score == 1


def test_a_result_without_collection_time_is_reported() -> None:
    assessment = run(neut("9.5", effective=None), ig("0.01"))
    assert "has no collection time" in reasons(assessment)


# --- which sample: same-sample preference, ties, conflicts ---------------------------------------


def test_both_parts_come_from_the_most_recent_sample_that_has_both() -> None:
    older = "2024-02-25T08:00:00Z"
    newer = "2024-02-29T08:00:00Z"
    assessment = run(
        neut("5.0", oid="n-old", effective=older),
        ig("0.01", oid="i-old", effective=older),
        neut("9.5", oid="n-new", effective=newer),  # the newer sample has no IG#
    )
    out = assessment_json(assessment)
    assert out["parts"]["neutrophils"]["observation"] == "Observation/n-old"
    assert out["ichis"] == 0
    assert "A newer neutrophil count (NEUT#) from 2024-02-29T08:00:00+00:00 was not used" in reasons(
        assessment
    )


def test_without_a_complete_sample_each_part_comes_from_its_own_latest_sample() -> None:
    assessment = run(
        neut("9.5", effective="2024-02-29T08:00:00Z"),
        ig("0.09", effective="2024-02-26T08:00:00Z"),
    )
    assert assessment.result.score == 2
    assert "No sample has both parts" in reasons(assessment)


def test_a_specimen_reference_ties_results_of_one_sample_despite_different_times() -> None:
    n = neut("9.5", effective="2024-02-29T08:00:00Z", specimen={"reference": "Specimen/s9"})
    i = ig("0.09", effective="2024-02-29T08:05:00Z", specimen={"reference": "Specimen/s9"})
    assessment = run(n, i)
    assert assessment.result.score == 2
    assert "No sample has both parts" not in reasons(assessment)


@pytest.mark.parametrize("wbc_id", ["a-first", "z-last"])
def test_a_result_without_specimen_never_joins_two_specimens_into_one_sample(wbc_id: str) -> None:
    """NEUT# on tube s1, IG# on tube s2 and a WBC naming no tube, all at one instant: the WBC fits
    both tubes, so it joins neither, and the answer does not depend on the order or the ids."""
    n = neut("9.5", specimen={"reference": "Specimen/s1"})
    i = ig("0.09", specimen={"reference": "Specimen/s2"})
    w = observation(wbc_id, WBC, "7.5", effective=DAY_BEFORE)
    for resources in ((n, i, w), (w, i, n)):
        assessment = run(*resources)
        assert assessment.result.score == 2
        assert "No sample has both parts" in reasons(assessment)


def test_the_automated_code_wins_over_the_manual_count_in_one_sample() -> None:
    manual = observation("manual", "753-4", "12.0", effective=DAY_BEFORE)
    out = assessment_json(run(neut("5.0", oid="auto"), manual, ig("0.01")))
    assert out["parts"]["neutrophils"]["observation"] == "Observation/auto"


def test_a_corrected_result_supersedes_the_final_one_of_the_same_sample() -> None:
    out = assessment_json(
        run(
            neut("9.5", oid="orig", status="final"),
            neut("8.5", oid="fix", status="corrected"),
            ig("0.01"),
        )
    )
    assert out["parts"]["neutrophils"]["observation"] == "Observation/fix"


def test_identical_duplicates_are_not_a_conflict() -> None:
    assert score_of(neut("9.5", oid="a"), neut("9.50", oid="b"), ig("0.01")) == (1, 1, 1)


def test_disagreeing_results_of_one_sample_leave_the_part_unknown() -> None:
    assessment = run(neut("9.5", oid="a"), neut("8.5", oid="b"), ig("0.01"))
    assert assessment.result.score is None
    assert "results of the same sample disagree" in reasons(assessment)


def test_no_blood_count_at_all_is_unavailable_with_what_would_fix_it() -> None:
    assessment = run()
    assert (assessment.result.score, assessment.result.status.value) == (None, "unavailable")
    assert "a CBC with automated differential that reports IG# (or IG% with WBC) would fix this" in reasons(
        assessment
    )


def test_site_codes_are_added_by_configuration() -> None:
    site = {
        "lab_codes": {"immature_granulocytes": {"codes": [{"system": "http://lab.example", "code": "IG#"}]}}
    }
    local = observation("i", "IG#", "0.09", system="http://lab.example", effective=DAY_BEFORE)
    assert score_of(neut("5.0"), local, site=site) == (1, 1, 1)
    assert score_of(neut("5.0"), local) == (None, 0, 1)


# --- plausibility: values no analyser reports are not scored ----------------------------------


@pytest.mark.parametrize(
    ("value", "unit", "doubt"),
    [
        ("9500", "10*3/uL", "was it sent in /uL"),  # the classic LIS mix-up: a /uL number as thousands
        ("9500", "10*9/L", "was it sent in /uL"),
        ("9500", "K/uL", "was it sent in /uL"),
        ("500000", "10*3/uL", "check the value and unit"),  # not even a /uL count
        ("441", "10*3/uL", "above any Neutrophils (NEUT#) this analyser reports"),
    ],
)
def test_an_impossible_neutrophil_count_is_not_scored_and_the_reason_names_the_likely_cause(
    value: str, unit: str, doubt: str
) -> None:
    assessment = run(neut(value, unit), ig("0.02"))
    assert (assessment.result.score, assessment.result.lower, assessment.result.upper) == (None, 0, 1)
    assert doubt in reasons(assessment)
    assert "0 to 440 x10^3/uL, a part of the WBC: the Sysmex XN-Series WBC reportable range" in reasons(
        assessment
    )


@pytest.mark.parametrize(
    ("value", "unit", "scored"),
    [("440", "10*3/uL", True), ("440000", "/uL", True), ("440.01", "10*3/uL", False), ("0", "10*3/uL", True)],
)
def test_the_plausible_range_includes_its_bounds(value: str, unit: str, scored: bool) -> None:
    assessment = run(neut(value, unit), ig("0.02"))
    assert (assessment.result.parts[Part.NEUTROPHILS].points is not None) is scored


def test_a_bound_that_points_inside_the_range_is_not_implausible() -> None:
    """'<500 x10^3/uL' says the count is below 500: it may well be plausible."""
    assessment = run(neut("500", quantity=quantity("500", comparator="<")), ig("0.02"))
    assert "this analyser reports" not in reasons(assessment)


def test_an_ig_percent_above_100_is_not_used_to_derive_ig() -> None:
    assessment = run(
        neut("5.0"),
        observation("p", IG_PERCENT, "140", "%", effective=DAY_BEFORE),
        observation("w", WBC, "6.0", effective=DAY_BEFORE),
    )
    assert assessment.result.parts[Part.IMMATURE_GRANULOCYTES].measurement is None
    assert "140 %, above any Immature granulocytes (IG%) this analyser reports" in reasons(assessment)


def test_a_site_changes_a_range_in_its_configuration() -> None:
    site = {"plausibility": {"neutrophils": {"high": "1000", "unit": "10*3/uL", "source": "our DxH 900"}}}
    assert run(neut("600"), ig("0.02"), site=site).result.parts[Part.NEUTROPHILS].points == 1
    assert "at most" not in reasons(run(neut("600"), ig("0.02"), site=site))
    tight = {"plausibility": {"neutrophils": {"high": "50", "unit": "10*9/L", "source": "local rule"}}}
    assert "0 to 50 x10^9/L, local rule" in reasons(run(neut("60"), ig("0.02"), site=tight))


@pytest.mark.parametrize(
    ("site", "message"),
    [
        ({"plausibility": {"nonsense": {"high": "1", "unit": "/uL", "source": "x"}}}, "no lab concept"),
        ({"plausibility": {"neutrophils": {"high": 1.5, "unit": "/uL", "source": "x"}}}, "as a string"),
        ({"plausibility": {"neutrophils": {"high": "1", "unit": "furlong", "source": "x"}}}, "furlong"),
        (
            {"plausibility": {"neutrophils": {"low": "9", "high": "1", "unit": "/uL", "source": "x"}}},
            "low is above",
        ),
        ({"plausibility": {"neutrophils": {"high": "1", "unit": "/uL", "sauce": "x"}}}, "unknown key"),
        (
            {"plausibility": {"platelets": {"high": "1", "unit": "/uL", "source": " "}}},
            "'source' is required",
        ),
    ],
)
def test_a_wrong_plausibility_setting_is_refused_with_its_name(site: dict[str, Any], message: str) -> None:
    from fhir_mappings.config import ConfigurationError

    with pytest.raises(ConfigurationError, match=message):
        load_mapping_config(site)


@pytest.mark.parametrize(
    ("part", "value", "wbc", "scored"),
    [
        ("neutrophils", "9.5", "7.1", False),  # NEUT# above the WBC of its own sample: impossible
        ("neutrophils", "7.1", "7.1", True),
        ("neutrophils", "9.5", "12.0", True),
        ("immature_granulocytes", "8.0", "7.1", False),
        ("immature_granulocytes", "0.09", "7.1", True),
    ],
)
def test_a_part_above_the_wbc_of_its_own_sample_is_not_scored(
    part: str, value: str, wbc: str, scored: bool
) -> None:
    n, i = (neut(value), ig("0.02")) if part == "neutrophils" else (neut("5.0"), ig(value))
    assessment = run(n, i, observation("w", WBC, wbc, effective=DAY_BEFORE))
    chosen = assessment.result.parts[
        Part.NEUTROPHILS if part == "neutrophils" else Part.IMMATURE_GRANULOCYTES
    ]
    assert (chosen.points is not None) is scored
    if not scored:
        assert "is above the WBC of the same sample, Observation/w (" in reasons(assessment)


def test_a_wbc_of_another_sample_does_not_judge_a_count() -> None:
    later_wbc = observation("w", WBC, "3.0", effective="2024-02-29T11:00:00Z")
    assert run(neut("9.5"), ig("0.02"), later_wbc).result.score == 1


# --- DiagnosticReports: results contained or listed in result --------------------------------


def report(*results: str, contained: list[dict[str, Any]] | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "DiagnosticReport",
        "id": "dr",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "57021-8"}]},
        "subject": {"reference": "Patient/p1"},
        "effectiveDateTime": DAY_BEFORE,
        "result": [{"reference": r} for r in results],
        "contained": contained or [],
        **extra,
    }


def untimed(observation_: dict[str, Any]) -> dict[str, Any]:
    """A result as a report carries it contained: no subject and no time of its own."""
    out = {k: v for k, v in observation_.items() if k not in ("subject", "effectiveDateTime")}
    return out


def test_results_contained_in_a_report_are_read_with_its_time_and_specimen() -> None:
    dr = report(
        "#n",
        "#i",
        contained=[untimed(neut("9.5", oid="n")), untimed(ig("0.09", oid="i"))],
        specimen=[{"reference": "Specimen/tube-1"}],
    )
    out = assessment_json(run(dr))
    assert out["ichis"] == 2
    assert out["parts"]["neutrophils"]["observation"] == "DiagnosticReport/dr#n"
    assert out["parts"]["neutrophils"]["sample"] == "Specimen/tube-1"
    assert out["parts"]["neutrophils"]["effective"] == "2024-02-29T09:00:00+00:00"


def test_a_reports_result_references_resolve_in_the_same_bundle() -> None:
    out = assessment_json(
        run(report("Observation/n", "Observation/i"), neut("9.5", effective=None), ig("0.09", effective=None))
    )
    assert (out["ichis"], out["parts"]["immature_granulocytes"]["observation"]) == (2, "Observation/i")


def test_contained_results_a_report_does_not_list_are_still_its_results() -> None:
    dr = report(contained=[untimed(neut("9.5", oid="n")), untimed(ig("0.02", oid="i"))])
    assert run(dr).result.score == 1


def test_a_panel_contained_in_a_report_brings_its_contained_members() -> None:
    panel = {**cbc_panel("#n", "#i", pid="cbc"), "effectiveDateTime": DAY_BEFORE}
    del panel["subject"]
    dr = report("#cbc", contained=[panel, untimed(neut("9.5", oid="n")), untimed(ig("0.09", oid="i"))])
    assert run(dr).result.score == 2


@pytest.mark.parametrize("status", ["entered-in-error", "cancelled"])
def test_a_withdrawn_report_withdraws_its_results(status: str) -> None:
    dr = report("Observation/n", "#i", contained=[untimed(ig("0.09", oid="i"))], status=status)
    assessment = run(dr, neut("9.5"))
    assert assessment.result.status.value == "unavailable"
    assert "of a panel or report marked entered-in-error or cancelled were left out" in reasons(assessment)
