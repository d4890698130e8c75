"""Reading FHIR JSON: Bundles, NDJSON and single resources -> ``(resource, fullUrl)`` pairs.

Numbers with a fraction or exponent are parsed as exact decimals: a lab value must never pass
through binary floating point (0.08 x 1000 is not 80 in a float). The decoder is msgspec's (C,
several times faster than the standard library's on a prefetched Bundle), given the number's own
text for each decimal.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from decimal import Decimal
from typing import Any

import msgspec

from fhir_mappings.resources import Resource, canonical_reference


class FhirInputError(ValueError):
    """Input that is not FHIR JSON we can read; the message is one line for the user."""


#: One decoder for every call; ``float_hook`` receives the number's text, so ``0.08`` stays exact.
_DECODER = msgspec.json.Decoder(float_hook=Decimal)
_UTF8_BOM = "\ufeff"


class JsonTextError(ValueError):
    """Text that is not JSON (RFC 8259); the message says where, for the user."""


def loads(text: str | bytes) -> Any:
    """JSON with every fractional number as a Decimal; ``JsonTextError`` when it is not JSON.

    A leading UTF-8 byte-order mark is ignored (RFC 8259 allows it); UTF-16 and UTF-32 are not
    JSON exchanged between systems. NaN and Infinity, which the standard library accepts, are
    refused: they are not JSON.
    """
    if isinstance(text, str):
        text = text.removeprefix(_UTF8_BOM)
    elif text.startswith(b"\xef\xbb\xbf"):
        text = text[3:]
    try:
        return _DECODER.decode(text)
    except msgspec.ValidationError as error:
        # The one "validation" of an untyped decode: an integer beyond what Python reads.
        raise JsonTextError(f"a number is too large ({error})") from None
    except msgspec.DecodeError as error:
        raise JsonTextError(str(error).removeprefix("JSON is malformed: ")) from None


def dumps(document: Any) -> str:
    """JSON text in which each Decimal keeps its exact digits (``0.08`` stays ``0.08``).

    The standard encoder has no hook for raw numbers, so the walk is done here.
    """
    return "".join(_encode(document))


def _encode(value: Any) -> Iterator[str]:
    if isinstance(value, Decimal):
        yield format(value, "f") if value.is_finite() else "null"
    elif isinstance(value, dict):
        yield "{"
        for position, (key, item) in enumerate(value.items()):
            yield ("," if position else "") + json.dumps(str(key), ensure_ascii=False) + ":"
            yield from _encode(item)
        yield "}"
    elif isinstance(value, (list, tuple)):
        yield "["
        for position, item in enumerate(value):
            if position:
                yield ","
            yield from _encode(item)
        yield "]"
    else:
        yield json.dumps(value, ensure_ascii=False)


def bundle_entries(bundle: Mapping[str, Any]) -> Iterator[tuple[Resource, str | None]]:
    """Resources of a Bundle (any type), with their fullUrl; nested Bundles are flattened."""
    entries = bundle.get("entry")
    if entries is None:
        return
    if not isinstance(entries, list):
        raise FhirInputError("Bundle.entry must be a list")
    # A history Bundle lists versions newest first, a deletion as an entry without a resource:
    # versions after it (older) were deleted. https://hl7.org/fhir/R4/http.html#history
    deleted: set[str] = set()
    history = bundle.get("type") == "history"
    for position, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise FhirInputError(f"Bundle.entry[{position}] is not an object")
        resource = entry.get("resource")
        if resource is None:
            request = entry.get("request")
            if history and isinstance(request, dict) and request.get("method") == "DELETE":
                url = request.get("url")
                if isinstance(url, str):
                    deleted.add(canonical_reference(url))
            continue  # e.g. a transaction-response entry or a deleted history entry
        if not isinstance(resource, dict) or not isinstance(resource.get("resourceType"), str):
            raise FhirInputError(f"Bundle.entry[{position}].resource has no resourceType")
        full_url = entry.get("fullUrl") if isinstance(entry.get("fullUrl"), str) else None
        if deleted and f"{resource['resourceType']}/{resource.get('id')}" in deleted:
            continue
        if resource["resourceType"] == "Bundle":
            yield from bundle_entries(resource)
        else:
            yield resource, full_url


def resource_entries(document: Any) -> Iterator[tuple[Resource, str | None]]:
    """A parsed JSON document (a Bundle or one resource) as entries."""
    if not isinstance(document, dict) or not isinstance(document.get("resourceType"), str):
        raise FhirInputError("expected a FHIR resource or Bundle (an object with resourceType)")
    if document["resourceType"] == "Bundle":
        yield from bundle_entries(document)
    else:
        yield document, None


def reported_error(bundle: Any, depth: int = 0) -> str | None:
    """The diagnostics of an error a Bundle carries in an OperationOutcome entry, if any.

    Servers add an OperationOutcome (search mode "outcome") to say a search went wrong or is
    incomplete; warnings and information (e.g. an unknown parameter ignored) leave the results whole.
    https://hl7.org/fhir/R4/bundle.html#searchset (search.mode) and CDS Hooks 2.0.1 prefetch:
    "CDS Services SHOULD check any prefetched data for the existence of OperationOutcomes".
    Read generously, since an error missed is data silently missing: an ``issue`` sent as one
    object rather than a list, and Bundles nested in entries (a few levels), count too.
    """
    # Decoded JSON holds dicts: the exact type check is several times cheaper than an ABC's.
    if depth > 3 or not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        return None
    entries = bundle.get("entry")
    for entry in entries if isinstance(entries, list) else ():
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if not isinstance(resource, dict):
            continue
        if (found := reported_error(resource, depth + 1) or outcome_error(resource)) is not None:
            return found
    return None


def outcome_error(resource: Any) -> str | None:
    """The diagnostics (or code) of an OperationOutcome's first ``error`` or ``fatal`` issue."""
    if not isinstance(resource, dict) or resource.get("resourceType") != "OperationOutcome":
        return None
    issues = resource.get("issue")
    issues = [issues] if isinstance(issues, dict) else issues
    for issue in issues if isinstance(issues, list) else ():
        if isinstance(issue, dict) and issue.get("severity") in ("error", "fatal"):
            text = issue.get("diagnostics")
            return text[:200] if isinstance(text, str) else str(issue.get("code") or "error")
    return None


def parse_document(text: str) -> list[tuple[Resource, str | None]]:
    """A FHIR JSON document or NDJSON text, whichever it is."""
    stripped = text.strip()
    if not stripped:
        raise FhirInputError("the input is empty")
    try:
        return list(resource_entries(loads(stripped)))
    except JsonTextError as whole_error:
        lines = [line for line in stripped.splitlines() if line.strip()]
        if len(lines) < 2:
            raise FhirInputError(f"not valid JSON: {whole_error}") from None
    entries: list[tuple[Resource, str | None]] = []
    for number, line in enumerate(stripped.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            document = loads(line)
        except JsonTextError as error:
            raise FhirInputError(f"NDJSON line {number} is not valid JSON: {error}") from None
        try:
            entries.extend(resource_entries(document))
        except FhirInputError as error:
            raise FhirInputError(f"NDJSON line {number}: {error}") from None
    return entries
