"""The FHIR searches for a patient's blood counts and diagnoses, written once.

The CDS service declares them as prefetch templates and the SMART app sends them itself; both ask
for the same resources in the same way, newest first, so that the card and the page read alike.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date
from urllib.parse import quote

#: The CDS Hooks 2.0 prefetch token for the patient; the EHR fills it in.
CONTEXT_PATIENT = "{{context.patientId}}"


def _tokens(codes: Iterable[str]) -> str:
    """``system|code`` tokens joined for ``code=``: characters that end or split a URL's query
    (``#``, ``&``, ``?``, ``%``, spaces) percent-encoded, ``system|code`` left readable."""
    return ",".join(quote(token, safe="|:/-._~") for token in codes)


def _observations(patient: str, codes: str, since: date | None, count: int) -> str:
    after = f"&date=ge{since.isoformat()}" if since is not None else ""
    return f"Observation?patient={patient}&code={codes}{after}&_sort=-date&_count={count}"


def observation_search(patient: str, codes: Iterable[str], *, since: date, count: int = 100) -> str:
    """The patient's Observations with any of ``codes`` (``system|code``) since ``since``, newest first."""
    return _observations(quote(patient, safe=""), _tokens(codes), since, count)


def observation_template(codes: Iterable[str], *, count: int) -> str:
    """The same search as a prefetch template, ``count`` a page, without a date bound."""
    # The EHR fills in the token only and sends the rest as it is: a site code such as ``IG#``
    # must already be encoded, or the query would end at its ``#``.
    return _observations(CONTEXT_PATIENT, _tokens(codes), None, count)


def condition_search(patient: str) -> str:
    """The patient's Conditions (the diagnoses the study population is read from)."""
    return f"Condition?patient={quote(patient, safe='')}&_count=100"


def condition_template() -> str:
    """The same search as a prefetch template."""
    return f"Condition?patient={CONTEXT_PATIENT}&_count=100"
