"""One declaration per CDS service: discovery and routing both read from here.

Discovery response: https://cds-hooks.hl7.org/2.0/#response. Prefetch templates use only
CDS Hooks 2.0 prefetch tokens ({{context.patientId}}); the lab query is generated from the site's
code table so that a local code added in configuration is also prefetched.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fhir_mappings.config import MappingConfig
from fhir_mappings.queries import condition_template, observation_template

#: Concepts whose Observations the card needs (the two parts, and what derives IG#).
CARD_CONCEPTS = ("neutrophils", "immature_granulocytes", "immature_granulocytes_percent", "leukocytes")


@dataclass(frozen=True, slots=True)
class ServiceDeclaration:
    id: str
    hook: str
    title: str
    description: str
    usage_requirements: str


_DESCRIPTION = (
    "When a checkpoint inhibitor is {verb}, states IChIS (neutrophils > 9,000/uL and immature "
    "granulocytes > 80/uL, one point each) from the baseline blood count and the survival stratum "
    "published for it (Kang et al. 2024). A prognostic research marker from one NSCLC cohort."
)
_USAGE = (
    "Prefetch or FHIR access to the patient's Observations (blood count with differential) and "
    "Conditions. Orders without a checkpoint inhibitor receive no card."
)


def _order_service(service_id: str, hook: str, title: str, verb: str) -> ServiceDeclaration:
    """A service on an order hook: both say the same but for the moment they answer."""
    return ServiceDeclaration(
        id=service_id,
        hook=hook,
        title=title,
        description=_DESCRIPTION.format(verb=verb),
        usage_requirements=_USAGE,
    )


SERVICES: tuple[ServiceDeclaration, ...] = (
    _order_service(
        "ichis-prognosis",
        "order-select",
        "IChIS prognostic score for checkpoint inhibitor orders",
        "selected",
    ),
    _order_service("ichis-prognosis-sign", "order-sign", "IChIS prognostic score at order signing", "signed"),
)
BY_ID = {service.id: service for service in SERVICES}


def lab_codes(mapping: MappingConfig) -> list[str]:
    """``system|code`` tokens of the card's concepts and the panels that carry them, in table order."""
    return mapping.search_codes(CARD_CONCEPTS)


def prefetch_templates(mapping: MappingConfig, lab_count: int) -> dict[str, str]:
    """The prefetch templates; ``lab_count`` bounds the Observations per page (100 is about 16
    complete blood counts of the four concepts, several times the 14-day look-back)."""
    # Only what the card reads: the score needs no Patient resource, and asking for one would cost
    # a call and a wider scope, and a 412 where the EHR withholds it (CDS Hooks 2.0.1 asks for the
    # minimum necessary).
    return {
        "labs": observation_template(lab_codes(mapping), count=lab_count),
        "conditions": condition_template(),
    }


def discovery(mapping: MappingConfig, lab_count: int) -> dict[str, Any]:
    templates = prefetch_templates(mapping, lab_count)
    return {
        "services": [
            {
                "id": s.id,
                "hook": s.hook,
                "title": s.title,
                "description": s.description,
                "prefetch": templates,
                "usageRequirements": s.usage_requirements,
            }
            for s in SERVICES
        ]
    }
