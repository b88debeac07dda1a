"""An agent withdraws its request (POST .../cancel), and long-polls for the outcome (GET ?wait_ms)."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client

from reviewq.errors import ApplicationError
from reviewq.models import AuditEvent, Request, RequestStatus, ReviewItem
from reviewq.pipeline.run import run_pipeline
from reviewq.runtime import dispatch
from reviewq.services import decisions
from reviewq.services.agent_keys import agent_key_create
from tests.factories import post_request, read_body, risky_body

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("seeded", "inline_pipeline")]


def cancel(client: Client, key: str, request_id: Any, reason: str | None = None) -> Any:
    return client.post(
        f"/api/v1/requests/{request_id}/cancel",
        json.dumps({"reason": reason}) if reason is not None else "",
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {key}",
    )


def held(client: Client, key: str) -> dict[str, Any]:
    response = post_request(client, key, risky_body())
    assert response.status_code == 202, response.content
    return response.json()


def test_a_withdrawn_item_leaves_the_queue_and_cannot_be_approved(
    client: Client, agent: Any, reviewer: User
) -> None:
    _, key = agent
    request = held(client, key)
    item = ReviewItem.objects.get(request_id=request["id"])

    response = cancel(client, key, request["id"], reason="the user closed the chat")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["status"] == "cancelled"
    assert body["decision"]["by"] == "agent" and body["decision"]["reason"] == "the user closed the chat"
    item.refresh_from_db()
    assert item.status == ReviewItem.Status.WITHDRAWN
    assert not ReviewItem.objects.filter(status=ReviewItem.Status.PENDING).exists()
    with pytest.raises(ApplicationError) as refused:
        decisions.review_approve(item_id=item.id, reviewer=reviewer)
    assert refused.value.code == "withdrawn" and refused.value.status == 410
    assert AuditEvent.objects.filter(kind="cancel", request_id=request["id"], actor="support-bot").exists()


def test_a_final_request_cannot_be_cancelled(client: Client, agent: Any, reviewer: User) -> None:
    _, key = agent
    request = held(client, key)
    item = ReviewItem.objects.get(request_id=request["id"])
    decisions.review_approve(item_id=item.id, reviewer=reviewer)
    response = cancel(client, key, request["id"])
    assert response.status_code == 409
    assert response.json()["code"] == "already_final" and response.json()["status"] == "released"
    assert Request.objects.get(id=request["id"]).status == RequestStatus.RELEASED


def test_cancel_is_scoped_to_the_agent_key(client: Client, agent: Any) -> None:
    _, key = agent
    request = held(client, key)
    _, other = agent_key_create(name="another-bot")
    assert cancel(client, other, request["id"]).status_code == 404
    assert cancel(client, key, "not-a-uuid").status_code == 404
    assert cancel(client, "wrong", request["id"]).status_code == 401
    assert cancel(client, key, request["id"], reason="x" * 501).status_code == 422
    assert Request.objects.get(id=request["id"]).status == RequestStatus.AWAITING_REVIEW


def test_a_request_still_in_the_pipeline_is_cancelled_and_the_pipeline_stops(
    client: Client, agent: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, key = agent
    monkeypatch.setattr(dispatch, "later", lambda *args: None)  # nothing picks it up yet
    monkeypatch.setattr("reviewq.services.intake.later", lambda *args: None)
    response = post_request(client, key, risky_body())
    request_id = response.json()["id"]
    assert cancel(client, key, request_id).json()["status"] == "cancelled"
    run_pipeline(request_id)  # a worker that picks it up late changes nothing
    request = Request.objects.get(id=request_id)
    assert request.status == RequestStatus.CANCELLED and not ReviewItem.objects.exists()


def test_get_long_polls_until_the_decision(client: Client, agent: Any, reviewer: User) -> None:
    _, key = agent
    request = held(client, key)
    item = ReviewItem.objects.get(request_id=request["id"])
    timer = threading.Timer(0.5, lambda: decisions.review_approve(item_id=item.id, reviewer=reviewer))
    timer.start()
    started = time.monotonic()
    response = client.get(
        f"/api/v1/requests/{request['id']}?wait_ms=10000", HTTP_AUTHORIZATION=f"Bearer {key}"
    )
    timer.join()
    assert response.status_code == 200 and response.json()["status"] == "released"
    assert 0.4 < time.monotonic() - started < 8


def test_get_without_wait_answers_at_once_and_wait_is_bounded(
    client: Client, agent: Any, settings: Any
) -> None:
    _, key = agent
    request = held(client, key)
    auth: dict[str, Any] = {"HTTP_AUTHORIZATION": f"Bearer {key}"}
    started = time.monotonic()
    assert client.get(f"/api/v1/requests/{request['id']}", **auth).json()["status"] == "awaiting_review"
    assert client.get(f"/api/v1/requests/{request['id']}?wait_ms=300", **auth).json()["status"] == (
        "awaiting_review"
    )
    assert time.monotonic() - started < 5
    too_long = client.get(f"/api/v1/requests/{request['id']}?wait_ms={settings.MAX_WAIT_MS + 1}", **auth)
    assert too_long.status_code == 422 and too_long.json()["code"] == "invalid_request"
    released = post_request(client, key, read_body()).json()
    assert (
        client.get(f"/api/v1/requests/{released['id']}?wait_ms=5000", **auth).json()["status"] == "released"
    )


def test_get_until_held_answers_once_a_reviewer_has_it(
    client: Client, agent: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, key = agent
    monkeypatch.setattr("reviewq.services.intake.later", lambda *args: None)  # picked up late, below
    request_id = post_request(client, key, risky_body()).json()["id"]
    auth: dict[str, Any] = {"HTTP_AUTHORIZATION": f"Bearer {key}"}
    timer = threading.Timer(0.5, lambda: run_pipeline(request_id))
    timer.start()
    started = time.monotonic()
    response = client.get(f"/api/v1/requests/{request_id}?wait_ms=10000&until=held", **auth)
    timer.join()
    assert response.status_code == 200 and response.json()["status"] == "awaiting_review"
    assert time.monotonic() - started < 8
    # Held already: answered at once; an unknown 'until' is a 422.
    assert client.get(f"/api/v1/requests/{request_id}?wait_ms=10000&until=held", **auth).status_code == 200
    assert client.get(f"/api/v1/requests/{request_id}?until=soon", **auth).status_code == 422
