"""What a call leaves behind in the worker: nothing of the request once it is answered."""

from __future__ import annotations

import gc
from collections.abc import Callable
from typing import Any

import pytest
from flask.testing import FlaskClient

from fhir_mappings.observations import _Reader
from tests.http.conftest import hook_body, post_hook


def _live_readers() -> int:
    gc.collect()
    return sum(isinstance(thing, _Reader) for thing in gc.get_objects())


def _unknown_unit(result: dict[str, Any]) -> None:
    result["valueQuantity"]["code"] = result["valueQuantity"]["unit"] = "furlongs"


def _unreadable_time(result: dict[str, Any]) -> None:
    result["effectiveDateTime"] = "yesterday morning"


def _text_value(result: dict[str, Any]) -> None:
    result["valueQuantity"]["value"] = "9.8"


def _unknown_comparator(result: dict[str, Any]) -> None:
    result["valueQuantity"]["comparator"] = "~"


def _implausible(result: dict[str, Any]) -> None:
    result["valueQuantity"]["value"] = 9500


def _another_patient(result: dict[str, Any]) -> None:
    result["subject"] = {"reference": "Patient/someone-else"}


@pytest.mark.parametrize(
    ("odd", "reason"),
    [
        (_unknown_unit, "has a unit that cannot be used: unknown unit 'furlongs'."),
        (_unreadable_time, "has an unreadable collection time"),
        (_text_value, "has a value that is not a number"),
        (_unknown_comparator, "has an unknown comparator"),
        (_implausible, "labelled as thousands)?\n"),
        (_another_patient, "1 result of another patient was ignored"),
    ],
)
def test_a_call_with_a_result_that_is_refused_leaves_nothing_of_the_request_behind(
    client: FlaskClient, odd: Callable[[dict[str, Any]], None], reason: str
) -> None:
    # A feed that sends one odd result sends it on every call. A unit refusal once kept the
    # whole call stack of each call alive (request, prefetch, readings): 250 KB a call.
    body = hook_body()
    results = [e["resource"] for e in body["prefetch"]["labs"]["entry"] if "valueQuantity" in e["resource"]]
    odd(results[0])
    before = _live_readers()
    for _ in range(5):
        answer = post_hook(client, body)
        assert reason in answer.get_json()["cards"][0]["detail"].replace("\\", "") + "\n"
    assert _live_readers() == before
