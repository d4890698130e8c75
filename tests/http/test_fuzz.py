"""Generated requests in the thousands: the service answers every one with 200 or a 4xx, never a
5xx, and every hook call leaves exactly one record in the audit spool, refused ones included.

Hypothesis runs derandomised, so CI explores the same fixed budget each time. Call-backs are
limited to 127.0.0.1 so that no generated fhirServer can make the service reach another host.
Beyond JSON values, requests carry what breaks naive parsers: lone UTF-16 surrogate escapes,
integers past Python's 4,300-digit limit, invalid UTF-8, UTF-16 and UTF-32 bodies, and line breaks.
"""

from __future__ import annotations

import copy
import re
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cds_service.wiring import service_of
from fhir_mappings.bundles import dumps
from tests.http.conftest import hook_body

ALLOWED = {200, 400, 404, 405, 412, 413, 415}
BUDGET = {"any_json": 1000, "mutated": 2000, "bytes": 500, "feedback": 500, "hostile": 800}

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)


@pytest.fixture(scope="module")
def fuzz_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FlaskClient]:
    from cds_service import close_app, create_app

    app = create_app(
        {
            "data_dir": str(tmp_path_factory.mktemp("fuzz")),
            "auth_mode": "off",
            "allow_http_fhir": True,
            "fhir_allowed_hosts": ["127.0.0.1"],
            "fhir_deadline_seconds": 0.5,
        },
        environ={},
    )
    yield app.test_client()
    close_app(app)


VALID = hook_body("ichis-demo-2")
# The demo patient has no panel, component or contained resource: add one of each, so that the
# mutations reach every shape the mappers read (a panel's hasMember once gave a 500).
_LABS = VALID["prefetch"]["labs"]["entry"]
_FIRST = _LABS[0]["resource"]
_LABS.append(
    {
        "fullUrl": "http://ehr.example/fhir/Observation/fuzz-panel",
        "resource": {
            "resourceType": "Observation",
            "id": "fuzz-panel",
            "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "57021-8"}]},
            "subject": _FIRST["subject"],
            "effectiveDateTime": _FIRST.get("effectiveDateTime"),
            "hasMember": [{"reference": f"Observation/{_FIRST['id']}"}, {"reference": "#ig"}],
            "contained": [dict(_FIRST, id="ig")],
            "component": [{"code": _FIRST["code"], "valueQuantity": _FIRST.get("valueQuantity")}],
        },
    }
)
VALID["context"]["draftOrders"]["entry"][0]["resource"]["contained"] = [
    {"resourceType": "Medication", "id": "m", "code": {"text": "Keytruda"}, "ingredient": [{"strength": {}}]}
]
PATHS: list[tuple[str | int, ...]] = []


def _paths(value: Any, prefix: tuple[str | int, ...] = ()) -> None:
    """Every place in a valid request, down into the prefetched resources."""
    children: list[tuple[str | int, Any]] = []
    if isinstance(value, dict):
        children = list(value.items())
    elif isinstance(value, list):
        children = list(enumerate(value[:2]))  # the first two entries of each list stand for all
    for key, item in children:
        PATHS.append((*prefix, key))
        if len(prefix) < 8:
            _paths(item, (*prefix, key))


_paths(VALID)


def _mutate(path: tuple[str | int, ...], replacement: Any, delete: bool) -> dict[str, Any]:
    """VALID with one place changed, under a hookInstance of its own (so each call is one record)."""
    body = copy.deepcopy(VALID)
    body["hookInstance"] = str(uuid.uuid4())
    if path == ("hookInstance",) and isinstance(replacement, str):
        replacement += body["hookInstance"]
    target: Any = body
    for key in path[:-1]:
        target = target[key]
    if delete:
        del target[path[-1]]
    else:
        target[path[-1]] = replacement
    return body


def _check(response: Any) -> None:
    assert response.status_code in ALLOWED, response.get_data(as_text=True)
    if response.status_code != 200:
        assert response.get_json()["resourceType"] == "OperationOutcome"


def _spooled(client: FlaskClient) -> int:
    spool = service_of(client.application).spool
    depth: int = spool.stats().depth
    return depth


def _post_hook(client: FlaskClient, data: str | bytes, service: str = "ichis-prognosis", **kw: Any) -> Any:
    """Post to a hook endpoint; check the answer, and that the call left exactly one audit record."""
    before = _spooled(client)
    response = client.post(
        f"/cds-services/{service}", data=data, **{"content_type": "application/json", **kw}
    )
    _check(response)
    assert _spooled(client) == before + 1, "every call leaves one audit record"
    return response


def _escaped(text: str) -> str:
    """JSON text with each surrogate code point written as a \\u escape, as a client would send
    a lone surrogate (it cannot be sent as UTF-8 at all)."""
    return re.sub("[\ud800-\udfff]", lambda m: f"\\u{ord(m[0]):04x}", text)


def budget(name: str) -> settings:
    return settings(
        max_examples=BUDGET[name],
        derandomize=True,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        database=None,
    )


@budget("any_json")
@given(body=json_values, service=st.sampled_from(["ichis-prognosis", "ichis-prognosis-sign", "x"]))
def test_any_json_body_gets_a_client_error_not_a_crash(
    fuzz_client: FlaskClient, body: Any, service: str
) -> None:
    _post_hook(fuzz_client, dumps(body), service)


