"""Parsing and checking a CDS Hooks request body (https://cds-hooks.hl7.org/2.0/#http-request).

Unknown fields and ``extension`` objects are tolerated, as the spec asks; fields we use are
type-checked and a wrong one is a 400 naming the field.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import msgspec

from cds_service.errors import BadRequest
from fhir_mappings.bundles import FhirInputError, JsonTextError, bundle_entries, loads
from fhir_mappings.resources import Resource

ORDER_HOOKS = ("order-select", "order-sign")


@dataclass(frozen=True)
class HookRequest:
    hook: str
    hook_instance: str
    patient_id: str
    user_id: str | None
    encounter_id: str | None
    draft_orders: list[tuple[Resource, str | None]]
    selections: list[str] | None
    fhir_server: str | None
    access_token: str | None = field(repr=False)
    fhir_scope: str | None
    prefetch: Mapping[str, Any]
    tenant: str | None = None
    raw_context: Mapping[str, Any] = field(default_factory=dict, repr=False)


def _optional(obj: Mapping[str, Any], key: str, where: str = "") -> str | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise BadRequest(f"{where}{key} must be a non-empty string", expression=[f"{where}{key}"])
    return value


def _required(obj: Mapping[str, Any], key: str, where: str = "") -> str:
    value = _optional(obj, key, where)
    if value is None:
        raise BadRequest(f"{where}{key} is required", expression=[f"{where}{key}"])
    return value


#: Every byte but the brackets and the quote: deleted before the text is split into strings.
_NOT_STRUCTURE = bytes(b for b in range(256) if b not in b'[]{}"')
#: Both kinds of bracket as one kind: valid JSON closes each bracket with its own kind.
_ONE_KIND = bytes.maketrans(b"[]{}", b"()()")


def _depth(body: bytes) -> int:
    """Nesting depth of a JSON text already known to be valid, counted on the bytes.

    Escaped backslashes and escaped quotes are removed first; every quote left then delimits a
    string, and every other backslash escapes a letter, so deleting all but brackets and quotes
    keeps the structure. The even pieces of a split on quotes are the text outside strings. Each
    pass then removes the innermost pairs (``bytes.replace`` reads the text as it was, so a pair
    it uncovers waits for the next pass). All of it runs in C.
    """
    skeleton = body.replace(b"\\\\", b"").replace(b'\\"', b"").translate(None, _NOT_STRUCTURE)
    brackets = b"".join(skeleton.split(b'"')[::2]).translate(_ONE_KIND)
    depth = 0
    while brackets:
        brackets = brackets.replace(b"()", b"")
        depth += 1
    return depth


_UTF8_BOM = b"\xef\xbb\xbf"
#: A \\uD800-\\uDFFF escape: JSON allows it, but alone it is no character (RFC 8259 section 8.2).
_SURROGATE_ESCAPE = re.compile(rb"\\[uU][dD][89a-fA-F]")


def _refusal(error: Exception, body: bytes) -> BadRequest:
    """The 400 for a body that is not JSON we read, saying why in the client's terms."""
    if isinstance(error, RecursionError):
        return BadRequest("the request body is nested too deeply")
    text = str(error)
    if "UTF-8" in text or "utf-8" in text:
        return BadRequest("the request body is not UTF-8 (RFC 8259: JSON is exchanged in UTF-8)")
    if _SURROGATE_ESCAPE.search(body) and ("surrogate" in text or "truncated" in text):
        return BadRequest("the request body holds a lone UTF-16 surrogate escape (\\ud800-\\udfff)")
    if "too large" in text or "out of range" in text:
        return BadRequest("the request body holds a number with too many digits")
    return BadRequest(f"the request body is not valid JSON: {text}")


def parse_json_body(body: bytes, max_depth: int = 64) -> Any:
    """The request body as JSON, decimals exact; a 400 saying why when it is not usable JSON.

    RFC 8259: JSON between systems is UTF-8 (a leading byte-order mark is ignored); UTF-16 and
    UTF-32 bodies, invalid UTF-8, lone surrogate escapes, NaN, numbers beyond what Python reads
    and nesting deeper than ``max_depth`` are refused here, so nothing downstream (card uuids, the
    audit spool, the response encoder) ever meets a string it cannot encode.
    """
    try:
        document = loads(body)
    except (JsonTextError, RecursionError) as error:
        raise _refusal(error, body) from None
    if _depth(body) > max_depth:
        raise BadRequest(f"the request body is nested deeper than {max_depth} levels")
    return document


class _Envelope(msgspec.Struct):
    """The fields of a hook request the service reads; the prefetch is kept as raw JSON text."""

    hook: Any = None
    # The CDS Hooks field names (N815 is not selected: mixedCase is the spec's spelling here).
    hookInstance: Any = None
    context: Any = None
    fhirServer: Any = None
    fhirAuthorization: Any = None
    prefetch: msgspec.Raw = msgspec.Raw(b"")


_ENVELOPE = msgspec.json.Decoder(_Envelope, float_hook=Decimal)


