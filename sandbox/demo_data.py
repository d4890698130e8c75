"""Demo patients for the sandbox and the tests: one per stratum and one per data problem.

Every patient is fictional. Results are dated relative to the moment they are loaded, so the
baseline blood count is always "yesterday" for a demo run today. Resources carry fixed ids and are
loaded with PUT in one transaction, so loading twice replaces rather than duplicates.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import requests

from fhir_mappings.bundles import dumps

LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
SNOMED = "http://snomed.info/sct"
ICD10 = "http://hl7.org/fhir/sid/icd-10"

CODES = {
    "neutrophils": ("751-8", "Neutrophils [#/volume] in Blood by Automated count"),
    "ig": ("53115-2", "Immature granulocytes [#/volume] in Blood by Automated count"),
    "ig_percent": ("71695-1", "Immature granulocytes/Leukocytes in Blood by Automated count"),
    "wbc": ("6690-2", "Leukocytes [#/volume] in Blood by Automated count"),
    "lymphocytes": ("731-0", "Lymphocytes [#/volume] in Blood by Automated count"),
    "platelets": ("777-3", "Platelets [#/volume] in Blood by Automated count"),
}


@dataclass(frozen=True)
class Lab:
    concept: str
    value: str
    unit: str
    ucum: bool = True  # False: only the unit text is sent, no UCUM code (as many feeds do)


@dataclass(frozen=True)
class Draw:
    days_ago: float
    labs: tuple[Lab, ...]
    offset_hours: int = 9


@dataclass(frozen=True)
class DemoPatient:
    id: str
    family: str
    given: str
    gender: str
    birth_date: str
    diagnosis: tuple[str, str, str]  # (system, code, display)
    draws: tuple[Draw, ...]
    story: str
    expected: dict[str, Any] = field(default_factory=dict)


def _cbc(
    neut: str, ig: str | None, unit: str = "10*3/uL", *, ucum: bool = True, wbc: str | None = None
) -> tuple[Lab, ...]:
    if wbc is None:
        # The leukocytes are the neutrophils plus the rest (lymphocytes 1.6, monocytes and others):
        # a WBC below its own neutrophil count is impossible, and the service says so.
        wbc = str((Decimal(neut) + Decimal("2.4")).quantize(Decimal("0.1")))
    labs = [
        Lab("neutrophils", neut, unit, ucum),
        Lab("wbc", wbc, unit, ucum),
        Lab("lymphocytes", "1.6", unit, ucum),
    ]
    if ig is not None:
        labs.append(Lab("ig", ig, unit, ucum))
    labs.append(Lab("platelets", "241", unit, ucum))
    return tuple(labs)


def _history(values: list[tuple[float, str, str]], unit: str = "10*3/uL") -> tuple[Draw, ...]:
    return tuple(Draw(days, _cbc(neut, ig, unit)) for days, neut, ig in values)


NSCLC = (SNOMED, "254637007", "Non-small cell lung cancer")
ADENO = (SNOMED, "254626006", "Adenocarcinoma of lung")
SQUAMOUS = (SNOMED, "254634000", "Squamous cell carcinoma of lung")
SCLC = (SNOMED, "254632001", "Small cell carcinoma of lung")
MELANOMA = (ICD10, "C43.9", "Malignant melanoma of skin, unspecified")

PATIENTS: tuple[DemoPatient, ...] = (
    DemoPatient(
        "ichis-demo-0",
        "Demo-Zero",
        "Ana",
        "female",
        "1958-02-14",
        ADENO,
        _history([(1, "4.21", "0.02"), (35, "4.60", "0.03"), (70, "5.10", "0.02"), (110, "4.80", "0.01")]),
        "IChIS 0: normal neutrophils and IG#.",
        {"ichis": 0},
    ),
    DemoPatient(
        "ichis-demo-1",
        "Demo-One",
        "Ben",
        "male",
        "1951-07-03",
        SQUAMOUS,
        (
            Draw(1, _cbc("10.4", "0.05", "K/uL", ucum=False)),
            Draw(40, _cbc("8.2", "0.04", "K/uL", ucum=False)),
        ),
        "IChIS 1: neutrophils above 9,000/uL sent as K/uL text without a UCUM code.",
        {"ichis": 1},
    ),
    DemoPatient(
        "ichis-demo-2",
        "Demo-Two",
        "Chloe",
        "female",
        "1947-11-23",
        NSCLC,
        tuple(
            Draw(d, _cbc(n, i, "10*9/L", wbc="15.2"), offset_hours=-5)
            for d, n, i in [
                (1, "12.3", "0.15"),
                (28, "10.1", "0.11"),
                (56, "8.7", "0.07"),
                (90, "7.9", "0.05"),
            ]
        ),
        "IChIS 2: neutrophils and IG# both above their cut-offs, rising over three months.",
        {"ichis": 2},
    ),
    DemoPatient(
        "ichis-demo-partial",
        "Demo-Partial",
        "Dario",
        "male",
        "1960-05-30",
        NSCLC,
        (Draw(1, _cbc("9.6", None)),),
        "Partial: neutrophils above the cut-off, no IG# reported (IChIS 1 to 2).",
        {"lower": 1, "upper": 2},
    ),
    DemoPatient(
        "ichis-demo-stale",
        "Demo-Stale",
        "Eva",
        "female",
        "1955-09-09",
        ADENO,
        (Draw(60, _cbc("7.0", "0.03")),),
        "Stale: the last blood count is 60 days old; the card proposes a new CBC.",
        {"status": "unavailable"},
    ),
    DemoPatient(
        "ichis-demo-derived",
        "Demo-Derived",
        "Farid",
        "male",
        "1949-01-17",
        NSCLC,
        (
            Draw(
                1,
                (
                    Lab("neutrophils", "7.9", "G/L", ucum=False),
                    Lab("ig_percent", "1.4", "%"),
                    Lab("wbc", "9.2", "/nL"),
                ),
            ),
        ),
        "Derived IG#: IG% 1.4 x WBC 9.2 /nL = 128.8/uL (IChIS 1); units G/L and /nL.",
        {"ichis": 1},
    ),
    DemoPatient(
        "ichis-demo-units",
        "Demo-Units",
        "Greta",
        "female",
        "1962-03-05",
        NSCLC,
        (
            Draw(1, (Lab("neutrophils", "9050", "/mm3"), Lab("ig", "85", "{cells}/uL"))),
            Draw(
                30, (Lab("neutrophils", "8.9", "Gpt/L", ucum=False), Lab("ig", "0.06", "10^3/uL", ucum=False))
            ),
            Draw(60, (Lab("neutrophils", "8300", "/uL"), Lab("ig", "0.04", "x10E3/uL", ucum=False))),
        ),
        "Unit spellings: /mm3, {cells}/uL, Gpt/L, 10^3/uL, /uL, x10E3/uL (today IChIS 2).",
        {"ichis": 2},
    ),
    DemoPatient(
        "ichis-demo-boundary",
        "Demo-Boundary",
        "Hugo",
        "male",
        "1953-12-01",
        NSCLC,
        (Draw(1, (Lab("neutrophils", "9.0", "10*9/L"), Lab("ig", "0.08", "10*3/uL"))),),
        "Exactly at both cut-offs (9.0 x10^9/L, 0.08 x10^3/uL): IChIS 0.",
        {"ichis": 0},
    ),
    DemoPatient(
        "ichis-demo-melanoma",
        "Demo-Melanoma",
        "Ines",
        "female",
        "1966-06-21",
        MELANOMA,
        (Draw(1, _cbc("9.8", "0.03")),),
        "No lung cancer on record (melanoma): the card says the patient is outside the study population.",
        {"ichis": 1},
    ),
    DemoPatient(
        "ichis-demo-sclc",
        "Demo-Smallcell",
        "Jonas",
        "male",
        "1950-10-10",
        SCLC,
        (Draw(1, _cbc("6.1", "0.02")),),
        "Small-cell lung cancer: outside the derivation population.",
        {"ichis": 0},
    ),
)
BY_ID = {p.id: p for p in PATIENTS}


def _stamp(now: datetime, days_ago: float, offset_hours: int) -> str:
    zone = timezone(timedelta(hours=offset_hours))
    return (now - timedelta(days=days_ago)).astimezone(zone).replace(microsecond=0).isoformat()


def _quantity(lab: Lab) -> dict[str, Any]:
    quantity: dict[str, Any] = {"value": Decimal(lab.value), "unit": lab.unit}
    if lab.ucum:
        quantity["system"] = UCUM
        quantity["code"] = lab.unit
    return quantity


def resources(patient: DemoPatient, now: datetime) -> Iterator[dict[str, Any]]:
    yield {
        "resourceType": "Patient",
        "id": patient.id,
        "name": [
            {"family": patient.family, "given": [patient.given], "text": f"{patient.given} {patient.family}"}
        ],
        "gender": patient.gender,
        "birthDate": patient.birth_date,
        "meta": {"tag": [{"system": "urn:ichis:demo", "code": "demo", "display": "Fictional demo patient"}]},
    }
    system, code, display = patient.diagnosis
    yield {
        "resourceType": "Condition",
        "id": f"{patient.id}-dx",
        "clinicalStatus": {
            "coding": [
                {"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}
            ]
        },
        "verificationStatus": {
            "coding": [
                {"system": "http://terminology.hl7.org/CodeSystem/condition-ver-status", "code": "confirmed"}
            ]
        },
        "category": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/condition-category",
                        "code": "problem-list-item",
                    }
                ]
            }
        ],
        "code": {"coding": [{"system": system, "code": code, "display": display}], "text": display},
        "subject": {"reference": f"Patient/{patient.id}"},
    }
    for d, draw in enumerate(patient.draws):
        when = _stamp(now, draw.days_ago, draw.offset_hours)
        for lab in draw.labs:
            loinc, name = CODES[lab.concept]
            yield {
                "resourceType": "Observation",
                "id": f"{patient.id}-{d}-{lab.concept.replace('_', '-')}",
                "status": "final",
                "category": [
                    {
                        "coding": [
                            {
                                "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                "code": "laboratory",
                            }
                        ]
                    }
                ],
                "code": {"coding": [{"system": LOINC, "code": loinc, "display": name}]},
                "subject": {"reference": f"Patient/{patient.id}"},
                "effectiveDateTime": when,
                "issued": when,
                "specimen": {"display": f"Blood sample {patient.id}-{d}"},
                "valueQuantity": _quantity(lab),
            }


def transaction(now: datetime, patients: tuple[DemoPatient, ...] = PATIENTS) -> dict[str, Any]:
    """One transaction Bundle that creates or replaces every demo resource."""
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"resource": r, "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"}}
            for p in patients
            for r in resources(p, now)
        ],
    }


def load(base_url: str, now: datetime, session: requests.Session | None = None) -> int:
    """PUT every demo resource into the FHIR server; returns how many were written."""
    bundle = transaction(now)
    http = session or requests.Session()
    response = http.post(
        base_url.rstrip("/"),
        data=dumps(bundle).encode("utf-8"),
        headers={"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"},
        timeout=120,
    )
    response.raise_for_status()
    return len(bundle["entry"])


def main(argv: list[str] | None = None) -> int:
    """``python -m sandbox.demo_data --fhir URL``: load the demo patients into a FHIR server."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--fhir", required=True, help="FHIR base URL, e.g. http://127.0.0.1:8090/fhir")
    args = parser.parse_args(argv)
    count = load(args.fhir, datetime.now(UTC))
    print(f"loaded {count} demo resources ({len(PATIENTS)} patients) into {args.fhir}")  # noqa: T201 - a command reports
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
