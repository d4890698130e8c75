"""Unit normalisation for lab values, by UCUM rules, in exact decimals.

UCUM (https://ucum.org/ucum) is the unit system FHIR names for Quantity.code
(https://hl7.org/fhir/R4/datatypes.html#Quantity). This module implements the part of it that
blood counts use: prefixes, the ``10*``/``10^`` powers of ten, integer factors, annotations
(``{cells}``), multiplication ``.`` and division ``/``, exponents, and the atoms for volume,
length, mass and amount. Everything else is refused: an unknown unit is reported for its value,
never guessed. Non-UCUM spellings go through an explicit alias table kept as data.
"""

from __future__ import annotations

import functools
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Context, Decimal, localcontext
from importlib import resources

UCUM_SYSTEM = "http://unitsofmeasure.org"


class UnitError(ValueError):
    """A unit that cannot be normalised; the message is a sentence fit for a reason list."""


@dataclass(frozen=True, slots=True)
class Dimension:
    """Exponents of the base quantities we meet in lab units."""

    length: int = 0
    mass: int = 0
    amount: int = 0

    def __mul__(self, other: Dimension) -> Dimension:
        return Dimension(self.length + other.length, self.mass + other.mass, self.amount + other.amount)

    def power(self, n: int) -> Dimension:
        return Dimension(self.length * n, self.mass * n, self.amount * n)


DIMENSIONLESS = Dimension()
PER_VOLUME = Dimension(length=-3)


@dataclass(frozen=True, slots=True)
class Unit:
    """A parsed unit: ``scale`` in SI base units (m, g, mol) and its dimension."""

    scale: Decimal
    dimension: Dimension


# UCUM prefixes (UCUM section 2.4, table 1), all exact powers of ten.
_PREFIXES: dict[str, int] = {
    "Y": 24, "Z": 21, "E": 18, "P": 15, "T": 12, "G": 9, "M": 6, "k": 3, "h": 2, "da": 1,
    "d": -1, "c": -2, "m": -3, "u": -6, "n": -9, "p": -12, "f": -15, "a": -18, "z": -21, "y": -24,
}  # fmt: skip

# Atoms we accept, as (scale in base units, dimension). L and l: the litre is 1 dm3 = 1e-3 m3.
_ATOMS: dict[str, tuple[Decimal, Dimension]] = {
    "m": (Decimal(1), Dimension(length=1)),
    "L": (Decimal("0.001"), Dimension(length=3)),
    "l": (Decimal("0.001"), Dimension(length=3)),
    "g": (Decimal(1), Dimension(mass=1)),
    "mol": (Decimal(1), Dimension(amount=1)),
}
_ANNOTATION = r"(?:\{[^{}]*\})"
_TEN_POWER = re.compile(rf"^10[*^](?P<exp>[+-]?\d+){_ANNOTATION}?$")
_INTEGER = re.compile(rf"^(?P<num>\d+){_ANNOTATION}?$")
_POWER_OF_TEN = re.compile(r"^10*$")
_ONLY_ANNOTATION = re.compile(rf"^{_ANNOTATION}$")
_PREFIXED_ATOM = re.compile(
    rf"^(?P<prefix>da|[YZEPTGMkhdcmunpfazy])?(?P<atom>mol|m|L|l|g)(?P<exp>[+-]?\d+)?{_ANNOTATION}?$"
)
_PERCENT = re.compile(rf"^%{_ANNOTATION}?$")