@budget("mutated")
@given(path=st.sampled_from(PATHS), replacement=json_values, delete=st.booleans())
def test_a_valid_request_with_one_field_changed_never_crashes(
    fuzz_client: FlaskClient, path: tuple[str | int, ...], replacement: Any, delete: bool
) -> None:
    _post_hook(fuzz_client, dumps(_mutate(path, replacement, delete)))


@budget("bytes")
@given(raw=st.binary(max_size=200), content_type=st.sampled_from(["application/json", "text/plain", ""]))
def test_random_bytes_never_crash(fuzz_client: FlaskClient, raw: bytes, content_type: str) -> None:
    _post_hook(fuzz_client, raw, content_type=content_type or None)


#: Strings that break naive handling: lone surrogates, line breaks with Markdown block markers.
hostile_text = st.text(
    alphabet=st.characters(categories=["Cs"])
    | st.sampled_from(["\n", "\r", "\u2028", "=", "#", "1", ".", " "]),
    min_size=1,
    max_size=6,
).map(lambda text: "x" + text)
#: An integer literal past Python's int() limit of 4,300 digits (json.loads raises ValueError).
HUGE = object()


@budget("hostile")
@given(
    path=st.sampled_from(PATHS),
    replacement=hostile_text | st.just(HUGE),
)
def test_a_lone_surrogate_or_a_huge_number_anywhere_gets_a_4xx_and_one_record(
    fuzz_client: FlaskClient, path: tuple[str | int, ...], replacement: Any
) -> None:
    marker = "HUGE-NUMBER-HERE"
    body = _mutate(path, marker if replacement is HUGE else replacement, delete=False)
    # The marker may carry the hookInstance suffix _mutate adds: the whole string becomes the number.
    text = re.sub(f'"{marker}[^"]*"', "9" * 5000, _escaped(dumps(body)))
    response = _post_hook(fuzz_client, text.encode("utf-8"))
    if replacement is HUGE or _has_lone_surrogate(replacement):
        assert response.status_code == 400


def _has_lone_surrogate(text: str) -> bool:
    """A high surrogate followed by a low one is one character (JSON writes it as two escapes)."""
    try:
        text.encode("utf-16", "surrogatepass").decode("utf-16")
    except UnicodeDecodeError:
        return True
    return False


@pytest.mark.parametrize(
    ("encoded", "status"),
    [
        (lambda text: text.encode("utf-16"), 400),
        (lambda text: text.encode("utf-16-le"), 400),
        (lambda text: text.encode("utf-32"), 400),
        (lambda text: text.replace("ichis-demo-2", "ichis-\udc80").encode("utf-8", "surrogateescape"), 400),
        (lambda text: text.encode("utf-8").replace(b"Practitioner", b"Practitioner\xff"), 400),
        (lambda text: text.encode("utf-8").replace(b"Practitioner", b"Practitioner\xed\xa0\x80"), 400),
        (lambda text: text.encode("utf-8") + b"\xc3", 400),  # a truncated two-byte sequence
        (lambda text: b"\xef\xbb\xbf" + text.encode("utf-8"), 200),  # RFC 8259: a BOM may be ignored
    ],
    ids=["utf-16", "utf-16-le", "utf-32", "surrogate bytes", "0xff", "CESU surrogate", "truncated", "bom"],
)
def test_bodies_that_are_not_utf_8_get_a_400_and_one_record(
    fuzz_client: FlaskClient, encoded: Any, status: int
) -> None:
    body = copy.deepcopy(VALID)
    body["hookInstance"] = str(uuid.uuid4())
    assert _post_hook(fuzz_client, encoded(dumps(body))).status_code == status


@pytest.mark.parametrize("field", ["hookInstance", "userId", "patientId", "encounterId", "fhirServer"])
def test_a_lone_surrogate_in_a_context_field_is_a_400_and_is_audited(
    fuzz_client: FlaskClient, field: str
) -> None:
    body = copy.deepcopy(VALID)
    body["hookInstance"] = str(uuid.uuid4())
    target = body if field in ("hookInstance", "fhirServer") else body["context"]
    target[field] = "abc\ud800"
    response = _post_hook(fuzz_client, _escaped(dumps(body)))
    assert response.status_code == 400
    assert "surrogate" in response.get_json()["issue"][0]["diagnostics"]


@budget("feedback")
@given(body=json_values | st.fixed_dictionaries({"feedback": st.lists(json_values, max_size=3)}))
def test_any_feedback_body_never_crashes(fuzz_client: FlaskClient, body: Any) -> None:
    before = _spooled(fuzz_client)
    response = fuzz_client.post(
        "/cds-services/ichis-prognosis/feedback", data=dumps(body), content_type="application/json"
    )
    _check(response)
    if response.status_code != 200 or not body["feedback"]:
        # A call that recorded no item (a refusal, an empty list) leaves one record of its own.
        assert _spooled(fuzz_client) - before == 1


def test_the_fuzz_budget_is_in_the_thousands() -> None:
    """Thousands of generated requests: the fixed budget CI runs."""
    assert sum(BUDGET.values()) == 4800
