"""Unit normalisation to cells/uL: UCUM rules, the alias table, and refusing what is unknown."""

from __future__ import annotations

import re
from decimal import Decimal

import pytest

from fhir_mappings.units import UCUM_SYSTEM, UnitError, UnitNormaliser, default_aliases, parse_ucum

UNITS = UnitNormaliser(default_aliases())


@pytest.mark.parametrize(
    ("value", "unit", "per_uL"),
    [
        ("0.08", "10*3/uL", "80"),
        ("0.08", "10*9/L", "80"),
        ("80", "/uL", "80"),
        ("80", "{cells}/uL", "80"),
        ("80", "/mm3", "80"),
        ("80", "/mm^3", "80"),
        ("80", "/mm³", "80"),
        ("80", "cells/mm³", "80"),
        ("0.08", "/nL", "80"),
        ("0.08", "10^3/uL", "80"),
        ("0.08", "10*3/mm3", "80"),
        ("80000", "/mL", "80"),
        ("80000000", "/L", "80"),
        ("0.08", "10*3{cells}/uL", "80"),
        ("9.0", "10*9/L", "9000"),
    ],
)
def test_ucum_codes_normalise_exactly(value: str, unit: str, per_uL: str) -> None:
    assert UNITS.to_per_uL(Decimal(value), unit, UCUM_SYSTEM, None) == Decimal(per_uL)


@pytest.mark.parametrize(
    "spelling",
    [
        *("K/uL", "x10E3/uL", "10^3/uL", "x10^3/uL", "K/µL", "K/μL", "×10³/µL", "10*3/UL", "thou/uL"),
        *("10E3/uL", "10e3/uL", "10^3/mm^3", "x10³/mm³"),
    ],
)
def test_non_ucum_thousands_per_microlitre_spellings_come_from_the_alias_table(spelling: str) -> None:
    assert UNITS.to_per_uL(Decimal("0.09"), None, None, spelling) == Decimal("90")


@pytest.mark.parametrize(
    "spelling", ["G/L", "Gpt/L", "x10E9/L", "x10^9/L", "10^9/L", "x10⁹/L", "10e9/L", "x10e9/L"]
)
def test_giga_per_litre_spellings_are_thousands_per_microlitre(spelling: str) -> None:
    assert UNITS.to_per_uL(Decimal("9.0"), None, None, spelling) == Decimal("9000")


@pytest.mark.parametrize(
    ("code", "system", "text"),
    [
        (None, None, "10*3/uL"),  # only unit text, no code
        ("10*3/uL", UCUM_SYSTEM, None),  # only the code
        ("10*3/uL", UCUM_SYSTEM, "K/uL"),  # both, agreeing
        ("K/uL", "http://hospital.example/units", "K/uL"),  # a local system repeating the text
    ],
)
def test_a_quantity_may_carry_code_or_text_or_both(
    code: str | None, system: str | None, text: str | None
) -> None:
    assert UNITS.to_per_uL(Decimal("1.5"), code, system, text) == Decimal("1500")


@pytest.mark.parametrize(
    ("code", "text", "message"),
    [
        (None, "cells", "unknown unit"),
        (None, "thousand per microliter", "unknown unit"),
        ("g/L", None, "not a count per volume"),  # grams per litre is UCUM, but not a count
        ("%", None, "not a count per volume"),
        (None, "K", "unknown unit"),
        ("10.3/uL", None, "unknown unit"),  # UCUM for 30/uL: never what a lab meant
        # 10⁹/L and 10³/µL with the superscript lost (Unicode NFKC, feeds that drop formatting):
        # UCUM reads a factor of 109 or 103, a count ten million times too small.
        (None, "109/L", "unknown unit"),
        (None, "103/μL", "unknown unit"),
        (None, "10 9/L", "unknown unit"),
        ("103/uL", None, "unknown unit"),
        ("10*3/uL", "/uL", "disagree"),
        (None, None, "no unit"),
        (None, "  ", "no unit"),
    ],
)
def test_unknown_or_contradictory_units_are_reported_never_guessed(
    code: str | None, text: str | None, message: str
) -> None:
    with pytest.raises(UnitError, match=message):
        UNITS.to_per_uL(Decimal(1), code, UCUM_SYSTEM if code else None, text)


@pytest.mark.parametrize(("unit", "percent"), [("%", "1.2"), ("/100{WBCs}", "1.2"), ("percent", "1.2")])
def test_percent_spellings(unit: str, percent: str) -> None:
    assert UNITS.to_percent(Decimal("1.2"), None, None, unit) == Decimal(percent)


def test_parsed_scales_are_exact_powers_of_ten() -> None:
    assert parse_ucum("10*9/L").scale == Decimal("1e12")
    assert parse_ucum("/uL").scale == Decimal("1e9")


def test_case_matters_as_in_ucum() -> None:
    """g/L (grams) is not G/L (giga-cells): case is never folded."""
    assert UNITS.to_per_uL(Decimal(1), None, None, "G/L") == Decimal(1000)
    with pytest.raises(UnitError):
        UNITS.to_per_uL(Decimal(1), None, None, "g/L")


def test_measures_convert_by_ucum_and_channels_stay_as_sent() -> None:
    assert UNITS.in_unit(Decimal("30"), "pg", UCUM_SYSTEM, None, "pg") == Decimal("30")
    assert UNITS.in_unit(Decimal("51.2"), None, None, "ch", "ch") == Decimal("51.2")
    with pytest.raises(UnitError):
        UNITS.in_unit(Decimal("1"), None, None, "fL", "pg")