class Prefetch(Mapping[str, Any]):
    """The request's prefetch object, decoded on first use.

    Most order calls are for drugs that are no checkpoint inhibitor: their prefetch (tens of KB
    of Observations) is never read, so it is checked as JSON with the rest of the body but only
    turned into objects, with exact decimals and the depth limit, when a card needs it.
    """

    def __init__(self, raw: bytes, max_depth: int) -> None:
        self._raw = raw
        self._max_depth = max_depth
        self._value: dict[str, Any] | None = None

    def _decoded(self) -> dict[str, Any]:
        if self._value is None:
            # The prefetch object sits one level below the body's own.
            if _depth(self._raw) + 1 > self._max_depth:
                raise BadRequest(f"the request body is nested deeper than {self._max_depth} levels")
            try:
                value = loads(self._raw) if self._raw else None
            except (JsonTextError, RecursionError) as error:
                raise _refusal(error, self._raw) from None
            self._value = value if isinstance(value, dict) else {}
        return self._value

    def __getitem__(self, key: str) -> Any:
        return self._decoded()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._decoded())

    def __len__(self) -> int:
        return len(self._decoded())

    def __contains__(self, key: object) -> bool:
        return key in self._decoded()


def parse_hook_body(body: bytes, max_depth: int = 64) -> HookRequest:
    """A hook request from the raw body: every field but the prefetch decoded and checked now."""
    try:
        envelope = _ENVELOPE.decode(body.removeprefix(_UTF8_BOM))
    except msgspec.ValidationError as error:
        if "Expected `object`" in str(error) and "$." not in str(error):
            raise BadRequest("the request body must be a JSON object") from None
        raise _refusal(JsonTextError(str(error)), body) from None
    except (msgspec.DecodeError, RecursionError) as error:
        raise _refusal(error, body) from None
    raw = bytes(envelope.prefetch)
    if raw and raw[:1] not in (b"{", b"n"):  # msgspec hands the value's text without white space
        raise BadRequest("prefetch must be an object", expression=["prefetch"])
    # The depth limit holds for the whole body; the prefetch's share is counted when it is read.
    at = body.find(raw) if raw else -1
    rest = body[:at] + body[at + len(raw) :] if at >= 0 else body
    if _depth(rest) > max_depth:
        raise BadRequest(f"the request body is nested deeper than {max_depth} levels")
    document = {
        "hook": envelope.hook,
        "hookInstance": envelope.hookInstance,
        "context": envelope.context,
        "fhirServer": envelope.fhirServer,
        "fhirAuthorization": envelope.fhirAuthorization,
    }
    return parse_hook_request(document, Prefetch(b"" if raw == b"null" else raw, max_depth))


def parse_hook_request(document: Any, prefetch: Mapping[str, Any] | None = None) -> HookRequest:
    """A hook request from decoded JSON; ``prefetch`` (lazily decoded) replaces the document's."""
    if not isinstance(document, Mapping):
        raise BadRequest("the request body must be a JSON object")
    hook = _required(document, "hook")
    hook_instance = _required(document, "hookInstance")
    context = document.get("context")
    if not isinstance(context, Mapping):
        raise BadRequest("context is required and must be an object", expression=["context"])
    patient_id = _required(context, "patientId", "context.")
    user_id = _optional(context, "userId", "context.")
    encounter_id = _optional(context, "encounterId", "context.")
    draft_orders: list[tuple[Resource, str | None]] = []
    selections: list[str] | None = None
    if hook in ORDER_HOOKS:
        bundle = context.get("draftOrders")
        if not isinstance(bundle, Mapping) or bundle.get("resourceType") != "Bundle":
            raise BadRequest("context.draftOrders must be a FHIR Bundle", expression=["context.draftOrders"])
        try:
            draft_orders = list(bundle_entries(bundle))
        except FhirInputError as error:
            raise BadRequest(f"context.draftOrders: {error}", expression=["context.draftOrders"]) from None
        if hook == "order-select":
            raw = context.get("selections")
            if not isinstance(raw, list) or not all(isinstance(s, str) for s in raw):
                raise BadRequest(
                    "context.selections must be a list of references", expression=["context.selections"]
                )
            selections = list(raw)
    fhir_server = _optional(document, "fhirServer")
    access_token = scope = None
    auth = document.get("fhirAuthorization")
    if auth is not None:
        if not isinstance(auth, Mapping):
            raise BadRequest("fhirAuthorization must be an object", expression=["fhirAuthorization"])
        access_token = _required(auth, "access_token", "fhirAuthorization.")
        token_type = _required(auth, "token_type", "fhirAuthorization.")
        if token_type.lower() != "bearer":
            raise BadRequest(
                "fhirAuthorization.token_type must be Bearer", expression=["fhirAuthorization.token_type"]
            )
        scope = _optional(auth, "scope", "fhirAuthorization.")
        if fhir_server is None:
            raise BadRequest("fhirAuthorization was sent without fhirServer", expression=["fhirServer"])
    if prefetch is None:
        prefetch = document.get("prefetch", {})
    if prefetch is None:
        prefetch = {}
    if not isinstance(prefetch, Mapping):
        raise BadRequest("prefetch must be an object", expression=["prefetch"])
    return HookRequest(
        hook=hook,
        hook_instance=hook_instance,
        patient_id=patient_id,
        user_id=user_id,
        encounter_id=encounter_id,
        draft_orders=draft_orders,
        selections=selections,
        fhir_server=fhir_server,
        access_token=access_token,
        fhir_scope=scope,
        prefetch=prefetch,
        raw_context=context,
    )
