"""Generic reading of FHIR R4 resources as decoded JSON: elements, references, codings, numbers
and versions, each tolerant of the shapes real data takes (an element of the wrong type is read as
absent, never trusted). Used by every mapper (observations, medications, scope, subjects, bundles)
and by the cohort tool. Spec: https://hl7.org/fhir/R4/references.html, datatypes.html.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC
from decimal import Decimal
from typing import Any

from fhir_mappings.fhirtime import TimeFormatError, parse_when

Resource = Mapping[str, Any]
#: https://hl7.org/fhir/R4/valueset-observation-status.html: no result is here (used to decide
#: which of a resource's unordered versions may be the latest word).
WITHDRAWN_STATUSES = frozenset({"entered-in-error", "cancelled"})


def text_of(resource: Resource, key: str) -> str | None:
    """A string element, or None when it is absent or not a string (real data has both)."""
    value = resource.get(key)
    return value if isinstance(value, str) else None


def items_of(resource: Mapping[str, Any], key: str) -> list[Any]:
    """An array element, or nothing when it is absent or not an array (``"hasMember": 5`` happens)."""
    value = resource.get(key)
    return value if isinstance(value, list) else []


def reference_of(resource: Resource, full_url: str | None = None) -> str:
    """The literal reference by which others point at a resource (``Observation/123``)."""
    rid = resource.get("id")
    if isinstance(rid, str) and rid:
        return f"{resource.get('resourceType', 'Resource')}/{rid}"
    if full_url:
        return full_url
    return f"{resource.get('resourceType', 'Resource')} without id"


#: ``Type/id`` at the end of a reference, before an optional ``/_history/version``: a literal
#: reference may be relative, absolute, or versioned (https://hl7.org/fhir/R4/references.html#literal).
_TYPE_AND_ID = re.compile(r"(?:^|/)([A-Z][A-Za-z]+/[A-Za-z0-9\-.]{1,64})(?:/_history/[^/]+)?$")


def canonical_reference(reference: str) -> str:
    """``Type/id`` of a relative, absolute or versioned reference; other text as it is."""
    m = _TYPE_AND_ID.search(reference)
    return m[1] if m else reference


def lookup(index: Mapping[str, Resource], reference: str) -> Resource | None:
    """The resource a reference points at among indexed ones: by the reference as written (a
    fullUrl, ``Type/id``), else by its ``Type/id`` (an absolute or versioned reference to a
    resource sent without fullUrl)."""
    found = index.get(reference)
    return found if found is not None else index.get(canonical_reference(reference))


def decimal_of(value: Any) -> Decimal | None:
    """A JSON number as an exact decimal. Callers should parse JSON with ``parse_float=Decimal``;
    a float that slipped through is read from its shortest repr, which is what the sender wrote."""
    if isinstance(value, bool):
        return None
    if isinstance(value, Decimal):
        return value if value.is_finite() else None
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, float):
        return Decimal(repr(value)) if math.isfinite(value) else None
    return None


def codings(codeable: Any) -> Iterator[tuple[str | None, str | None, str | None]]:
    """(system, code, display) of each Coding of a CodeableConcept; non-strings become None."""
    if not isinstance(codeable, dict):
        return
    raw = codeable.get("coding")
    for coding in raw if isinstance(raw, list) else ():
        if isinstance(coding, dict):
            yield _str(coding.get("system")), _str(coding.get("code")), _str(coding.get("display"))


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def index_resources(resources: Iterable[tuple[Resource, str | None]]) -> dict[str, Resource]:
    """Resources by every name a reference may use: ``Type/id`` and the Bundle ``fullUrl``."""
    index: dict[str, Resource] = {}
    for resource, full_url in resources:
        index[reference_of(resource)] = resource
        if full_url:
            index[full_url] = resource
            # Absolute URLs end in Type/id; relative references resolve to them too.
            tail = "/".join(full_url.rstrip("/").split("/")[-2:])
            index.setdefault(tail, resource)
    return index


def _version_key(resource: Resource) -> tuple[int, Any] | None:
    """How recent a version is: ``meta.versionId`` when it is a number (servers count up), else
    ``meta.lastUpdated``; None when neither can be read."""
    meta = resource.get("meta")
    if not isinstance(meta, dict):
        return None
    version = meta.get("versionId")
    if isinstance(version, str) and version.isdigit():
        return 1, int(version)
    updated = meta.get("lastUpdated")
    if isinstance(updated, str):
        try:
            when = parse_when(updated, UTC)
        except TimeFormatError:
            return None
        if when.precise and not when.zone_assumed:
            return 0, when.earliest
    return None


def current_versions(
    entries: list[tuple[Resource, str | None]],
) -> tuple[list[tuple[Resource, str | None]], int, list[str]]:
    """The entries with only the current version of each resource sent more than once (a
    history Bundle, concatenated incremental exports): the latest by ``meta``. Versions that cannot
    be ordered stay, unless one of them is withdrawn: then none is used, since the withdrawal may be
    the latest word. Returns the entries, how many older versions were left out, and the ids left
    out whole."""
    groups: dict[str, list[int]] = {}
    for position, (resource, _) in enumerate(entries):
        rid = resource.get("id") if isinstance(resource, dict) else None
        kind = resource.get("resourceType") if isinstance(resource, dict) else None
        if isinstance(kind, str) and isinstance(rid, str) and rid:
            groups.setdefault(f"{kind}/{rid}", []).append(position)
    dropped: set[int] = set()
    unordered: list[str] = []
    for key, positions in groups.items():
        if len(positions) < 2:
            continue
        versions = [_version_key(entries[i][0]) for i in positions]
        kinds = {version[0] for version in versions if version is not None}
        if None not in versions and len(kinds) == 1:
            latest = max(version for version in versions if version is not None)
            dropped.update(i for i, version in zip(positions, versions, strict=True) if version != latest)
        elif any(text_of(entries[i][0], "status") in WITHDRAWN_STATUSES for i in positions):
            dropped.update(positions)
            unordered.append(key)
    kept = [entry for position, entry in enumerate(entries) if position not in dropped]
    superseded = len(dropped) - sum(len(groups[r]) for r in unordered)
    return kept, superseded, unordered
