"""Every hostile input at every edge gets a clear 4xx and loses nothing (on SQLite and PostgreSQL).

Each of these was a 500: NUL bytes (which PostgreSQL cannot store), lone surrogates, nesting
deep enough to exhaust recursion, NaN, an oversized body, a multipart body without a boundary,
a callback URL longer than its column, an edit typed as deeply nested JSON, a schema with a
``true`` property.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import User
from django.test import Client

from reviewq.models import Request, ReviewItem
from reviewq.services import intake
from router.backends.fake import FakeBackend
from tests.factories import read_body, risky_body

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("seeded", "inline_pipeline")]


def nested(depth: int) -> Any:
    value: Any = "leaf"
    for _ in range(depth):
        value = {"a": value}
    return value


def raw_post(client: Client, key: str, text: str | bytes) -> Any:
    return client.post(
        "/api/v1/requests", text, content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {key}"
    )


def agent_post(client: Client, key: str, payload: dict[str, Any]) -> Any:
    return raw_post(client, key, json.dumps(payload))


@pytest.fixture
def item(agent: Any) -> ReviewItem:
    request, _ = intake.request_create(agent_key=agent[0], payload=risky_body())
    return ReviewItem.objects.get(request=request)


def reviewer_client(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


AGENT_BODIES = {
    "NUL in content": read_body(messages=[{"role": "user", "content": "order\u0000 #W2378156"}]),
    "NUL in a metadata key": read_body(metadata={"k\u0000": 1}),
    "NUL in a tool description": {
        **read_body(),
        "tools": [{"type": "function", "function": {"name": "x", "description": "a\u0000b"}}],
    },
    "lone surrogate": read_body(messages=[{"role": "user", "content": "hi \ud800 there"}]),
    "metadata 300 deep": read_body(metadata=nested(300)),
    "callback_url over its column": read_body(callback_url="https://example.com/" + "a" * 600),
}


@pytest.mark.parametrize("case", list(AGENT_BODIES))
def test_hostile_agent_bodies_are_refused(client: Client, agent: Any, case: str) -> None:
    response = agent_post(client, agent[1], AGENT_BODIES[case])
    assert 400 <= response.status_code < 500, (case, response.status_code, response.content[:300])
    assert response.json()["code"] and response.json()["message"]
    assert not Request.objects.exists()


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ('{"messages": ' + "[" * 5000 + "]" * 5000 + "}", "invalid_input"),  # beyond the recursion limit
        ('{"messages": [{"role": "user", "content": "hi"}], "metadata": {"x": NaN}}', "malformed_json"),
        (
            '{"messages": [{"role": "user", "content": "hi"}], "metadata": {"x": ' + "9" * 5000 + "}}",
            "malformed_json",
        ),
        (b'{"messages": [{"role": "user", "content": "\xff"}]}', "malformed_json"),
    ],
)
def test_unparsable_or_too_deep_json_is_refused(
    client: Client, agent: Any, text: str | bytes, code: str
) -> None:
    response = raw_post(client, agent[1], text)
    assert (response.status_code, response.json()["code"]) == (400, code), response.content[:300]


def test_a_body_over_the_size_limit_is_413(client: Client, agent: Any, settings: Any) -> None:
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 10_000
    response = agent_post(client, agent[1], read_body(metadata={"pad": "x" * 20_000}))
    assert (response.status_code, response.json()["code"]) == (413, "too_large")


def test_hostile_review_api_bodies_are_refused(item: ReviewItem, reviewer: User) -> None:
    client = reviewer_client(reviewer)
    deny = client.post(
        f"/api/v1/review/items/{item.id}/deny",
        json.dumps({"reason": "no\u0000"}),
        content_type="application/json",
    )
    edit = client.post(
        f"/api/v1/review/items/{item.id}/edit",
        json.dumps({"tool_calls": [{"name": "cancel_pending_order", "arguments": {"order_id": "#W\u0000"}}]}),
        content_type="application/json",
    )
    multipart = client.generic(
        "POST", f"/api/v1/review/items/{item.id}/approve", b"--x\r\n", content_type="multipart/form-data"
    )
    for response in (deny, edit, multipart):
        assert 400 <= response.status_code < 500, response.content[:300]
    assert ReviewItem.objects.get(id=item.id).status == "pending"


def test_hostile_page_inputs_are_refused(item: ReviewItem, reviewer: User) -> None:
    client = reviewer_client(reviewer)
    assert client.get("/review/?group=%00").status_code == 400
    assert client.get("/api/v1/review/items?group=%00").status_code == 400
    assert client.post(f"/review/{item.id}/deny", {"reason": "no\u0000"}).status_code == 400
    multipart = client.generic(
        "POST", f"/review/{item.id}/deny", b"reason=x", content_type="multipart/form-data"
    )
    assert multipart.status_code == 400
    assert ReviewItem.objects.get(id=item.id).status == "pending"


def test_deep_json_in_the_raw_editor_is_explained_and_kept(item: ReviewItem, reviewer: User) -> None:
    raw = '[{"name": "cancel_pending_order", "arguments": ' + '{"a": ' * 3000 + "1" + "}" * 3000 + "}]"
    response = reviewer_client(reviewer).post(f"/review/{item.id}/edit", {"mode": "json", "raw_json": raw})
    assert response.status_code == 200
    page = response.content.decode()
    assert 'id="edit-error"' in page and "nested more than" in page
    assert ReviewItem.objects.get(id=item.id).status == "pending"


def test_an_item_whose_schema_has_a_true_property_renders(agent: Any, reviewer: User) -> None:
    tool = {
        "type": "function",
        "function": {"name": "note", "parameters": {"type": "object", "properties": {"anything": True}}},
    }
    FakeBackend.scripted_outputs.append(
        json.dumps({"name": "note", "arguments": {"anything": [1, {"b": 2}]}})
    )
    request, _ = intake.request_create(
        agent_key=agent[0], payload={"messages": [{"role": "user", "content": "note it"}], "tools": [tool]}
    )
    item = ReviewItem.objects.get(request=request)  # "note" is not a registered tool: held
    response = reviewer_client(reviewer).get(f"/review/{item.id}/")
    assert response.status_code == 200 and 'name="call-0-anything"' in response.content.decode()


def test_a_nul_in_the_sockets_filter_closes_it(reviewer: User) -> None:
    from reviewq.asgi import application

    client = reviewer_client(reviewer)
    headers = [
        (b"cookie", f"sessionid={client.cookies['sessionid'].value}".encode()),
        (b"origin", b"http://127.0.0.1:8000"),
        (b"host", b"127.0.0.1:8000"),
    ]

    async def connect() -> bool:
        communicator = WebsocketCommunicator(application, "/ws/review/?group=%00", headers=headers)
        connected, _ = await communicator.connect()
        await communicator.disconnect()
        return connected

    assert async_to_sync(connect)() is False
