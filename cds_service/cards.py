"""The IChIS card: CDS Hooks 2.0.1 card attributes built from an assessment.

https://cds-hooks.hl7.org/2.0/#card-attributes. Pure: everything the card states comes from the
assessment, the orders and the scope passed in, and each number names the Observation it came from.

Indicator policy (documented in the README): ``warning`` for a complete IChIS 2 (the stratum with
the shortest published survival); ``info`` for everything else, including partial and unavailable
scores. Never ``critical``: a prognostic research marker is not an emergency.
"""

from __future__ import annotations

import json
import re
import string
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from fhir_mappings.assessment import Assessment
from fhir_mappings.medications import CheckpointOrder
from fhir_mappings.scope import Scope, ScopeAssessment
from ichis import wording
from ichis.measurement import Measurement
from ichis.reference import CITATION, DERIVATION_POPULATION, NATURE_OF_SCORE
from ichis.score import PART_LABELS, Part, Status

#: Namespace for card and suggestion uuids: uuid5(namespace, hookInstance|service|kind) makes the
#: same call give the same card uuid, so a retried hook does not create a second card.
CARD_NAMESPACE = uuid.UUID("6f1d3c3e-5a0b-4c8e-9a51-2a7f0f4e8b11")
OVERRIDE_SYSTEM = "urn:ichis:cds:override-reason"
TOPIC = {"system": "urn:ichis:cds:topic", "code": "ichis-prognosis", "display": "IChIS prognostic score"}
CBC_PANEL = {
    "system": "http://loinc.org",
    "code": "57021-8",
    "display": "CBC W Auto Differential panel - Blood",
}
#: Why a clinician may dismiss the card; the codes are ours, the displays are what they see.
OVERRIDE_REASONS = (
    ("already-considered", "Prognosis already discussed; score noted"),
    ("not-representative", "Blood count not representative (infection, steroids, G-CSF)"),
    ("outside-population", "Patient differs from the study population"),
    ("not-relevant", "Not relevant to this treatment decision"),
)
PD1_PDL1 = frozenset({"PD-1", "PD-L1"})

#: Every ASCII punctuation character: CommonMark lets each be escaped with a backslash, and
#: escaping them all leaves no emphasis, link, entity, list or table marker to the text.
_MD_PUNCTUATION = str.maketrans({c: "\\" + c for c in string.punctuation})
#: Line breaks (and other control characters) and runs of white space: a string echoed into
#: the card stays on its line, so it cannot start a heading, list, quote or code block.
_MD_SPACES = re.compile(r"[\s\x00-\x1f\x7f-\x9f\u2028\u2029]+")


def md(text: str) -> str:
    """Text from the record (or the request) as inert Markdown: what it holds is shown, never
    obeyed. One line, every punctuation character escaped: ``10*3/uL`` does not turn italic, a
    newline plus ``===`` makes no heading, and ``https://x`` or ``www.x`` is not autolinked (the
    escaped ``:`` and ``.`` break the patterns GFM and linkify look for)."""
    return _MD_SPACES.sub(" ", text).strip().translate(_MD_PUNCTUATION)


@dataclass(frozen=True, slots=True)
class CardContext:
    """What the card is about, besides the assessment."""

    hook_instance: str
    service_id: str
    patient_id: str
    orders: Sequence[CheckpointOrder]
    scope: ScopeAssessment
    launch_url: str
    source_url: str
    at: datetime


def _strong(text: str) -> str:
    return f"**{text}**"


def _input_row(part: Part, measurement: Measurement | None, points: int | None, at: datetime) -> str:
    label = PART_LABELS[part]
    cutoff = wording.cutoff(part)
    if measurement is None:
        return f"| {md(label)} | no usable result | | | unknown (cut-off {cutoff}) | |"
    source = measurement.source
    if measurement.derived:
        pct, wbc = measurement.derived_from
        sent = wording.derivation(measurement) + " (derived)"
        refs = f"{pct.reference}, {wbc.reference}"
    else:
        comparator = measurement.comparator.value if measurement.comparator else ""
        sent = f"{comparator}{source.value_as_sent} {source.unit_as_sent}".strip()
        refs = source.reference
    collected = f"{wording.when(source.effective)} ({wording.age(source.effective, at)})"
    return (
        f"| {md(label)} | {md(sent)} | {md(measurement.shown())} (cut-off {cutoff}) | "
        f"{collected} | {wording.points(points)} | {md(refs)} |"
    )


def _summary(assessment: Assessment, scope: ScopeAssessment, lookback_days: int) -> str:
    result = assessment.result
    if result.status is Status.COMPLETE and result.stratum is not None:
        s = result.stratum
        text = (
            f"{wording.headline(result)}: published median OS {s.median_os_days.value} days "
            f"(PFS {s.median_pfs_days.value}) in one NSCLC cohort; a research marker"
        )
    elif result.status is Status.PARTIAL:
        missing = ", ".join(wording.SHORT_NAMES[p.part] for p in result.parts.values() if p.points is None)
        text = f"{wording.headline(result)}: {missing} missing from the baseline blood count"
    else:
        text = (
            f"{wording.headline(result)}: no usable blood count with differential in the last "
            f"{lookback_days} days"
        )
    if scope.scope is not Scope.NSCLC:
        suffix = {
            Scope.SMALL_CELL: " (small-cell: outside study population)",
            Scope.NO_LUNG_CANCER: " (no lung cancer on record)",
            Scope.UNKNOWN: " (diagnosis unknown)",
        }[scope.scope]
        if len(text) + len(suffix) < 140:
            text += suffix
    return text if len(text) < 140 else text[:136] + "..."