@pytest.mark.parametrize(
    ("spelling", "per_uL"),
    [
        ("10E3/UL", "90"),
        ("K/MM3", "90"),
        ("/MM3", "0.09"),
        ("THOU/UL", "90"),
        ("CELLS/UL", "0.09"),
        ("X10^3/UL", "90"),
    ],
)
def test_capitalised_spellings_of_known_units_are_read(spelling: str, per_uL: str) -> None:
    assert UNITS.to_per_uL(Decimal("0.09"), None, None, spelling) == Decimal(per_uL)


def test_lower_case_is_not_folded_into_a_count() -> None:
    """g/l is grams per litre: no alias turns it into G/L."""
    with pytest.raises(UnitError, match="not a count per volume"):
        UNITS.to_per_uL(Decimal(1), None, None, "g/l")


def test_factors_that_are_powers_of_ten_are_read() -> None:
    """UCUM's integer factors stay readable where a laboratory writes them: 1000/uL, /100{WBCs}."""
    assert UNITS.to_per_uL(Decimal("9.5"), None, None, "1000/uL") == Decimal("9500")
    assert UNITS.to_percent(Decimal("1.2"), "/100{WBCs}", UCUM_SYSTEM, None) == Decimal("1.2")


@pytest.mark.parametrize(
    ("spelling", "per_uL"),
    [
        ("/mcL", "0.09"),
        ("cells/mcL", "0.09"),
        ("K/mcL", "90"),
        ("10*3/mcL", "90"),
        ("x10E3/mcL", "90"),
        ("x10(3)/mcL", "90"),
        ("THOU/uL", "90"),
        ("Thousand/uL", "90"),
        ("thou/cmm", "90"),
        ("x 10 9/L", "90"),
        ("10e3/µl", "90"),
        ("k/uL", "90"),
    ],
)
def test_spellings_us_and_middleware_feeds_print_are_read(spelling: str, per_uL: str) -> None:
    """The mcL family and other spellings labs really print (issue: each was an unknown unit)."""
    assert UNITS.to_per_uL(Decimal("0.09"), None, None, spelling) == Decimal(per_uL)


@pytest.mark.parametrize(
    ("spelling", "per_uL"),
    [
        ("k/ul", "90"),  # K is no prefix of a count; l and L are both the litre
        ("Cells/uL", "0.09"),
        ("CELLS/mcL", "0.09"),
        ("10*3/Ul", "90"),
        ("gpt/l", "90"),  # "Gpt" is a word (Gigapartikel), not the prefix G alone
        ("G/l", "90"),  # G as sent is giga: only the litre's case differs
        ("THOU/CMM", "90"),
    ],
)
def test_letter_case_is_ignored_where_no_unit_can_be_confused(spelling: str, per_uL: str) -> None:
    assert UNITS.to_per_uL(Decimal("0.09"), None, None, spelling) == Decimal(per_uL)


@pytest.mark.parametrize(
    ("spelling", "why"),
    [
        # UCUM is case-sensitive and these read as something else, which is refused for a count:
        (
            "g/l",
            "not a count per volume; UCUM is case-sensitive: a count would be written 'G/L'",
        ),  # grams per litre
        (
            "m/ul",
            "not a count per volume; UCUM is case-sensitive: a count would be written 'M/uL'",
        ),  # metres per uL
        ("g/L", "not a count per volume"),  # grams per litre, as written
        # Not UCUM, and in another case a giga, mega, tera or peta prefix standing alone:
        ("t/l", "unknown unit"),  # tonne or tera: never guessed
        ("m/mcL", "M is mega, m is milli or metre"),
        ("t/L", "unknown unit"),
        ("x109/L", "unknown unit"),  # a lost superscript, not the spaced spelling
    ],
)
def test_each_spelling_whose_case_changes_the_unit_is_refused(spelling: str, why: str) -> None:
    """The case rule: exact where a letter's case decides the unit (G giga / g gram, M mega / m
    milli, T tera / t tonne, P peta / p pico), never a guess."""
    with pytest.raises(UnitError, match=re.escape(why)):
        UNITS.to_per_uL(Decimal(1), None, None, spelling)


def test_a_unit_refused_again_and_again_keeps_nothing_of_the_calls_that_met_it() -> None:
    # The refusal is remembered per spelling; an error object raised again would keep each
    # earlier traceback, and with it every frame (a request's resources) that ever met it.
    import gc
    import weakref

    units = UnitNormaliser(default_aliases())

    class Resource:
        pass

    def read_one() -> weakref.ref[Resource]:
        resource = Resource()
        with pytest.raises(UnitError) as raised:
            units.to_per_uL(Decimal("9"), "furlongs", UCUM_SYSTEM, None)
        assert "unknown unit 'furlongs'" in str(raised.value)
        return weakref.ref(resource)

    kept = [read_one() for _ in range(50)]
    gc.collect()
    assert [ref() for ref in kept] == [None] * 50


def test_the_exact_product_of_a_long_value_and_a_scale_is_not_rounded() -> None:
    units = UnitNormaliser(default_aliases())
    value = Decimal("9.000000000000000000000000000000000000000000001")
    assert units.to_per_uL(value, "10*3/uL", UCUM_SYSTEM, None) == Decimal(
        "9000.000000000000000000000000000000000000000001"
    )
    assert units.to_percent(Decimal("0.0123456789012345678901234567891"), "1", UCUM_SYSTEM, None) == Decimal(
        "1.23456789012345678901234567891"
    )