def _component(text: str) -> Unit:
    if not text or _ONLY_ANNOTATION.match(text):
        return Unit(Decimal(1), DIMENSIONLESS)
    if m := _TEN_POWER.match(text):
        return Unit(Decimal(1).scaleb(int(m["exp"])), DIMENSIONLESS)
    if m := _INTEGER.match(text):
        if not _POWER_OF_TEN.match(m["num"]):
            # UCUM allows any factor, but laboratories write only powers of ten ("1000/uL").
            # "109/L" or "103/uL" is 10⁹/L or 10³/uL with its superscript lost (Unicode NFKC
            # folding or a feed that drops formatting): read as written, a count 10⁷ times too small.
            raise UnitError(f"'{text}' is a factor that is not a power of ten (a lost superscript?)")
        return Unit(Decimal(m["num"]), DIMENSIONLESS)
    if _PERCENT.match(text):
        return Unit(Decimal("0.01"), DIMENSIONLESS)
    if m := _PREFIXED_ATOM.match(text):
        scale, dimension = _ATOMS[m["atom"]]
        if m["prefix"]:
            scale = scale.scaleb(_PREFIXES[m["prefix"]])
        exponent = int(m["exp"]) if m["exp"] else 1
        return Unit(scale**exponent, dimension.power(exponent))
    raise UnitError(f"'{text}' is not a UCUM unit this service understands")


def parse_ucum(code: str) -> Unit:
    """Parse a UCUM code (case-sensitive form) into scale and dimension; raise UnitError."""
    if not code or code != code.strip() or " " in code:
        raise UnitError(f"'{code}' is not a valid UCUM code")
    if "(" in code or ")" in code:
        raise UnitError(f"'{code}': parenthesised UCUM terms are not supported")
    with localcontext() as ctx:
        ctx.prec = 60  # wide enough that every product of prefixes stays exact
        # Split into components, keeping the operator that precedes each one.
        tokens = re.split(r"([./])", code)
        scale, dimension = Decimal(1), DIMENSIONLESS
        operator = "."
        for position, token in enumerate(tokens):
            if token in (".", "/"):
                operator = token
                continue
            if token == "" and operator == "/":
                raise UnitError(f"'{code}' is not a valid UCUM code")
            if position > 0 and operator == "." and _INTEGER.match(token):
                # "10.3/uL" is UCUM for 30/uL, and never what a laboratory meant: refuse it.
                raise UnitError(f"'{code}' multiplies by a bare number, which no lab unit does")
            unit = _component(token)
            if operator == "/":
                scale, dimension = scale / unit.scale, dimension * unit.dimension.power(-1)
            else:
                scale, dimension = scale * unit.scale, dimension * unit.dimension
        return Unit(scale, dimension)


_FOLD = str.maketrans({"µ": "u", "μ": "u", "×": "x"})
_SUPERSCRIPTS = str.maketrans("⁰¹²³⁴⁵⁶⁷⁸⁹⁻", "0123456789-")
_SUPERSCRIPT_RUN = re.compile("[⁰¹²³⁴⁵⁶⁷⁸⁹⁻]+")


def fold(text: str) -> str:
    """The form alias keys are matched in: no spaces, micro and times signs in ASCII.

    Superscript digits are exponents ("10³/µL" is "10^3/uL"), so they become ``^`` and digits.
    """
    return "".join(_fold_signs(text).split())


def _fold_signs(text: str) -> str:
    text = _SUPERSCRIPT_RUN.sub(lambda m: "^" + m[0].translate(_SUPERSCRIPTS), text)
    return text.translate(_FOLD)


def _spaced(text: str) -> str:
    """The form of alias keys written with spaces ("x 10 9/L"): signs folded, single spaces."""
    return " ".join(_fold_signs(text).split())


#: Letters whose case changes a unit when they stand alone as a prefix or symbol (UCUM is
#: case-sensitive): G giga / g gram, M mega / m milli or metre, T tera / t tonne, P peta / p pico.
_CASE_MEANS = {"g": "G is giga, g is gram", "m": "M is mega, m is milli or metre",
               "t": "T is tera, t is tonne", "p": "P is peta, p is pico"}  # fmt: skip
#: UCUM codes of counts and percent that any-case spellings may also mean.
_UCUM_COUNTS = (
    "10*3/uL",
    "10*9/L",
    "/uL",
    "{cells}/uL",
    "/mm3",
    "10*3/mm3",
    "/nL",
    "10*6/uL",
    "10*12/L",
    "%",
)


