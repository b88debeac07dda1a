"""The drop-in endpoint, driven by the official ``openai`` client against a live server, with the
team's upstream LLM played by a fake OpenAI-compatible server on 127.0.0.1."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import openai
import pytest

from reviewq.models import AgentKey, Request, ReviewItem
from reviewq.services.agent_keys import agent_key_create
from router.contracts import TaskType, Tier
from router.models import ModelSpec
from telemetry.models import UpstreamCall
from tests.factories import tools
from tests.fake_openai import FakeOpenAI, error_answer, tool_call_answer

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("seeded")]

TOOLS: Any = tools("get_order_details", "cancel_pending_order")
LOOKUP = "Get order details for order_id=#W2378156"
CANCEL = 'Please cancel pending order order_id=#W2378156 reason="no longer needed"'


@pytest.fixture
def upstream() -> Iterator[FakeOpenAI]:
    server = FakeOpenAI().start()
    yield server
    server.stop()


def client_for(url: str, key: str) -> Any:
    # No retries: a 5xx must reach the test as it reached the agent.
    return openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=20)


def key_in(mode: str, agent: Any, upstream: FakeOpenAI | None = None, **fields: Any) -> str:
    agent_key, key = agent
    model = None
    if upstream is not None:
        model = ModelSpec.objects.create(
            name="team-llm",
            backend=ModelSpec.Backend.OPENAI_COMPATIBLE,
            model_path="gpt-team",
            base_url=upstream.base_url,
            tier=Tier.LLM,
            strengths=[TaskType.TOOL_USE],
            price_input_per_mtok=Decimal("2.5"),
            price_output_per_mtok=Decimal("10"),
            # Answers observe mode only: never a rung of reviewq's own ladder.
            enabled=False,
        )
    AgentKey.objects.filter(id=agent_key.id).update(
        mode=mode, upstream_model=model, **{"decision_wait_ms": 5000, **fields}
    )
    return key


def wait_for(condition: Any, timeout_s: float = 10) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError("timed out")


def test_gateway_releases_a_read_as_tool_calls(live_server_url: str, agent: Any) -> None:
    client = client_for(live_server_url, key_in("gateway", agent))
    raw = client.chat.completions.with_raw_response.create(
        model="reviewq", messages=[{"role": "user", "content": LOOKUP}], tools=TOOLS
    )
    completion = raw.parse()
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls", choice.message.content
    [call] = choice.message.tool_calls
    assert call.function.name == "get_order_details"
    assert json.loads(call.function.arguments) == {"order_id": "#W2378156"}
    assert completion.usage.total_tokens > 0
    request = Request.objects.get(id=raw.headers["x-reviewq-request-id"])
    assert request.status == "released"
    assert request.metadata == {"via": "/v1/chat/completions", "model": "reviewq"}


def test_gateway_never_returns_a_held_payment_as_released(live_server_url: str, agent: Any) -> None:
    key = key_in("gateway", agent, decision_wait_ms=300)
    raw = client_for(live_server_url, key).chat.completions.with_raw_response.create(
        model="reviewq", messages=[{"role": "user", "content": CANCEL}], tools=TOOLS
    )
    choice = raw.parse().choices[0]
    request_id = raw.headers["x-reviewq-request-id"]
    assert choice.message.tool_calls is None
    assert choice.finish_reason == "stop"
    assert "awaiting human review" in choice.message.content
    assert request_id in choice.message.content
    assert raw.headers["x-reviewq-status"] == "awaiting_review"
    assert ReviewItem.objects.get(request_id=request_id).status == "pending"
    outcome = urllib.request.urlopen(
        urllib.request.Request(
            f"{live_server_url}/api/v1/requests/{request_id}", headers={"Authorization": f"Bearer {key}"}
        )
    )
    assert json.loads(outcome.read())["status"] == "awaiting_review"


def test_gateway_replies_without_a_tool_when_the_conversation_calls_for_it(
    live_server_url: str, agent: Any
) -> None:
    client = client_for(live_server_url, key_in("gateway", agent))
    lookup = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "get_order_details", "arguments": '{"order_id": "#W2378156"}'},
    }
    messages: list[Any] = [
        {"role": "user", "content": LOOKUP},
        {"role": "assistant", "content": None, "tool_calls": [lookup]},
        {
            "role": "tool",
            "tool_call_id": "call_1",
            "content": '{"order_id": "#W2378156", "status": "delivered"}',
        },
    ]
    choice = client.chat.completions.create(model="reviewq", messages=messages, tools=TOOLS).choices[0]
    assert choice.message.tool_calls is None
    assert "delivered" in choice.message.content
    # Without tools the answer is a reply too.
    plain = client.chat.completions.create(model="reviewq", messages=[{"role": "user", "content": "Hello!"}])
    assert plain.choices[0].message.content


def test_observe_returns_the_upstream_answer_unchanged_and_logs_it(
    live_server_url: str, agent: Any, upstream: FakeOpenAI
) -> None:
    client = client_for(live_server_url, key_in("observe", agent, upstream))
    upstream.script(tool_call_answer("get_order_details", order_id="#W2378156"))
    raw = client.chat.completions.with_raw_response.create(
        model="whatever-the-agent-says",
        messages=[{"role": "user", "content": LOOKUP}],
        tools=TOOLS,
        temperature=0.2,
    )
    completion = raw.parse()
    assert completion.id == "chatcmpl-upstream"
    assert completion.choices[0].message.tool_calls[0].id == "call_up_1"
    # The upstream got the agent's body, fields reviewq does not read included, as the registry's model.
    [sent] = upstream.requests
    assert sent.body["model"] == "gpt-team"
    assert sent.body["temperature"] == 0.2
    call = UpstreamCall.objects.get(id=raw.headers["x-reviewq-upstream-call"])
    assert (call.source, call.tool_name, call.tokens_in, call.tokens_out) == (
        "observed",
        "get_order_details",
        812,
        31,
    )
    assert call.cost_usd == Decimal("0.00234")  # 812 * 2.5 + 31 * 10 per million tokens
    assert call.would_hold is False
    assert not Request.objects.exists()
    # Off the hot path, the small model proposed on the same input; the fake one agrees.
    compared = wait_for(lambda: UpstreamCall.objects.exclude(agreement="").filter(id=call.id).first())
    assert compared.agreement == "agrees", compared.slm_issues
    assert compared.slm_model


def test_observe_records_would_have_held_and_enforces_when_ops_choose(
    live_server_url: str, agent: Any, upstream: FakeOpenAI
) -> None:
    client = client_for(live_server_url, key_in("observe", agent, upstream))
    agent[0].refresh_from_db()
    cancel = tool_call_answer("cancel_pending_order", order_id="#W2378156", reason="no longer needed")
    upstream.script(cancel)
    passed = client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": CANCEL}], tools=TOOLS
    )
    assert passed.choices[0].message.tool_calls[0].function.name == "cancel_pending_order"
    assert UpstreamCall.objects.get().would_hold is True

    # A key's settings reach the server within AGENT_KEY_CACHE_SECONDS: a second key, enforcing.
    enforcing = agent_key_create(name="enforcing-bot", owner=agent[0].owner)
    AgentKey.objects.filter(id=enforcing[0].id).update(
        mode="observe", upstream_model=agent[0].upstream_model, enforce_policies=True, decision_wait_ms=300
    )
    client = client_for(live_server_url, enforcing[1])
    upstream.script(cancel)
    raw = client.chat.completions.with_raw_response.create(
        model="m", messages=[{"role": "user", "content": CANCEL}], tools=TOOLS
    )
    choice = raw.parse().choices[0]
    assert choice.message.tool_calls is None
    assert "awaiting human review" in choice.message.content
    request = Request.objects.get(id=raw.headers["x-reviewq-request-id"])
    assert (request.status, request.proposed_by) == ("awaiting_review", "upstream")
    assert (request.proposal or {})["tool_calls"][0]["name"] == "cancel_pending_order"
    assert UpstreamCall.objects.get(id=raw.headers["x-reviewq-upstream-call"]).held_request_id == request.id


def test_an_upstream_failure_is_a_clear_502_and_is_recorded(
    live_server_url: str, agent: Any, upstream: FakeOpenAI
) -> None:
    client = client_for(live_server_url, key_in("observe", agent, upstream))
    upstream.script(error_answer(503))
    with pytest.raises(openai.APIStatusError) as raised:
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": LOOKUP}], tools=TOOLS)
    assert raised.value.status_code == 502
    assert "upstream LLM failed" in raised.value.message
    call = UpstreamCall.objects.get()
    assert call.answer is None
    assert "503" in call.error
    assert call.messages == [{"role": "user", "content": LOOKUP}]


def test_what_the_endpoint_refuses(live_server_url: str, agent: Any) -> None:
    client = client_for(live_server_url, key_in("gateway", agent))
    with pytest.raises(openai.BadRequestError, match="stream is not supported"):
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}], stream=True)
    with pytest.raises(openai.BadRequestError, match="messages"):
        client.chat.completions.create(model="m", messages=[])
    with pytest.raises(openai.AuthenticationError):
        client_for(live_server_url, "rq_not-a-key").chat.completions.create(
            model="m", messages=[{"role": "user", "content": "hi"}]
        )
