from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.utils import timezone

from reviewq.models import ReviewItem
from reviewq.services import intake
from tests.factories import risky_body

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("seeded", "inline_pipeline")]


@pytest.fixture
def item(agent: Any) -> ReviewItem:
    request, _ = intake.request_create(agent_key=agent[0], payload=risky_body())
    return ReviewItem.objects.get(request=request)


def as_user(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def post(client: Client, path: str, body: dict | None = None) -> Any:
    return client.post(f"/api/v1/review{path}", json.dumps(body or {}), content_type="application/json")


def test_it_lists_and_decides(item: ReviewItem, reviewer: User) -> None:
    client = as_user(reviewer)
    [listed] = client.get("/api/v1/review/items").json()
    assert (
        listed["id"] == item.id
        and listed["action_under_review"]["tool_calls"][0]["name"] == "cancel_pending_order"
    )
    response = post(client, f"/items/{item.id}/approve")
    assert response.status_code == 200 and response.json()["status"] == "approved"
    again = post(client, f"/items/{item.id}/deny", {"reason": "changed my mind"})
    assert (again.status_code, again.json()["code"]) == (409, "already_decided")


def test_a_late_decision_is_410(item: ReviewItem, reviewer: User) -> None:
    ReviewItem.objects.filter(id=item.id).update(expires_at=timezone.now() - timedelta(seconds=1))
    response = post(as_user(reviewer), f"/items/{item.id}/approve")
    assert (response.status_code, response.json()["code"]) == (410, "expired")


def test_the_requester_is_refused(item: ReviewItem) -> None:
    response = post(as_user(User.objects.get(username="carol")), f"/items/{item.id}/approve")
    assert (response.status_code, response.json()["code"]) == (403, "own_request")


def test_an_edit_that_breaks_the_schema_is_refused(item: ReviewItem, reviewer: User) -> None:
    calls = [{"name": "cancel_pending_order", "arguments": {"order_id": "#W2378156", "reason": "whim"}}]
    response = post(as_user(reviewer), f"/items/{item.id}/edit", {"tool_calls": calls})
    assert response.status_code == 400
    assert response.json()["errors"][0]["path"] == "$.arguments.reason"


def test_strangers_are_refused(item: ReviewItem, outsider: User) -> None:
    assert Client().get("/api/v1/review/items").status_code == 401
    assert as_user(outsider).get("/api/v1/review/items").status_code == 401
    agent_client = Client(enforce_csrf_checks=True)
    agent_client.force_login(
        User.objects.get(username="alice")
        if User.objects.filter(username="alice").exists()
        else User.objects.create_user("alice2")
    )
    # Without the CSRF token a logged-in browser session cannot be ridden to a decision.
    assert post(agent_client, f"/items/{item.id}/approve").status_code in (401, 403)
    assert ReviewItem.objects.get(id=item.id).status == "pending"