def _case_matters(sent: str, key: str) -> str | None:
    """Why ``sent`` may not stand for ``key`` although they differ only in letter case: a letter
    whose case changes the unit, standing alone (``G/L`` against ``g/l``); None when harmless."""
    if len(sent) != len(key):
        return "the spelling changes length in another case"
    for position, (a, b) in enumerate(zip(sent, key, strict=True)):
        if a == b or b.lower() not in _CASE_MEANS:
            continue
        before = key[position - 1] if position else ""
        after = key[position + 1] if position + 1 < len(key) else ""
        if not before.isalpha() and not after.isalpha():
            return _CASE_MEANS[b.lower()]
    return None


def default_aliases() -> dict[str, str]:
    """The shipped alias table (``data/unit_aliases.toml``), with each spelling also in capitals.

    The table holds only count-per-volume and percent spellings, so a capitalised spelling cannot
    mean anything else (feeds that shout write ``K/UL``, ``10E3/UL``, ``/MM3``). Lower-case forms
    are not added: ``g/L`` would turn grams into giga-cells.
    """
    raw = resources.files("fhir_mappings").joinpath("data/unit_aliases.toml").read_text("utf-8")
    # Spellings with inner spaces keep them (see ``_spaced``); the others are matched folded.
    aliases = {
        (_spaced(k) if " " in k.strip() else fold(k)): v for k, v in tomllib.loads(raw)["aliases"].items()
    }
    for spelling, ucum in list(aliases.items()):
        aliases.setdefault(spelling.upper(), ucum)
    for ucum in ("/mm3", "10*3/mm3", "{cells}/uL", "10*6/uL", "10*12/L", "/nL"):
        aliases.setdefault(ucum.upper(), ucum)
    return aliases


# cells/uL per base-unit count density: 1 uL = 1e-9 m3, so (1/m3) * 1e-9 = 1/uL.
_PER_M3_TO_PER_UL = Decimal("1e-9")
_HUNDRED = Decimal(100)
#: Wide enough that no product of a lab value (bounded to 1e+-30 by the reader) and a unit's
#: power-of-ten scale is ever rounded; one object, so no context is switched per value.
_EXACT = Context(prec=60)


@functools.lru_cache(maxsize=256)
def _factor(scale: Decimal, to: Decimal) -> Decimal:
    """A unit's scale times a conversion, exact (both are powers of ten, or products of a few)."""
    return _EXACT.multiply(scale, to)


#: Distinct unit spellings remembered per process (a site sends a few dozen).
_CACHED_SPELLINGS = 4096


