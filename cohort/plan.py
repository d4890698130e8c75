"""The extraction plan: the SQL statements that narrow Bulk Data NDJSON to each patient's candidates.

The plan is written once. A :class:`Dialect` renders the handful of functions whose spelling differs
between DuckDB and Spark SQL (JSON parsing with a schema, list lambdas, regular expressions, string
literals); everything else (joins, windows, date arithmetic, ordering) is the same text on both.

The engines only narrow: they keep Observations whose codes are in the site's tables and whose dates
fall in a conservative window around the first dose, and hand the original JSON text of those few
rows to Python, which decides with ``fhir_mappings`` (exact decimals, the service's baseline rules).

Input views (one column ``line``: one NDJSON line each): ``src_patient``, ``src_observation``,
``src_condition``, ``src_medicationadministration``, ``src_medicationrequest``, ``src_medication``.
Registered table: ``cohort_patients(patient, dose_date)`` after the first-dose step.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cohort import codes
from cohort.codes import Code
from cohort.definition import CohortDefinition
from cohort.matching import spellings

#: Resource types the plan reads, and the name of the view holding each one's lines.
RESOURCE_TYPES = (
    "Patient",
    "Observation",
    "Condition",
    "MedicationAdministration",
    "MedicationRequest",
    "Medication",
)


def view_of(resource_type: str) -> str:
    return f"src_{resource_type.lower()}"


# The order the extraction reads a query's rows in, by result column: the queries hold no ORDER BY,
# each engine sorts its own way (Engine.stream).
#: Dose candidates: each patient's, earliest first within each source.
DOSE_ORDER = ("patient", "source", "day", "t")
#: Candidate resources: each patient's together (records.py orders them itself).
RESOURCE_ORDER = ("patient",)


# JSON schemas of the elements the plan reads; everything else stays in the line for Python.
_STR = "string"
_CODINGS: dict[str, Any] = {"coding": [{"system": _STR, "code": _STR}]}
_REFERENCE = {"reference": _STR}
PATIENT: dict[str, Any] = {"id": _STR}
OBSERVATION: dict[str, Any] = {
    "subject": _REFERENCE,
    "code": _CODINGS,
    "component": [{"code": _CODINGS}],
    "effectiveDateTime": _STR,
    "effectiveInstant": _STR,
    "effectivePeriod": {"start": _STR, "end": _STR},
    "hasMember": [_REFERENCE],
    "valueCodeableConcept": _CODINGS,
}
#: What the last-contact query reads of every Observation.
CONTACT: dict[str, Any] = {
    "subject": _REFERENCE,
    "status": _STR,
    "code": _CODINGS,
    "effectiveDateTime": _STR,
    "effectiveInstant": _STR,
    "effectivePeriod": {"start": _STR},
    "valueCodeableConcept": _CODINGS,
}
CONDITION: dict[str, Any] = {"subject": _REFERENCE, "code": _CODINGS}
ADMINISTRATION: dict[str, Any] = {
    "subject": _REFERENCE,
    "status": _STR,
    "effectiveDateTime": _STR,
    "effectivePeriod": {"start": _STR},
    "medicationReference": _REFERENCE,
}
REQUEST: dict[str, Any] = {
    "subject": _REFERENCE,
    "status": _STR,
    "intent": _STR,
    "authoredOn": _STR,
    "medicationReference": _REFERENCE,
}
MEDICATION: dict[str, Any] = {"id": _STR}


@dataclass(frozen=True)
class Dialect:
    """How one SQL engine spells the few functions that differ."""

    name: str

    def literal(self, text: str) -> str:
        if self.name == "spark":
            # Spark SQL processes backslash escapes inside string literals.
            return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"
        return "'" + text.replace("'", "''") + "'"

    def from_json(self, expr: str, schema: Mapping[str, Any], when: str | None = None) -> str:
        """``expr`` parsed with ``schema``; NULL where ``when`` (a column computed below) is false."""
        if self.name == "spark":
            return self._spark_parse(f"CASE WHEN {when} THEN {expr} END" if when else expr, dict(schema), 0)
        # Filters are written below the parse, but the optimiser may place them after it (filter
        # pull-up): a blank line must not reach the parser, which refuses it, and a line the filter
        # drops must not cost a parse.
        structure = self.literal(json.dumps(_duckdb_structure(schema)))
        return f"from_json(CASE WHEN {when or _nonblank(expr)} THEN {expr} END, {structure})"

    def _spark_parse(self, expr: str, node: dict[str, Any], depth: int) -> str:
        """Spark's from_json, read as DuckDB reads: an element of the wrong JSON type is NULL, and
        the rest of its object and array are kept.

        PERMISSIVE mode (with Spark's partial results) keeps the object around a wrongly typed
        field, but one element of an array that is not an object would null the whole array. So
        arrays are read as arrays of JSON text, and each element is parsed on its own. Lambdas bind
        each parse once (``transform(array(x), p -> ...)[0]``) so no text is parsed twice.
        """
        var = f"p{depth}"
        parsed = f"from_json({expr}, {self.literal(_ddl(node, flat=True))}, map('mode', 'PERMISSIVE'))"
        return f"transform(array({parsed}), {var} -> {self._spark_rebuild(var, node, depth)})[0]"

    def _spark_rebuild(self, expr: str, node: Any, depth: int) -> str:
        if isinstance(node, dict):
            fields = ", ".join(
                f"'{k}', {self._spark_rebuild(f'{expr}.`{k}`', value, depth)}" for k, value in node.items()
            )
            return f"CASE WHEN {expr} IS NULL THEN NULL ELSE named_struct({fields}) END"
        if isinstance(node, list):
            element = f"x{depth}"
            inner = self._spark_parse(element, node[0], depth + 1) if isinstance(node[0], dict) else element
            return f"transform({expr}, {element} -> {inner})"
        return expr

    def _keys(self, codings: str, var: str) -> str:
        if self.name == "spark":
            return f"transform({codings}, {var} -> concat({var}.system, '|', {var}.code))"
        return f"list_transform({codings}, lambda {var}: {var}.system || '|' || {var}.code)"

    def _array(self, keys: Sequence[str]) -> str:
        items = ", ".join(self.literal(k) for k in keys)
        return f"array({items})" if self.name == "spark" else f"[{items}]"

    def _wanted(self, codes: Sequence[Code]) -> str:
        """``codes`` as a list of ``system|code`` keys, under every spelling of their system (LOINC's
        HL7 OID, https, a trailing slash): the Python step reads those as the canonical system, so
        the engines must keep them too."""
        return self._array([f"{system}|{code}" for system, code in spellings(codes)])

    def codes_in(self, codings: str, codes: Sequence[Code]) -> str:
        """True when any Coding of a CodeableConcept.coding list is one of ``codes``."""
        return self.keys_in(self.coding_keys(codings), codes)

    def coding_keys(self, codings: str) -> str:
        """The ``system|code`` keys of a CodeableConcept.coding list (computed once, tested often)."""
        return self._keys(codings, "c")

    def keys_in(self, keys: str, codes: Sequence[Code]) -> str:
        """True when a list of ``system|code`` keys holds one of ``codes``."""
        if not codes:
            return "false"
        wanted = self._wanted(codes)
        if self.name == "spark":
            return f"coalesce(arrays_overlap({keys}, {wanted}), false)"
        return f"coalesce(list_has_any({keys}, {wanted}), false)"

    def component_codes_in(self, components: str, codes: Sequence[Code]) -> str:
        """True when any component's code has one of ``codes``."""
        if not codes:
            return "false"
        keys = self._wanted(codes)
        if self.name == "spark":
            inner = f"arrays_overlap({self._keys('x.code.coding', 'c')}, {keys})"
            return f"coalesce(exists({components}, x -> coalesce({inner}, false)), false)"
        nested = f"list_transform({components}, lambda x: {self._keys('x.code.coding', 'c')})"
        return f"coalesce(list_has_any(flatten({nested}), {keys}), false)"

    def may_have_code(self, codings: str, codes: Sequence[Code]) -> str:
        """A cheap superset of "a Coding of the list has one of ``codes``": the code alone, on the
        first Coding when there is only one (most Observations), so that the exact tests, which
        build a key per Coding, run on the few rows that pass."""
        values = self._array(sorted({code for _, code in codes}))
        if self.name == "spark":
            return f"coalesce(exists({codings}, c -> array_contains({values}, c.code)), false)"
        return f"coalesce(len({codings}) > 1 OR list_contains({values}, {codings}[1].code), false)"

    @property
    def string_type(self) -> str:
        return "STRING" if self.name == "spark" else "VARCHAR"

    def ident(self, name: str) -> str:
        """A quoted identifier (FHIR element names such as ``end`` are SQL keywords)."""
        return f"`{name}`" if self.name == "spark" else f'"{name}"'

    def contains(self, expr: str, text: str) -> str:
        return f"contains({expr}, {self.literal(text)})"

    def matches(self, expr: str, pattern: str) -> str:
        if self.name == "spark":
            return f"({expr} RLIKE {self.literal(pattern)})"
        return f"regexp_matches({expr}, {self.literal(pattern)})"


DUCKDB = Dialect("duckdb")
SPARK = Dialect("spark")


def _ddl_type(node: Any, *, flat: bool) -> str:
    if isinstance(node, dict):
        return "STRUCT<" + ", ".join(f"`{k}`: {_ddl_type(v, flat=flat)}" for k, v in node.items()) + ">"
    if isinstance(node, list):
        # flat: an array of JSON texts, each parsed on its own (Dialect._spark_parse).
        return "ARRAY<STRING>" if flat else f"ARRAY<{_ddl_type(node[0], flat=flat)}>"
    return "STRING"


def _ddl(schema: Mapping[str, Any], *, flat: bool = False) -> str:
    return ", ".join(f"`{k}` {_ddl_type(v, flat=flat)}" for k, v in schema.items())


def _duckdb_structure(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _duckdb_structure(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_duckdb_structure(node[0])]
    return "VARCHAR"


def _date(expr: str) -> str:
    """The calendar date a FHIR date/dateTime was written with (its first ten characters), or NULL.

    Only ``YYYY-MM-DD`` counts (the FHIR form, and the only one dates.written_day reads): DuckDB and
    Spark would also read "2024/01/01" or "2024-1-1T08:00", each its own way, and Spark would read
    "2024-03" as March 1st. Checking each character is cheaper than a regular expression.
    """
    digits = " AND ".join(f"substr({expr}, {i}, 1) BETWEEN '0' AND '9'" for i in (1, 2, 3, 4, 6, 7, 9, 10))
    # Year 0000 is no date for Python; DuckDB and Spark would read it.
    dashes = f"substr({expr}, 5, 1) = '-' AND substr({expr}, 8, 1) = '-' AND substr({expr}, 1, 4) <> '0000'"
    form = f"length({expr}) >= 10 AND {dashes} AND {digits}"
    return f"(CASE WHEN {form} THEN TRY_CAST(substr({expr}, 1, 10) AS DATE) END)"


def _reference_id(reference: str, resource_type: str) -> str:
    """``Patient/123``, ``https://server/fhir/Patient/123`` or ``Patient/123/_history/2`` -> ``123``.

    The common relative form is cut out without a regular expression (most lines have it).
    """
    prefix = f"{resource_type}/"
    rest = f"substr({reference}, {len(prefix) + 1})"
    return (
        f"(CASE WHEN {reference} LIKE '{prefix}%' AND instr({rest}, '/') = 0 THEN {rest} "
        f"ELSE nullif(regexp_extract({reference}, '(^|/){prefix}([^/]+)(/_history/[^/]+)?$', 2), '') END)"
    )


def _patient(reference: str) -> str:
    return _reference_id(reference, "Patient")


def _nonblank(column: str = "line") -> str:
    """A line that holds something: not empty and not only whitespace (an NDJSON file may end in
    blank lines). Nearly every line starts with '{', which settles it without trimming a copy."""
    # JSON whitespace is space, tab, CR and LF (RFC 8259, section 2); translate() drops them.
    spaces = " \t\r\n"
    blank = f"translate({column}, '{spaces}', '') = ''"
    return f"{column} IS NOT NULL AND (substr({column}, 1, 1) = '{{' OR NOT {blank})"


def _may_mention(d: Dialect, codes: Sequence[Code], column: str = "line") -> str:
    """A test on the raw text that every Observation the plan may keep passes, so that the lines
    that fail it (vital signs, other laboratory tests: most of an export) are never parsed.

    A kept Observation has one of ``codes`` as a JSON string, or a panel's ``hasMember`` or a
    ``component`` key, each written as is unless a character of it is escaped (``\\u002d`` for
    "-", ``\\/`` for "/"): a line with any backslash is kept too, and parsed.
    """
    quoted = [json.dumps(code, ensure_ascii=False) for code in sorted({c for _, c in codes})]
    pattern = _any_of([*quoted, '"hasMember"', '"component"'], _regex_literal)
    # The backslash is a test of its own: as one more alternative it made the expression four
    # times slower (RE2 no longer skips ahead to the quotes).
    return f"({d.matches(column, pattern)} OR {d.contains(column, chr(92))})"


def _any_of(words: Iterable[str], escape: Callable[[str], str]) -> str:
    """A pattern that finds any of ``words``, written as a tree of their common beginnings
    (``"(?:7(?:31-0"|42-7")|hasMember")`` for ``"731-0"``, ``"742-7"`` and ``"hasMember"``).

    It finds the same lines as the plain alternation. RE2 (DuckDB) compiles both alike, but
    java.util.regex (Spark) tries each alternative at every character of the line: the tree
    tests one character where no word can begin, one per branch elsewhere.
    """
    tree: dict[str, Any] = {}
    for word in words:
        node = tree
        for ch in word:
            node = node.setdefault(ch, {})
        node[""] = {}
    return _branches(tree, escape)


def _branches(node: dict[str, Any], escape: Callable[[str], str]) -> str:
    if "" in node:
        # A word ends here: a search that found it need not look for the longer words it begins.
        return ""
    branches = [escape(ch) + _branches(child, escape) for ch, child in sorted(node.items())]
    return branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"


def _regex_literal(text: str) -> str:
    """``text`` as a pattern that matches it literally, in RE2 (DuckDB) and java.util.regex (Spark)."""
    return "".join(f"\\{ch}" if ch in "\\.^$|?*+()[]{}" else ch for ch in text)


def _drug_pattern(definition: CohortDefinition) -> str:
    """A superset of checkpoint-inhibitor mentions (codes and names) in a lower-cased line.

    Python confirms every candidate with the drug table, so this only has to miss nothing.
    """
    words = {code.lower() for _, code in definition.drug_codes()} | {
        name.lower() for name in definition.drug_names()
    }
    # The line is raw JSON: a name outside ASCII may be written as \u escapes ("키트루다" as
    # "\ud0a4..."), which lower() leaves in lower-case hex, as json.dumps writes them.
    words |= {json.dumps(w)[1:-1] for w in words if not w.isascii()}
    return _any_of(words, re.escape)


def dose_candidates(definition: CohortDefinition, dialect: Dialect) -> str:
    """Each patient's orders and administrations that mention a checkpoint inhibitor, earliest first.

    All of them, not the first few: a premedication whose note names the drug mentions it too, and
    only Python's drug table can tell the two apart (it stops parsing at the first confirmed day).
    Administrations after the cut-off or not done are kept too: they say that a patient's
    administrations are recorded, so an order alone is no dose (doses.first_dose).

    Rows: patient, source (resource type), time (as sent), line, the referenced Medication's line,
    the day of the time; to be read in :data:`DOSE_ORDER`.
    """
    d = dialect
    pattern = _drug_pattern(definition)
    not_orders = ", ".join(d.literal(s) for s in codes.NOT_ORDER_INTENTS)
    return f"""
WITH med AS (
  SELECT r.id AS id, line AS med_line
  FROM (SELECT {d.from_json("line", MEDICATION)} AS r, line FROM {view_of("Medication")} WHERE {_nonblank()})
  WHERE {d.matches("lower(line)", pattern)}
),
orders AS (
  SELECT {_patient("r.subject.reference")} AS patient, 'MedicationAdministration' AS source,
         coalesce(r.effectiveDateTime, r.effectivePeriod.start) AS t, r.status AS status,
         CAST(NULL AS {d.string_type}) AS intent, r.medicationReference.reference AS medref, line
  FROM (SELECT {d.from_json("line", ADMINISTRATION)} AS r, line
        FROM {view_of("MedicationAdministration")} WHERE {_nonblank()})
  UNION ALL
  SELECT {_patient("r.subject.reference")} AS patient, 'MedicationRequest' AS source,
         r.authoredOn AS t, r.status AS status, r.intent AS intent,
         r.medicationReference.reference AS medref, line
  FROM (SELECT {d.from_json("line", REQUEST)} AS r, line
        FROM {view_of("MedicationRequest")} WHERE {_nonblank()})
),
candidates AS (
  SELECT o.patient, o.source, o.t, o.line, m.med_line, {_date("o.t")} AS day
  FROM orders o LEFT JOIN med m ON {_reference_id("o.medref", "Medication")} = m.id
  WHERE o.patient IS NOT NULL
    AND coalesce(o.status, '') <> 'entered-in-error'
    AND coalesce(o.intent, '') NOT IN ({not_orders})
    AND ({d.matches("lower(o.line)", pattern)} OR m.id IS NOT NULL)
)
SELECT patient, source, t, line, med_line, day FROM candidates
"""  # noqa: S608 - literals are quoted by the dialect; the rest is the plan's own text


def _event_rules(definition: CohortDefinition, d: Dialect) -> str:
    """Observations an event rule may count: its code and, when the rule names values, one of them.

    Python applies the rules again (status, dates); this only has to keep every line they could
    count. A rule with values drops e.g. the "stable" disease-status Observations, most of them.
    Events before the first dose are kept too: a death dated before it is named in the row's notes.
    """
    terms = []
    for rule in definition.death_rules + definition.progression_rules:
        if rule.resource != "Observation":
            continue
        term = d.keys_in("o.keys", sorted(rule.codes))
        if rule.values is not None:
            term = f"({term} AND {d.codes_in('o.answers', sorted(rule.values))})"
        terms.append(term)
    return "(" + " OR ".join(terms) + ")" if terms else "false"


def patients_in_input(dialect: Dialect) -> str:
    """The ids of the Patient resources in the input: who was seen. Rows: patient."""
    d = dialect
    return f"""
SELECT DISTINCT r.id AS patient
FROM (SELECT {d.from_json("line", PATIENT)} AS r FROM {view_of("Patient")} WHERE {_nonblank()})
WHERE r.id IS NOT NULL
"""  # noqa: S608 - the view name is ours, no user text


def patient_resources(definition: CohortDefinition, dialect: Dialect) -> str:
    """Every cohort patient's Patient line, candidate Observations and Conditions.

    Observation windows are conservative (margins for time zones, see CohortDefinition): the exact
    rules are applied in Python. Rows: patient, resource type, line; to be read in
    :data:`RESOURCE_ORDER`.
    """
    d = dialect
    before, after = definition.lab_window_days
    ecog_days = definition.ecog_window_days + 1
    lab = definition.lab_codes()
    events = _event_rules(definition, d)
    covariates = sorted(definition.pdl1_codes | definition.smoking_codes)
    ecog = sorted(definition.ecog_codes)
    rules = definition.death_rules + definition.progression_rules
    wanted = [
        *lab,
        *ecog,
        *covariates,
        *(c for rule in rules if rule.resource == "Observation" for c in rule.codes),
    ]
    end = d.ident("end")
    # Only lines that may mention a wanted code are parsed; the others read as NULL and fail the
    # tests on parsed fields. (A filter below the parse would be moved above it by the optimiser.)
    mentions = f"{_may_mention(d, wanted)} AND {_nonblank()}"
    # An Observation's day is the first of its times that reads as a date (dates.window_day).
    # Each date is parsed on its own, so a malformed first one never hides a usable later one: a
    # superset of what Python reads. Events are kept at any date: a registry dates a death by its
    # value, entered weeks later, perhaps only to the month ("2023-05"), and Python decides.
    times = ("effectiveDateTime", "effectiveInstant", "effectivePeriod.start", f"effectivePeriod.{end}")
    day = ", ".join(_date(f"r.{path}") for path in times)
    return f"""
WITH parsed AS (
  SELECT {_patient("r.subject.reference")} AS patient, r, line
  FROM (SELECT {d.from_json("line", OBSERVATION, when=mentions)} AS r, line FROM {view_of("Observation")})
  WHERE r.hasMember IS NOT NULL OR r.component IS NOT NULL OR {d.may_have_code("r.code.coding", wanted)}
),
obs AS (
  -- Dates and code keys only for the cohort's patients (the join drops the others first).
  SELECT c.patient, c.dose_date, coalesce({day}) AS day, {d.coding_keys("r.code.coding")} AS keys,
         r.component AS component, r.hasMember IS NOT NULL AS panel,
         r.valueCodeableConcept.coding AS answers, line
  FROM parsed p JOIN cohort_patients c ON p.patient = c.patient
),
conditions AS (
  SELECT {_patient("r.subject.reference")} AS patient, r.code.coding AS codings, line
  FROM (SELECT {d.from_json("line", CONDITION)} AS r, line FROM {view_of("Condition")} WHERE {_nonblank()})
),
patients AS (
  SELECT r.id AS patient, line
  FROM (SELECT {d.from_json("line", PATIENT)} AS r, line FROM {view_of("Patient")} WHERE {_nonblank()})
)
SELECT o.patient, 'Observation' AS kind, o.line
FROM obs o
WHERE ((o.day IS NULL OR o.day BETWEEN o.dose_date - {before} AND o.dose_date + {after})
       AND (o.panel OR {d.keys_in("o.keys", lab)} OR {d.component_codes_in("o.component", lab)}))
   OR (o.day BETWEEN o.dose_date - {ecog_days} AND o.dose_date + 1 AND {d.keys_in("o.keys", ecog)})
   OR (o.day <= o.dose_date + 1 AND {d.keys_in("o.keys", covariates)})
   OR {events}
UNION ALL
SELECT c.patient, 'Condition' AS kind, x.line
FROM conditions x JOIN cohort_patients c ON x.patient = c.patient
WHERE {d.codes_in("x.codings", definition.condition_codes())}
UNION ALL
SELECT c.patient, 'Patient' AS kind, p.line
FROM patients p JOIN cohort_patients c ON p.patient = c.patient
"""  # noqa: S608 - as above


def last_contacts(definition: CohortDefinition, dialect: Dialect) -> str:
    """Each cohort patient's last dated Observation or administration on or before the cut-off.

    Only run for ``follow_up = "last-contact"``: it reads every Observation a second time.
    An Observation that records an event (a death, a progression) is no contact by its own time:
    Python dates it by the event (``valueDateTime`` first, outcomes.event_dates) and counts that
    day, so a registry entry made during follow-up about a death on another day never extends
    follow-up to the day it was typed. Rows: patient, date.
    """
    d = dialect
    cutoff = f"DATE '{definition.cutoff.isoformat()}'"
    effective = "coalesce(r.effectiveDateTime, r.effectiveInstant, r.effectivePeriod.start)"
    # A result withdrawn, or an administration not given, is no contact with the patient.
    void_results = ", ".join(d.literal(s) for s in codes.VOID_RESULT_STATUSES)
    void_doses = ", ".join(d.literal(s) for s in codes.VOID_DOSE_STATUSES)
    return f"""
WITH observations AS (
  SELECT {_patient("r.subject.reference")} AS patient, {_date(effective)} AS day,
         {d.coding_keys("r.code.coding")} AS keys, r.valueCodeableConcept.coding AS answers
  FROM (SELECT {d.from_json("line", CONTACT)} AS r FROM {view_of("Observation")} WHERE {_nonblank()})
  WHERE coalesce(r.status, '') NOT IN ({void_results})
),
dated AS (
  SELECT o.patient, o.day FROM observations o WHERE NOT {_event_rules(definition, d)}
  UNION ALL
  SELECT {_patient("r.subject.reference")} AS patient,
         {_date("coalesce(r.effectiveDateTime, r.effectivePeriod.start)")} AS day
  FROM (SELECT {d.from_json("line", ADMINISTRATION)} AS r
        FROM {view_of("MedicationAdministration")} WHERE {_nonblank()})
  WHERE coalesce(r.status, '') NOT IN ({void_doses})
)
SELECT c.patient, max(x.day) AS day
FROM dated x JOIN cohort_patients c ON x.patient = c.patient
WHERE x.day <= {cutoff}
GROUP BY c.patient
ORDER BY 1
"""  # noqa: S608 - as above
