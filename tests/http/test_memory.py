"""What a call leaves behind in the worker: nothing of the request once it is answered."""

from __future__ import annotations

import gc

from flask.testing import FlaskClient

from fhir_mappings.observations import _Reader
from tests.http.conftest import hook_body, post_hook


def _live_readers() -> int:
    gc.collect()
    return sum(isinstance(thing, _Reader) for thing in gc.get_objects())


def test_calls_whose_results_carry_an_unknown_unit_leave_nothing_of_the_request_behind(
    client: FlaskClient,
) -> None:
    # A feed that sends one result in a unit nobody knows sends it on every call; each call's
    # refusal once kept the whole call stack alive (request, prefetch, readings): 250 KB a call.
    body = hook_body()
    labs = body["prefetch"]["labs"]["entry"]
    quantities = [e["resource"]["valueQuantity"] for e in labs if "valueQuantity" in e["resource"]]
    quantities[0]["code"] = quantities[0]["unit"] = "furlongs"
    before = _live_readers()
    for _ in range(5):
        answer = post_hook(client, body)
        assert "furlongs" in answer.get_data(as_text=True)
    assert _live_readers() == before
