"""Prefetch as a CDS client does it (CDS Hooks 2.0.1, "Providing FHIR Resources to a CDS Service").

Tokens: ``{{context.<field>}}`` for a root-level primitive field of the hook's context, and the
user tokens ``{{userPractitionerId}}``, ``{{userPractitionerRoleId}}``, ``{{userPatientId}}``,
``{{userRelatedPersonId}}`` taken from ``context.userId``.

Outcomes per key, as the spec defines them:

- a template the EHR cannot fill (a token with no value here) or a query it cannot run (no
  connection to the FHIR server): the key is left out, so the service knows to fetch it itself;
- a read of a resource that does not exist: ``null``;
- a search: the Bundle, even with no entries;
- a query the FHIR server refuses or that the service's token would not allow: an
  OperationOutcome, "to prevent the CDS Service from incurring an unneeded follow-up query".

The queries run against HAPI directly (server-side, trusted) but through the same scope and
compartment rules as the proxy, with URLs rewritten to the proxy: the spec requires prefetch to
be "equivalent to the data the CDS Service would receive if it were making its own call".
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

from plumbing.errors import operation_outcome
from sandbox.ehr.access import Access, check_request, filter_response, interaction_of
from sandbox.ehr.errors import SandboxError, UpstreamError
from sandbox.ehr.upstream import Upstream, rewrite_urls

_TOKEN = re.compile(r"\{\{\s*([^{}\s]+)\s*\}\}")
_ABSOLUTE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
_USER_TOKENS = {
    "userPractitionerId": "Practitioner",
    "userPractitionerRoleId": "PractitionerRole",
    "userPatientId": "Patient",
    "userRelatedPersonId": "RelatedPerson",
}


class UnfillableTemplate(Exception):
    """A prefetch template with a token this call has no value for."""


def user_tokens(user_id: str) -> dict[str, str]:
    """The user tokens ``context.userId`` (``Practitioner/123``) gives: here userPractitionerId=123."""
    resource_type, _, resource_id = user_id.partition("/")
    return {
        token: resource_id for token, rtype in _USER_TOKENS.items() if rtype == resource_type and resource_id
    }


def fill_template(template: str, context: Mapping[str, Any], users: Mapping[str, str]) -> str:
    """The relative FHIR URL a template stands for in this context (UnfillableTemplate if none)."""

    def value_of(match: re.Match[str]) -> str:
        name = match.group(1)
        if name.startswith("context."):
            field_name = name[len("context.") :]
            value = context.get(field_name)
            # Only root-level fields with a primitive value are tokens (nested paths are not).
            if "." in field_name or isinstance(value, (dict, list, bool)):
                raise UnfillableTemplate(f"{{{{{name}}}}} is not a root-level primitive context field")
            if value is None or value == "":
                raise UnfillableTemplate(f"this call's context has no {field_name}")
            return quote(str(value), safe="/")
        if name in _USER_TOKENS:
            if name not in users:
                raise UnfillableTemplate(
                    f"the user is not a {_USER_TOKENS[name]}, so {{{{{name}}}}} has no value"
                )
            return quote(users[name], safe="")
        raise UnfillableTemplate(f"{{{{{name}}}}} is not a CDS Hooks prefetch token")

    filled = _TOKEN.sub(value_of, template.strip())
    if "{{" in filled or "}}" in filled:
        raise UnfillableTemplate("the template has an unbalanced token")
    if _ABSOLUTE.match(filled) or filled.startswith("/") or ".." in urlsplit(filled).path.split("/"):
        raise UnfillableTemplate("a prefetch template is a FHIR query relative to the FHIR base")
    return filled


@dataclass
class PrefetchNote:
    """What happened to one prefetch key, for the page an integration engineer debugs with."""

    key: str
    template: str
    query: str | None
    outcome: str  # "resource", "bundle", "null", "operation-outcome", "omitted"
    detail: str = ""


@dataclass
class PrefetchResult:
    values: dict[str, Any] = field(default_factory=dict)
    notes: list[PrefetchNote] = field(default_factory=list)


def _run_query(query: str, access: Access, upstream: Upstream, public_fhir_base: str) -> tuple[str, Any, str]:
    """(outcome, value, detail) for one filled template; UpstreamError when HAPI is unreachable."""
    path, _, query_string = query.partition("?")
    segments = [s for s in path.split("/") if s]
    params = parse_qs(query_string, keep_blank_values=True)
    try:
        interaction = interaction_of("GET", segments, params)
        check_request(access, interaction, params)
    except SandboxError as refused:
        return "operation-outcome", operation_outcome(refused.diagnostics, refused.issue), refused.diagnostics
    response = upstream.request("GET", path, query=query_string)
    if response.status in (404, 410) and interaction.kind == "read":
        return "null", None, f"the FHIR server has no {path}"
    if response.status >= 400 or not isinstance(response.body, dict):
        body = response.body
        if not (isinstance(body, dict) and body.get("resourceType") == "OperationOutcome"):
            body = operation_outcome(f"the FHIR server answered {response.status}")
        return (
            "operation-outcome",
            rewrite_urls(body, upstream.base_url, public_fhir_base),
            f"HTTP {response.status}",
        )
    try:
        body = filter_response(access, response.body)
    except SandboxError as refused:
        return "operation-outcome", operation_outcome(refused.diagnostics, refused.issue), refused.diagnostics
    body = rewrite_urls(body, upstream.base_url, public_fhir_base)
    outcome = "bundle" if body.get("resourceType") == "Bundle" else "resource"
    return outcome, body, ""


def fill_prefetch(
    templates: Mapping[str, str],
    context: Mapping[str, Any],
    access: Access,
    upstream: Upstream,
    public_fhir_base: str,
) -> PrefetchResult:
    """The ``prefetch`` object of a hook request for a service's discovery templates."""
    result = PrefetchResult()
    users = user_tokens(str(context.get("userId") or ""))
    for key, template in templates.items():
        if not isinstance(template, str):
            result.notes.append(
                PrefetchNote(key, repr(template), None, "omitted", "the template is not a string")
            )
            continue
        try:
            query = fill_template(template, context, users)
        except UnfillableTemplate as reason:
            result.notes.append(PrefetchNote(key, template, None, "omitted", str(reason)))
            continue
        try:
            outcome, value, detail = _run_query(query, access, upstream, public_fhir_base)
        except UpstreamError as error:
            # The spec: omit the key when details cannot be provided (e.g. connectivity issues).
            result.notes.append(PrefetchNote(key, template, query, "omitted", error.diagnostics))
            continue
        result.values[key] = value
        result.notes.append(PrefetchNote(key, template, query, outcome, detail))
    return result