def _detail(assessment: Assessment, ctx: CardContext) -> str:
    result = assessment.result
    lines: list[str] = []
    if ctx.scope.scope is not Scope.NSCLC:
        lines.append(f"**Outside the study population:** {md(ctx.scope.sentence)}")
        lines.append("")
    others = [o for o in ctx.orders if o.target not in PD1_PDL1]
    if others:
        names = ", ".join(f"{o.drug} ({o.target})" for o in others)
        lines.append(
            f"**Note:** IChIS was derived with PD-1/PD-L1 monotherapy; this order includes {md(names)}."
        )
        lines.append("")
    if result.status is Status.COMPLETE:
        lines.append(f"**{wording.headline(result)}** at the order time ({wording.when(ctx.at)}).")
    elif result.status is Status.PARTIAL:
        lines.append(f"**IChIS between {result.lower} and {result.upper} of 2**: {wording.NO_STRATUM}.")
    else:
        lines.append("**IChIS cannot be computed** from the blood counts available.")
    lines += [
        "",
        "| Part | Result as sent | Normalised | Collected | Points | Source |",
        "|---|---|---|---|---|---|",
    ]
    for part in (Part.NEUTROPHILS, Part.IMMATURE_GRANULOCYTES):
        outcome = result.parts[part]
        lines.append(_input_row(part, outcome.measurement, outcome.points, ctx.at))
    lines.append("")
    if result.stratum is not None:
        lines.append(wording.stratum_sentence(result.stratum, _strong))
        lines.append("")
    if assessment.reasons:
        lines.append("**Data notes:**")
        lines.append("")
        lines += [f"- {md(reason)}" for reason in assessment.reasons]
        lines.append("")
    orders = "; ".join(f"{o.drug} ({o.order}, matched by {o.matched_by})" for o in ctx.orders)
    lines.append(f"**Order:** {md(orders)}")
    lines.append("")
    lines.append(f"**What this is:** {NATURE_OF_SCORE} Derived in {DERIVATION_POPULATION}.")
    lines.append("")
    lines.append(f"*{md(CITATION.text)}*")
    return "\n".join(lines)


def card_uuid(hook_instance: str, service_id: str, kind: str) -> str:
    return str(uuid.uuid5(CARD_NAMESPACE, f"{hook_instance}|{service_id}|{kind}"))


def build_card(assessment: Assessment, ctx: CardContext, lookback_days: int) -> dict[str, Any]:
    """One card for the patient's checkpoint-inhibitor order(s)."""
    result = assessment.result
    indicator = wording.indicator(result)
    source: dict[str, Any] = {"label": "IChIS (Kang et al. 2024)", "topic": TOPIC}
    if ctx.source_url:
        source["url"] = ctx.source_url
    app_context = {
        "hookInstance": ctx.hook_instance,
        "patientId": ctx.patient_id,
        # One order may name two drugs (nivolumab + ipilimumab): each order once.
        "orders": list(dict.fromkeys(o.order for o in ctx.orders)),
        "order": ctx.orders[0].order if ctx.orders else None,
        "at": ctx.at.isoformat(),
    }
    card: dict[str, Any] = {
        "uuid": card_uuid(ctx.hook_instance, ctx.service_id, "ichis"),
        "summary": _summary(assessment, ctx.scope, lookback_days),
        "indicator": indicator,
        "detail": _detail(assessment, ctx),
        "source": source,
        "overrideReasons": [
            {"system": OVERRIDE_SYSTEM, "code": code, "display": display}
            for code, display in OVERRIDE_REASONS
        ],
        "links": [
            {
                "label": "IChIS details: inputs, trends and published strata",
                "url": ctx.launch_url,
                "type": "smart",
                "appContext": json.dumps(app_context, separators=(",", ":")),
            }
        ],
    }
    if result.status is not Status.COMPLETE:
        card["suggestions"] = [_cbc_suggestion(ctx)]
        card["selectionBehavior"] = "at-most-one"
    return card


def _cbc_suggestion(ctx: CardContext) -> dict[str, Any]:
    """Propose the blood count that would let the score be computed."""
    request = {
        "resourceType": "ServiceRequest",
        "status": "draft",
        "intent": "order",
        "category": [
            {
                "coding": [
                    {
                        "system": "http://snomed.info/sct",
                        "code": "108252007",
                        "display": "Laboratory procedure",
                    }
                ]
            }
        ],
        "code": {
            "coding": [CBC_PANEL],
            "text": "CBC with automated differential including immature granulocytes",
        },
        "subject": {"reference": f"Patient/{ctx.patient_id}"},
        "note": [{"text": "Please report immature granulocytes (IG#) with the differential."}],
    }
    return {
        "label": "Order CBC with differential including immature granulocytes",
        "uuid": card_uuid(ctx.hook_instance, ctx.service_id, "suggest-cbc"),
        "isRecommended": True,
        "actions": [
            {
                "type": "create",
                "description": "Order a CBC with automated differential (LOINC 57021-8) reporting IG#",
                "resource": request,
            }
        ],
    }
