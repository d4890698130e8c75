"""Parsing and checking a CDS Hooks request body (https://cds-hooks.hl7.org/2.0/#http-request).

Unknown fields and ``extension`` objects are tolerated, as the spec asks; fields we use are
type-checked and a wrong one is a 400 naming the field.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from cds_service.errors import BadRequest
from fhir_mappings.bundles import FhirInputError, bundle_entries
from fhir_mappings.observations import Resource

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


_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_OPENERS = frozenset(b"[{")


def _depth(body: bytes) -> int:
    """Nesting depth of a JSON text already known to be valid, counted on the bytes.

    Escaped backslashes and escaped quotes are removed first; every quote left then delimits a
    string, so the even pieces of a split on quotes are the text outside strings, where brackets
    count. All of it runs in C, which matters on every request.
    """
    outside = b"".join(body.replace(b"\\\\", b"").replace(b'\\"', b"").split(b'"')[::2])
    brackets = outside.translate(None, _NOT_BRACKETS)
    depth = deepest = 0
    for byte in brackets:
        if byte in _OPENERS:
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


_UTF8_BOM = b"\xef\xbb\xbf"
#: A \\uD800-\\uDFFF escape: JSON allows it, but alone it is no character (RFC 8259 section 8.2).
_SURROGATE_ESCAPE = re.compile(rb"\\[uU][dD][89a-fA-F]")


def parse_json_body(body: bytes, max_depth: int = 64) -> Any:
    """The request body as JSON, decimals exact; a 400 saying why when it is not usable JSON.

    RFC 8259: JSON between systems is UTF-8 (a leading byte-order mark is ignored); UTF-16 and
    UTF-32 bodies, invalid UTF-8, lone surrogate escapes, numbers beyond Python's integer limit
    and nesting deeper than ``max_depth`` are refused here, so nothing downstream (card uuids, the
    audit spool, the response encoder) ever meets a string it cannot encode.
    """
    if body.startswith(_UTF8_BOM):
        body = body[len(_UTF8_BOM) :]
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest("the request body is not UTF-8 (RFC 8259: JSON is exchanged in UTF-8)") from None
    try:
        document = json.loads(text, parse_float=Decimal)
    except json.JSONDecodeError as error:
        raise BadRequest(f"the request body is not valid JSON: {error.msg} at line {error.lineno}") from None
    except RecursionError:
        raise BadRequest("the request body is nested too deeply") from None
    except ValueError:
        # int() refuses literals of more than 4,300 digits (CVE-2020-10735 limit).
        raise BadRequest("the request body holds a number with too many digits") from None
    if _depth(body) > max_depth:
        raise BadRequest(f"the request body is nested deeper than {max_depth} levels")
    if _SURROGATE_ESCAPE.search(body) and not _encodable(document):
        raise BadRequest("the request body holds a lone UTF-16 surrogate escape (\\ud800-\\udfff)")
    return document


def _encodable(document: Any) -> bool:
    """Whether every string in the document is text (a paired surrogate escape is; a lone one is not)."""
    try:
        json.dumps(document, ensure_ascii=False, default=str).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def parse_hook_request(document: Any) -> HookRequest:
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
