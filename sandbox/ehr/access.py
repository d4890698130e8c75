"""SMART scopes: which ones a client is granted, and what a token lets its bearer read.

Pure functions over strings and JSON, shared by the authorization server (granting), the FHIR
proxy (enforcing) and the prefetch the EHR fills itself (so prefetch holds exactly what the CDS
service would get from the proxy with its own token: CDS Hooks 2.0.1, "Prefetch Template").

Scope syntax: SMART App Launch 2.2, "Scopes for requesting FHIR Resources". Enforcement is
coarse on purpose: type and interaction from the scope, and the patient compartment for
``patient/`` scopes, judged by the references a resource holds (``subject``, ``patient``,
``beneficiary``). Scopes with search-parameter constraints (``?category=...``) are granted when
registered but never widen access here: the sandbox does not evaluate them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, cast

from sandbox.ehr.errors import Forbidden, NotSupported

PERMISSIONS = "cruds"
_V1 = {"read": "rs", "write": "cud", "*": "cruds"}
_SCOPE = re.compile(r"^(patient|user|system)/([A-Za-z]+|\*)\.([a-z*]+)(\?.*)?$")

# Resource types outside any patient's compartment: a patient-scoped token may read them
# without naming the patient (SMART leaves this to the server; these carry no patient data).
SHARED_TYPES = frozenset(
    {
        "Medication",
        "Practitioner",
        "PractitionerRole",
        "Organization",
        "Location",
        "Substance",
        "ValueSet",
        "CodeSystem",
        "ConceptMap",
        "Questionnaire",
        "PlanDefinition",
        "ActivityDefinition",
        "Library",
    }
)
# Search parameters that pin a search to one patient, and the elements that link a resource to one.
PATIENT_PARAMS = ("patient", "subject", "beneficiary", "patient:Patient", "subject:Patient")
PATIENT_ELEMENTS = ("subject", "patient", "beneficiary")


_Context = Literal["patient", "user", "system"]


@dataclass(frozen=True)
class ResourceScope:
    """One resource scope, e.g. ``patient/Observation.rs``, with v1 suffixes already translated."""

    context: _Context
    resource_type: str
    permissions: str  # a subsequence of "cruds"
    query: str | None = None

    def covers(self, resource_type: str, permission: str) -> bool:
        return (
            self.query is None
            and self.resource_type in ("*", resource_type)
            and permission in self.permissions
        )


def parse_scope(scope: str) -> ResourceScope | None:
    """A resource scope, or None for anything else (``launch``, ``openid``, malformed scopes)."""
    match = _SCOPE.match(scope)
    if not match:
        return None
    context, resource_type, suffix, query = match.groups()
    permissions = _V1.get(suffix, suffix)
    # Only subsequences of "cruds" are defined; ".dus" and the like are refused, as the spec allows.
    if not permissions or permissions != "".join(p for p in PERMISSIONS if p in permissions):
        return None
    if len(set(permissions)) != len(permissions):
        return None
    return ResourceScope(cast(_Context, context), resource_type, permissions, query[1:] if query else None)


def grant_scopes(requested: str, allowed: Iterable[str], denied: Iterable[str] = ()) -> str:
    """The granted subset of ``requested`` for a client registered with ``allowed``.

    A resource scope is granted with the permissions its registration covers (``.cruds`` asked,
    ``.rs`` registered: ``.rs`` granted); other scopes are granted when registered verbatim.
    A scope listed in ``denied`` (the sandbox's way to test an app's denied-scope path) is
    dropped when requested verbatim.
    """
    allowed = list(allowed)
    allowed_resources = [s for s in map(parse_scope, allowed) if s is not None]
    refused = set(denied)
    granted: list[str] = []
    for scope in dict.fromkeys(requested.split()):
        if scope in refused:
            continue
        wanted = parse_scope(scope)
        if wanted is None:
            if scope in allowed:
                granted.append(scope)
            continue
        covering = {
            p
            for a in allowed_resources
            if a.context == wanted.context
            and a.resource_type in ("*", wanted.resource_type)
            and (a.query is None or a.query == wanted.query)
            for p in a.permissions
        }
        permissions = "".join(p for p in PERMISSIONS if p in wanted.permissions and p in covering)
        if not permissions:
            continue
        if permissions == wanted.permissions:
            granted.append(scope)  # as asked, so v1 scopes come back as v1
        else:
            query = f"?{wanted.query}" if wanted.query else ""
            granted.append(f"{wanted.context}/{wanted.resource_type}.{permissions}{query}")
    return " ".join(granted)


@dataclass(frozen=True)
class Access:
    """What one access token allows: its resource scopes and, for patient scopes, the patient."""

    scopes: tuple[ResourceScope, ...]
    patient: str | None

    @classmethod
    def from_scope(cls, scope: str, patient: str | None) -> Access:
        return cls(tuple(s for s in map(parse_scope, scope.split()) if s is not None), patient)

    def level(self, resource_type: str, permission: str) -> Literal["user", "patient"] | None:
        """``user`` when a user or system scope covers it, ``patient`` when only a patient scope does."""
        covering = [s for s in self.scopes if s.covers(resource_type, permission)]
        if any(s.context != "patient" for s in covering):
            return "user"
        if covering and self.patient:
            return "patient"
        return None

    def may_search_somewhere(self) -> bool:
        return any("s" in s.permissions and s.query is None for s in self.scopes)


@dataclass(frozen=True)
class Interaction:
    """A FHIR REST interaction read from a request path (https://hl7.org/fhir/R4/http.html)."""

    kind: Literal["read", "search", "page"]
    resource_type: str | None = None
    resource_id: str | None = None


def interaction_of(method: str, segments: Sequence[str], params: Mapping[str, Sequence[str]]) -> Interaction:
    """Which read-only interaction a request is; anything else is NotSupported (the proxy is read-only)."""
    reading = method in ("GET", "HEAD")
    if any(segment in (".", "..") for segment in segments):
        raise NotSupported("dot segments are not allowed in FHIR paths")
    if not segments:
        if reading and "_getpages" in params:
            return Interaction("page")  # HAPI's paging links: {base}?_getpages=...
        raise NotSupported("system-level interactions are not offered by the sandbox FHIR endpoint")
    resource_type = segments[0]
    if not re.fullmatch(r"[A-Z][A-Za-z]+", resource_type):
        raise NotSupported(f"{resource_type!r} is not a FHIR resource type this endpoint serves")
    rest = list(segments[1:])
    if reading and not rest:
        return Interaction("search", resource_type)
    if method == "POST" and rest == ["_search"]:
        return Interaction("search", resource_type)
    if reading and rest == ["_history"]:
        return Interaction("search", resource_type)
    is_instance = bool(rest) and not rest[0].startswith(("$", "_"))
    if reading and is_instance and (len(rest) == 1 or (rest[1] == "_history" and len(rest) <= 3)):
        return Interaction("read", resource_type, rest[0])  # read, vread and instance history
    if method not in ("GET", "HEAD", "POST"):
        raise NotSupported("the sandbox FHIR endpoint is read-only")
    raise NotSupported("operations and compartment searches are not offered by the sandbox FHIR endpoint")


def _patient_id(reference: str) -> str | None:
    """``X`` from ``Patient/X``, ``{base}/Patient/X`` or ``Patient/X/_history/1``; else None."""
    match = re.search(r"(?:^|/)Patient/([A-Za-z0-9\-.]{1,64})(?:/_history/[^/]+)?$", reference)
    return match.group(1) if match else None


def check_request(access: Access, interaction: Interaction, params: Mapping[str, Sequence[str]]) -> None:
    """Refuse (Forbidden) what the token's scopes or its patient compartment do not allow."""
    if interaction.kind == "page":
        if not access.may_search_somewhere():
            raise Forbidden("the token grants no search permission")
        return  # the page's resources are filtered one by one
    resource_type = interaction.resource_type or ""
    permission = "r" if interaction.kind == "read" else "s"
    level = access.level(resource_type, permission)
    if level is None:
        verb = "read" if permission == "r" else "search"
        raise Forbidden(f"the token's scope does not permit to {verb} {resource_type}")
    if level == "user" or resource_type in SHARED_TYPES:
        return
    patient = access.patient
    if interaction.kind == "read":
        if resource_type == "Patient" and interaction.resource_id != patient:
            raise Forbidden(
                f"the token is for patient {patient}; Patient/{interaction.resource_id} is another"
            )
        return  # other types: the resource read is checked against the compartment
    names = ("_id",) if resource_type == "Patient" else PATIENT_PARAMS
    pinned = [v for name in names for value in params.get(name, ()) for v in value.split(",")]
    if not pinned:
        hint = "_id" if resource_type == "Patient" else "patient"
        raise Forbidden(f"a patient-scoped token searches {resource_type} with {hint}={patient} only")
    for value in pinned:
        if value != patient and _patient_id(value) != patient:
            raise Forbidden(f"the token is for patient {patient}; this search names another")


def resource_allowed(access: Access, resource: Mapping[str, Any]) -> bool:
    """Whether the token may see this resource: its type is in scope, and it is in the compartment."""
    resource_type = resource.get("resourceType")
    if not isinstance(resource_type, str):
        return False
    if resource_type == "OperationOutcome":
        return True
    levels = {access.level(resource_type, "r"), access.level(resource_type, "s")}
    if "user" in levels:
        return True
    if "patient" not in levels:
        return False
    if resource_type in SHARED_TYPES:
        return True
    if resource_type == "Patient":
        return resource.get("id") == access.patient
    for element in PATIENT_ELEMENTS:
        value = resource.get(element)
        if isinstance(value, Mapping) and isinstance(value.get("reference"), str):
            return _patient_id(value["reference"]) == access.patient
    return False


def filter_response(access: Access, body: Any) -> Any:
    """The body without what the token may not see; a single resource it may not see is Forbidden."""
    if not isinstance(body, Mapping):
        return body
    if body.get("resourceType") != "Bundle":
        if not resource_allowed(access, body):
            raise Forbidden("the resource is outside the token's scope or patient compartment")
        return body
    entries = body.get("entry")
    if not isinstance(entries, list):
        return body
    kept = [
        e for e in entries if isinstance(e, Mapping) and resource_allowed(access, e.get("resource") or {})
    ]
    if len(kept) == len(entries):
        return body
    filtered = {k: v for k, v in body.items() if k not in ("entry", "total")}  # total would now mislead
    filtered["entry"] = kept
    return filtered
