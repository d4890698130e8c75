"""What limits what the details page can say, each with what would fix it.

Access the EHR did not grant, parts of the record that could not be read, the card's context, and
every unusable result ``fhir_mappings`` reported, matched to a fix by the words of its sentence.
"""

from __future__ import annotations

from fhir_mappings.assessment import Assessment
from fhir_mappings.scope import Scope, ScopeAssessment
from smart_app.context import CardContext
from smart_app.page_model import Problem
from smart_app.record import PatientRecord

_SCOPE_FIX = (
    "Ask the EHR's administrators to grant the app {scope} (client {client}), then open it again "
    "from the card."
)
#: What the page loses when the EHR keeps a part of the record back: the part (as
#: ``PatientRecord.denied`` names it), the scope that reads it, and what goes missing.
_WITHHELD: tuple[tuple[str, str, str], ...] = (
    (
        "observations",
        "patient/Observation.rs",
        "The EHR did not grant the app access to laboratory results (patient/Observation.rs): "
        "no blood counts could be read, so no score, inputs or trends are shown.",
    ),
    (
        "conditions",
        "patient/Condition.rs",
        "The EHR did not grant the app access to diagnoses (patient/Condition.rs): whether the "
        "patient belongs to the population IChIS was derived in is not known.",
    ),
    (
        "patient",
        "patient/Patient.r",
        "The EHR did not grant the app access to the Patient resource (patient/Patient.r): "
        "the banner shows the patient id only.",
    ),
)

#: What would fix each kind of unusable result, by the words of fhir_mappings' own sentences
#: (observations.py and baseline.py). Sentences that already say what would fix them are left as
#: they are. A ``kind`` on fhir_mappings.observations.Problem would make this table unnecessary.
_FIXES: tuple[tuple[str, str], ...] = (
    (
        "has a unit that cannot be used",
        "Ask the laboratory to send the UCUM unit code with the result, or, if the spelling is "
        "unambiguous, add it under [unit_aliases] in the site configuration.",
    ),
    (
        "is preliminary",
        "Wait for the final result, or set baseline.accept_preliminary = true if your site accepts "
        "preliminary counts.",
    ),
    ("was reported without a value", "Repeat the blood count, or ask the laboratory why no value was sent."),
    ("has no collection time", "Ask the interface team to send the collection time (effectiveDateTime)."),
    ("unreadable collection time", "Ask the interface team to send a valid FHIR dateTime."),
    ("was sent as text", "Ask the laboratory to send the value as a Quantity with its unit."),
    ("has no quantity value", "Ask the laboratory to send the value as a Quantity with its unit."),
    ("has no value", "Ask the laboratory to send the value as a Quantity with its unit."),
    ("switched off", "Switch the research item on in the analyser if your site uses it."),
    ("negative value", "Ask the laboratory to correct the result."),
    ("unknown comparator", "Ask the laboratory to correct the result."),
    ("has no valid status", "Ask the interface team to send a result status (final, amended, corrected)."),
    ("which is not a result", "Wait for the final result."),
    ("disagree", "Ask the laboratory which result is right; a corrected result replaces the others."),
    ("has no WBC from the same sample", "A WBC from the same sample, or a reported IG#, would fix this."),
    ("without a time zone", "Ask the interface team to send times with their offset, as FHIR requires."),
    ("dated without a time", "Ask the interface team to send the collection time, not only the date."),
    (
        "No sample has both parts",
        "A CBC with differential reporting both NEUT# and IG# gives one-sample inputs.",
    ),
    ("was derived from IG%", "Ask the laboratory to report IG# directly."),
)


def fix_for(sentence: str) -> str | None:
    """What would fix the result a sentence calls unusable; None when the sentence says it itself."""
    if "would fix this" in sentence:
        return None
    return next((fix for words, fix in _FIXES if words in sentence), None)


def problems(
    assessment: Assessment,
    record: PatientRecord,
    scope: ScopeAssessment | None,
    context: CardContext,
    client_id: str,
) -> tuple[Problem, ...]:
    """Everything that limits what the page can say, each with what would fix it."""
    found = [
        Problem(sentence, _SCOPE_FIX.format(scope=needed, client=client_id), "access")
        for part, needed, sentence in _WITHHELD
        if part in record.denied
    ]
    found += [Problem(note, None, "access") for note in record.notes]
    if context.note:
        found.append(
            Problem(context.note + " The score is computed as of the time the app was opened.", None, "note")
        )
    if record.observations is not None:
        found += [Problem(reason, fix_for(reason), "data") for reason in assessment.reasons]
    if scope is not None and scope.scope is Scope.UNKNOWN:
        found.append(
            Problem(
                scope.sentence,
                "Record the cancer diagnosis (ICD-10 C34.x or SNOMED CT) in the problem list.",
                "data",
            )
        )
    return tuple(found)
