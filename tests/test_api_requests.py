from __future__ import annotations

import json
import time
from typing import Any

import pytest
from django.contrib.staticfiles import finders
from django.test import Client
from django.utils import timezone

from reviewq.models import AgentKey, Request, RequestStatus, ReviewItem
from telemetry.models import ModelCall
from tests.factories import body, post_request, read_body, risky_body

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("seeded", "inline_pipeline")]


def post(client: Client, key: str, payload: Any, **headers: Any) -> Any:
    return post_request(client, key, payload, **headers)


def test_it_releases_a_read_only_call(client: Client, agent: Any) -> None:
    _, key = agent
    response = post(client, key, read_body(wait_ms=2000))
    assert response.status_code == 201, response.content
    answer = response.json()
    assert answer["status"] == "released"
    assert answer["action"]["type"] == "tool_calls"
    assert answer["action"]["id"].startswith("act_")
    [call] = answer["action"]["tool_calls"]
    assert call["name"] == "get_order_details"
    assert call["arguments"] == {"order_id": "#W2378156"}
    assert answer["decision"]["by"] == "policy"
    assert answer["decision"]["decision"] == "auto"
    assert answer["decision"]["model"] == "qwen2.5-coder-0.5b-instruct"
    assert ModelCall.objects.filter(request_id=answer["id"]).count() == 1


def test_it_holds_a_risky_call_and_answers_202(client: Client, agent: Any) -> None:
    _, key = agent
    response = post(client, key, risky_body(wait_ms=300))
    assert response.status_code == 202
    answer = response.json()
    assert answer["status"] == "awaiting_review"
    assert answer["action"] is None
    item = ReviewItem.objects.get(request_id=answer["id"])
    assert set(item.risk_tags) == {"payment", "destructive"}
    assert "cancel_pending_order" in item.hold_reason


def test_it_answers_202_at_once_without_wait(client: Client, agent: Any) -> None:
    _, key = agent
    response = post(client, key, read_body())
    # The inline pipeline finished before the answer, so even wait_ms=0 sees the final state.
    assert response.status_code in (201, 202)
    assert response.json()["status"] in [s.value for s in RequestStatus]


def test_get_returns_the_request(client: Client, agent: Any) -> None:
    _, key = agent
    created = post(client, key, read_body(wait_ms=1000)).json()
    response = client.get(f"/api/v1/requests/{created['id']}", HTTP_AUTHORIZATION=f"Bearer {key}")
    assert response.status_code == 200
    assert response.json() == created
    assert set(response.json()) == {"id", "status", "action", "decision"}


def test_it_validates_ownership_of_requests(client: Client, agent: Any) -> None:
    from reviewq.services.agent_keys import agent_key_create

    _, key = agent
    created = post(client, key, read_body()).json()
    _, other_key = agent_key_create(name="other-bot")
    response = client.get(f"/api/v1/requests/{created['id']}", HTTP_AUTHORIZATION=f"Bearer {other_key}")
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"


def test_idempotency_key_returns_the_first_answer(client: Client, agent: Any) -> None:
    _, key = agent
    first = post(client, key, read_body(wait_ms=1000), HTTP_IDEMPOTENCY_KEY="abc-1")
    # wait_ms is transport, not content: a retry with another wait is the same request.
    second = post(client, key, read_body(wait_ms=10), HTTP_IDEMPOTENCY_KEY="abc-1")
    assert first.json() == second.json()
    assert Request.objects.count() == 1


def test_idempotency_key_with_another_body_is_a_conflict(client: Client, agent: Any) -> None:
    _, key = agent
    post(client, key, read_body(), HTTP_IDEMPOTENCY_KEY="abc-2")
    response = post(client, key, risky_body(), HTTP_IDEMPOTENCY_KEY="abc-2")
    assert response.status_code == 409
    assert response.json()["code"] == "idempotency_key_reused"
    assert Request.objects.count() == 1


@pytest.mark.parametrize(
    ("payload", "status", "code"),
    [
        ("{not json", 400, "malformed_json"),
        ({"messages": []}, 422, "invalid_request"),
        ({"messages": [{"role": "robot", "content": "hi"}]}, 422, "invalid_request"),
        ({"messages": [{"role": "user"}]}, 422, "invalid_request"),
        ({"messages": [{"role": "tool", "content": "x"}]}, 422, "invalid_request"),
        (
            {
                "messages": [
                    {
                        "role": "assistant",
                        "tool_calls": [
                            {
                                "id": "c1",
                                "type": "function",
                                "function": {"name": "f", "arguments": "not json"},
                            }
                        ],
                    }
                ]
            },
            422,
            "invalid_request",
        ),
        (
            {
                "messages": [{"role": "user", "content": "hi"}],
                "tools": [{"type": "function", "function": {}}],
            },
            422,
            "invalid_request",
        ),
        (
            {
                "messages": [{"role": "user", "content": "hi"}],
                "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": 12}}}],
            },
            400,
            "invalid_tool_schema",
        ),
        (
            {
                "messages": [{"role": "user", "content": "hi"}],
                "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "string"}}}],
            },
            400,
            "invalid_tool_schema",
        ),
        (
            {
                "messages": [{"role": "user", "content": "hi"}],
                "tools": [
                    {"type": "function", "function": {"name": "f"}},
                    {"type": "function", "function": {"name": "f"}},
                ],
            },
            400,
            "invalid_tools",
        ),
        (
            {
                "messages": [
                    {"role": "user", "content": "hi"},
                    {"role": "tool", "tool_call_id": "x", "content": "r"},
                ]
            },
            400,
            "invalid_messages",
        ),
        ({"messages": [{"role": "user", "content": "hi"}], "wait_ms": 10_000_000}, 422, "invalid_request"),
        ({"messages": [{"role": "user", "content": "hi"}], "task_type": "tool_use"}, 422, "invalid_request"),
    ],
)
def test_bad_input_is_a_4xx_and_writes_nothing(
    client: Client, agent: Any, payload: Any, status: int, code: str
) -> None:
    _, key = agent
    response = post(client, key, payload)
    assert response.status_code == status, response.content
    assert response.json()["code"] == code
    assert response.json()["message"]
    assert Request.objects.count() == 0
    assert ModelCall.objects.count() == 0