class UnitNormaliser:
    """Turns (value, UCUM code, unit text) into cells/uL or percent, exactly, or says why not."""

    def __init__(self, aliases: Mapping[str, str]) -> None:
        self._aliases = {fold(k): v for k, v in aliases.items() if " " not in k.strip()}
        self._spaced_aliases = {_spaced(k): v for k, v in aliases.items() if " " in k.strip()}
        #: Any-case index: casefolded spelling -> the spellings (and what they mean) it may be.
        self._any_case: dict[str, dict[str, str]] = {}
        for key, ucum in [*self._aliases.items(), *((code, code) for code in _UCUM_COUNTS)]:
            self._any_case.setdefault(key.casefold(), {})[key] = ucum
        #: A spelling's unit, or the sentence of why it has none. The sentence, not the error: an
        #: exception raised again keeps every earlier traceback, and with it each call's frames.
        self._cache: dict[str, Unit | str] = {}

    def resolve(self, spelling: str) -> Unit:
        """One unit string: the alias table (exact), then UCUM (case-sensitive), then the alias
        table in any letter case where case cannot change the unit (README, "Letter case")."""
        cached = self._cache.get(spelling)
        if cached is None:
            try:
                cached = self._resolve(spelling)
            except UnitError as error:
                cached = str(error)
            if len(self._cache) < _CACHED_SPELLINGS:  # spellings come from the feeds: bounded
                self._cache[spelling] = cached
        if isinstance(cached, str):
            raise UnitError(cached)
        return cached

    def _resolve(self, spelling: str) -> Unit:
        if (spaced := self._spaced_aliases.get(_spaced(spelling))) is not None:
            return parse_ucum(spaced)
        folded = fold(spelling)
        if folded in self._aliases:
            return parse_ucum(self._aliases[folded])
        try:
            return parse_ucum(folded)
        except UnitError as not_ucum:
            candidates = self._any_case.get(folded.casefold(), {})
            meanings = {parse_ucum(ucum) for ucum in candidates.values()}
            if len(meanings) > 1:
                spelled = " or ".join(f"'{k}'" for k in sorted(candidates))
                raise UnitError(f"'{spelling}' could be {spelled}, which differ only in case") from None
            for key, ucum in candidates.items():
                if (why := _case_matters(folded, key)) is not None:
                    raise UnitError(
                        f"'{spelling}' differs from '{key}' only in letter case, and here case changes "
                        f"the unit ({why}); send it as '{key}'"
                    ) from None
                return parse_ucum(ucum)
            raise not_ucum from None

    def case_hint(self, spelling: str) -> str:
        """For a spelling that UCUM reads as something else than a count (``g/l``): which count
        unit it resembles in another case, as a sentence, or ''."""
        folded = fold(spelling)
        for key in self._any_case.get(folded.casefold(), {}):
            if key != folded:
                return f"; UCUM is case-sensitive: a count would be written '{key}'"
        return ""

    def _unit_of(self, code: str | None, system: str | None, text: str | None) -> Unit:
        """The unit a Quantity states; code and text must agree when both can be read.

        A code under a local (non-UCUM) system is still tried: such codes are nearly always the
        same spellings, and the alias table and UCUM parser refuse anything they do not know.
        """
        del system
        spellings = [s for s in (code, text) if s and s.strip()]
        if not spellings:
            raise UnitError("no unit was sent")
        found: list[tuple[str, Unit]] = []
        errors: list[str] = []
        for spelling in dict.fromkeys(spellings):
            try:
                found.append((spelling, self.resolve(spelling)))
            except UnitError as error:
                errors.append(str(error))
        if not found:
            sent = " / ".join(f"'{s}'" for s in dict.fromkeys(spellings))
            # A spelling refused by the letter-case rule says so: the fix is in the feed.
            case = [e for e in errors if "case" in e]
            raise UnitError(f"unknown unit {sent}" + (f": {case[0]}" if case else ""))
        first = found[0][1]
        for spelling, unit in found[1:]:
            if unit != first:
                raise UnitError(f"unit code '{found[0][0]}' and unit text '{spelling}' disagree")
        return first

    def to_per_uL(self, value: Decimal, code: str | None, system: str | None, text: str | None) -> Decimal:
        """A count per volume in cells/uL, exact."""
        unit = self._unit_of(code, system, text)
        if unit.dimension != PER_VOLUME:
            shown = code or text or ""
            raise UnitError(f"'{shown}' is not a count per volume{self.case_hint(shown)}")
        return _EXACT.multiply(value, _factor(unit.scale, _PER_M3_TO_PER_UL))

    def to_percent(self, value: Decimal, code: str | None, system: str | None, text: str | None) -> Decimal:
        """A dimensionless fraction expressed in percent (``%``, ``/100{WBCs}``), exact."""
        unit = self._unit_of(code, system, text)
        if unit.dimension != DIMENSIONLESS:
            raise UnitError(f"'{code or text}' is not a percentage")
        return _EXACT.multiply(value, _factor(unit.scale, _HUNDRED))

    def in_unit(
        self,
        value: Decimal,
        code: str | None,
        system: str | None,
        text: str | None,
        expected: str,
    ) -> Decimal:
        """A measure in a fixed unit (``pg``, ``ch``): converted by UCUM where it applies."""
        if expected == "ch":
            # Sysmex "channel" is an arbitrary analyser unit with no UCUM definition: it must be
            # sent as "ch" (or the annotation {ch}) and is never converted.
            if fold(code or text or "") in ("ch", "{ch}"):
                return value
            raise UnitError(f"'{code or text}' is not the analyser unit ch")
        unit = self._unit_of(code, system, text)
        target = parse_ucum(expected)
        if unit.dimension != target.dimension:
            raise UnitError(f"'{code or text}' cannot be converted to {expected}")
        with localcontext() as ctx:
            ctx.prec = 60
            return value * unit.scale / target.scale
