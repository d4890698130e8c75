"""Feedback on cards: batches, duplicates, durability and bad input."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from cds_service.store import Store
from cds_service.wiring import service_of
from tests.http.conftest import hook_body, post_hook

FEEDBACK = "/cds-services/ichis-prognosis/feedback"


def issue_card(client: FlaskClient, patient: str = "ichis-demo-partial") -> dict[str, Any]:
    card: dict[str, Any] = post_hook(client, hook_body(patient)).get_json()["cards"][0]
    return card


def overridden(card: str, stamp: str = "2026-11-29T10:05:00Z") -> dict[str, Any]:
    return {
        "card": card,
        "outcome": "overridden",
        "overrideReason": {
            "reason": {
                "system": "urn:ichis:cds:override-reason",
                "code": "already-considered",
                "display": "Prognosis already discussed; score noted",
            },
            "userComment": "discussed at tumour board",
        },
        "outcomeTimestamp": stamp,
    }


def test_a_batch_is_stored_and_a_repeat_is_not_stored_twice(
    client: FlaskClient, make_app: Callable[..., Flask]
) -> None:
    card = issue_card(client)
    accepted = {
        "card": card["uuid"],
        "outcome": "accepted",
        "outcomeTimestamp": "2026-11-29T10:04:00Z",
        "acceptedSuggestions": [{"id": card["suggestions"][0]["uuid"]}],
    }
    batch = {"feedback": [accepted, overridden(card["uuid"])]}
    first = client.post(FEEDBACK, json=batch)
    assert first.status_code == 200
    assert first.get_json() == {"received": 2, "stored": 2, "duplicates": 0}
    again = client.post(FEEDBACK, json=batch)
    assert again.get_json() == {"received": 2, "stored": 0, "duplicates": 2}


def test_feedback_survives_a_restart_and_is_linked_to_its_hook_instance(
    make_app: Callable[..., Flask],
) -> None:
    app = make_app()
    client = app.test_client()
    body = hook_body("ichis-demo-2")
    card = post_hook(client, body).get_json()["cards"][0]
    client.post(FEEDBACK, json={"feedback": [overridden(card["uuid"])]})
    restarted = make_app()  # a new app on the same data directory, as after a restart
    store: Store = service_of(restarted).store
    (row,) = store.feedback(card["uuid"])
    assert row["hook_instance"] == body["hookInstance"]
    assert row["outcome"] == "overridden"
    assert "tumour board" in row["override_reason"]


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({}, "'feedback' array"),
        ({"feedback": {}}, "'feedback' array"),
        ({"feedback": ["x"]}, "feedback[0] must be an object"),
        ({"feedback": [{"outcome": "overridden", "outcomeTimestamp": "2026-11-29T10:00:00Z"}]}, "card"),
        (
            {"feedback": [{"card": "c", "outcome": "ignored", "outcomeTimestamp": "2026-11-29T10:00:00Z"}]},
            "outcome",
        ),
        (
            {"feedback": [{"card": "c", "outcome": "overridden", "outcomeTimestamp": "yesterday"}]},
            "outcomeTimestamp",
        ),
        (
            {"feedback": [{"card": "c", "outcome": "accepted", "outcomeTimestamp": "2026-11-29T10:00:00Z"}]},
            "acceptedSuggestions",
        ),
        (
            {
                "feedback": [
                    {
                        "card": "c",
                        "outcome": "overridden",
                        "outcomeTimestamp": "2026-11-29T10:00:00Z",
                        "overrideReason": "because",
                    }
                ]
            },
            "overrideReason",
        ),
    ],
)
def test_malformed_feedback_gets_400_and_stores_nothing(
    client: FlaskClient, payload: Any, message: str
) -> None:
    response = client.post(FEEDBACK, json=payload)
    assert response.status_code == 400
    assert message in response.get_json()["issue"][0]["diagnostics"]


def test_a_bad_item_rejects_the_whole_batch(client: FlaskClient) -> None:
    card = issue_card(client)
    batch = {"feedback": [overridden(card["uuid"]), {"card": card["uuid"], "outcome": "nope"}]}
    assert client.post(FEEDBACK, json=batch).status_code == 400
    assert client.post(FEEDBACK, json={"feedback": [overridden(card["uuid"])]}).get_json()["stored"] == 1


def test_feedback_for_an_unknown_service_is_404(client: FlaskClient) -> None:
    assert client.post("/cds-services/nope/feedback", json={"feedback": []}).status_code == 404