@pytest.mark.parametrize("authorization", [None, "Bearer wrong", "Basic abc", "Bearer "])
def test_a_missing_or_wrong_key_is_refused(client: Client, authorization: str | None) -> None:
    headers: dict[str, Any] = {"HTTP_AUTHORIZATION": authorization} if authorization else {}
    response = client.post(
        "/api/v1/requests", json.dumps(read_body()), content_type="application/json", **headers
    )
    assert response.status_code == 401
    assert response.json()["code"] == "unauthorized"
    assert Request.objects.count() == 0


def test_a_revoked_key_is_refused_from_the_next_call(client: Client, agent: Any) -> None:
    agent_key, key = agent
    assert post(client, key, read_body()).status_code == 202  # the key is now remembered
    agent_key.revoked_at = timezone.now()
    agent_key.save()  # as the admin does
    assert post(client, key, read_body()).status_code == 401


def test_a_key_revoked_behind_the_admins_back_is_refused_within_the_cache_time(
    client: Client, agent: Any, settings: Any
) -> None:
    settings.AGENT_KEY_CACHE_SECONDS = 0.3
    agent_key, key = agent
    assert post(client, key, read_body()).status_code == 202
    AgentKey.objects.filter(id=agent_key.id).update(revoked_at=timezone.now())  # sends no signal
    time.sleep(0.35)
    assert post(client, key, read_body()).status_code == 401
    settings.AGENT_KEY_CACHE_SECONDS = 0
    AgentKey.objects.filter(id=agent_key.id).update(revoked_at=None)
    assert post(client, key, read_body()).status_code == 202
    AgentKey.objects.filter(id=agent_key.id).update(revoked_at=timezone.now())
    assert post(client, key, read_body()).status_code == 401  # no cache: refused at once


@pytest.mark.parametrize("request_id", ["abc", "00000000-0000-0000-0000-000000000000"])
def test_an_unknown_request_id_is_404(client: Client, agent: Any, request_id: str) -> None:
    _, key = agent
    response = client.get(f"/api/v1/requests/{request_id}", HTTP_AUTHORIZATION=f"Bearer {key}")
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"


def test_a_text_reply_without_tools_is_released(client: Client, agent: Any) -> None:
    _, key = agent
    response = post(client, key, body("What are your opening hours?", "nonexistent-tool-name", wait_ms=1000))
    answer = response.json()
    assert answer["status"] == "released"
    assert answer["action"]["type"] == "respond"
    assert answer["action"]["content"]


def test_openapi_docs_are_served_without_internet(client: Client) -> None:
    page = client.get("/api/v1/docs")
    assert page.status_code == 200
    html = page.content.decode()
    assert "/static/ninja/swagger-ui-bundle.js" in html and "cdn.jsdelivr" not in html
    assert finders.find("ninja/swagger-ui-bundle.js")  # served by the ASGI app's static handler
    schema = client.get("/api/v1/openapi.json").json()
    assert "/api/v1/requests" in schema["paths"]


def test_a_key_over_its_budget_gets_429(client: Client, agent: Any, settings: Any) -> None:
    from django.core.cache import cache

    cache.clear()
    settings.API_RATE_LIMIT = "3/m"
    _, key = agent
    statuses = [post(client, key, read_body()).status_code for _ in range(3)]
    assert all(status in (201, 202) for status in statuses)
    response = post(client, key, read_body())
    assert response.status_code == 429
    assert response.json()["code"] == "rate_limited"
    assert int(response["Retry-After"]) >= 1
    assert Request.objects.count() == 3
    cache.clear()


def test_concurrent_posts_with_one_idempotency_key_make_one_request(agent: Any) -> None:
    import threading

    from django.db import close_old_connections

    _, key = agent
    answers: list[Any] = []
    barrier = threading.Barrier(8)

    def send() -> None:
        barrier.wait()
        try:
            response = post(Client(), key, read_body(wait_ms=2000), HTTP_IDEMPOTENCY_KEY="same-key")
            answers.append((response.status_code, response.json()["id"]))
        finally:
            close_old_connections()

    threads = [threading.Thread(target=send) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(answers) == 8
    assert len({request_id for _, request_id in answers}) == 1
    assert all(status in (201, 202) for status, _ in answers)
    assert Request.objects.count() == 1


def test_a_lost_idempotency_race_inside_a_callers_transaction_leaves_it_usable(
    agent: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Inside a caller's transaction the INSERT has a savepoint: when another request with the
    same key won the insert, the service still answers with that one, and the caller's
    transaction goes on."""
    from django.db import transaction

    from reviewq.services import intake

    agent_key, _ = agent
    first, created = intake.request_create(agent_key=agent_key, payload=read_body(), idempotency_key="k1")
    assert created
    replay = intake._idempotent_replay
    looked: list[int] = []

    def lose_the_race(*args: Any) -> Request | None:
        looked.append(1)
        return None if len(looked) == 1 else replay(*args)  # the first look misses the winner

    monkeypatch.setattr(intake, "_idempotent_replay", lose_the_race)
    with transaction.atomic():
        again, created = intake.request_create(agent_key=agent_key, payload=read_body(), idempotency_key="k1")
        assert Request.objects.count() == 1  # the transaction still runs queries
    assert again.id == first.id and not created
