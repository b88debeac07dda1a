"""The Anthropic backend, with the real ``anthropic`` client against a fake Messages API."""

from __future__ import annotations

import json
import socket
import time
from typing import Any

import pytest

from router.backends.anthropic import AnthropicBackend
from router.backends.base import BackendError, Prompt
from router.backends.registry import get_backend
from router.contracts import Tier
from router.models import ModelSpec
from router.schemas import tool_choice_schema
from tests.fake_anthropic import (
    FakeAnthropic,
    error_answer,
    fake_anthropic_fixture,  # noqa: F401 (registers the fake_anthropic fixture)
    slow_answer,
    text_answer,
    tool_use_answer,
    tool_uses_answer,
)

ORDER_SCHEMA = {
    "type": "object",
    "properties": {"order_id": {"type": "string"}},
    "required": ["order_id"],
}
TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "function": {"name": "lookup_order", "description": "Look up an order.", "parameters": ORDER_SCHEMA},
    },
    {
        "type": "function",
        "function": {
            "name": "refund_order",
            "description": "Refund an order.",
            "parameters": {
                "type": "object",
                "properties": {"order_id": {"type": "string"}, "amount": {"type": "number"}},
                "required": ["order_id", "amount"],
            },
        },
    },
    {"type": "function", "function": {"name": "escalate"}},  # no description, no parameters
]
CONVERSATION = [{"role": "user", "content": "Where is order A-1001?"}]


def tool_prompt(**overrides: Any) -> Prompt:
    fields: dict[str, Any] = {
        "system": "You pick the next tool call.",
        "conversation": CONVERSATION,
        "output_schema": tool_choice_schema(TOOLS),
        "tools": TOOLS,
    }
    fields.update(overrides)
    return Prompt(**fields)


def make_backend(server: FakeAnthropic, *, timeout_s: float = 2.0, max_retries: int = 3) -> AnthropicBackend:
    return AnthropicBackend(
        model="claude-test",
        api_key="sk-ant-test",
        base_url=server.base_url,
        timeout_s=timeout_s,
        max_retries=max_retries,
    )


def api_key_sent(headers: dict[str, str]) -> str:
    # Older clients send the key as x-api-key; anthropic 2.x sends it as a bearer token.
    return headers.get("x-api-key") or headers.get("authorization", "").removeprefix("Bearer ")


def test_a_forced_tool_call_becomes_name_and_arguments(fake_anthropic: FakeAnthropic) -> None:
    fake_anthropic.script(
        tool_use_answer("lookup_order", {"order_id": "A-1001"}, input_tokens=321, output_tokens=45)
    )

    generation = make_backend(fake_anthropic).generate(tool_prompt())

    assert json.loads(generation.text) == {"name": "lookup_order", "arguments": {"order_id": "A-1001"}}
    assert generation.text == '{"name":"lookup_order","arguments":{"order_id":"A-1001"}}'
    assert (generation.tokens_in, generation.tokens_out) == (321, 45)
    assert generation.decision_logprobs == []
    assert generation.latency_ms > 0


def test_it_sends_the_agent_tools_and_forces_exactly_one_call(fake_anthropic: FakeAnthropic) -> None:
    make_backend(fake_anthropic).generate(tool_prompt(max_tokens=256))

    request = fake_anthropic.requests[0]
    assert request.path == "/v1/messages"
    assert api_key_sent(request.headers) == "sk-ant-test"
    assert "anthropic-version" in request.headers
    body = request.body
    assert body["model"] == "claude-test"
    assert body["max_tokens"] >= 1024  # an LLM's tool call must not be cut off at the SLM's budget
    assert body["system"] == "You pick the next tool call."
    assert body["tools"] == [
        {"name": "lookup_order", "description": "Look up an order.", "input_schema": ORDER_SCHEMA},
        {
            "name": "refund_order",
            "description": "Refund an order.",
            "input_schema": TOOLS[1]["function"]["parameters"],
        },
        {"name": "escalate", "input_schema": {"type": "object", "properties": {}}},
    ]
    assert body["tool_choice"] == {"type": "any", "disable_parallel_tool_use": True}
    assert body["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "Where is order A-1001?"}]}
    ]


def test_parallel_calls_become_a_list_of_calls(fake_anthropic: FakeAnthropic) -> None:
    fake_anthropic.script(
        tool_uses_answer(
            [("lookup_order", {"order_id": "A-1"}), ("refund_order", {"order_id": "A-2", "amount": 5})]
        )
    )

    generation = make_backend(fake_anthropic).generate(tool_prompt(parallel_tool_calls=True))

    assert json.loads(generation.text) == {
        "calls": [
            {"name": "lookup_order", "arguments": {"order_id": "A-1"}},
            {"name": "refund_order", "arguments": {"order_id": "A-2", "amount": 5}},
        ]
    }
    assert fake_anthropic.last_body["tool_choice"] == {"type": "any", "disable_parallel_tool_use": False}


def test_tools_are_rebuilt_from_the_answer_schema_when_the_prompt_has_none(
    fake_anthropic: FakeAnthropic,
) -> None:
    make_backend(fake_anthropic).generate(tool_prompt(tools=[]))

    assert [tool["name"] for tool in fake_anthropic.last_body["tools"]] == [
        "lookup_order",
        "refund_order",
        "escalate",
    ]


def test_extraction_answers_through_the_synthetic_tool(fake_anthropic: FakeAnthropic) -> None:
    schema = {
        "type": "object",
        "properties": {"email": {"type": "string"}, "amount": {"type": "number"}},
        "required": ["email", "amount"],
    }
    fake_anthropic.script(tool_use_answer("answer", {"email": "ann@example.com", "amount": 12.5}))

    generation = make_backend(fake_anthropic).generate(
        tool_prompt(task_type="extraction", output_schema=schema, tools=TOOLS)
    )

    assert generation.text == '{"email":"ann@example.com","amount":12.5}'
    body = fake_anthropic.last_body
    assert [tool["name"] for tool in body["tools"]] == ["answer"]  # the agent's tools are not offered
    assert body["tools"][0]["input_schema"] == schema
    assert body["tool_choice"] == {"type": "tool", "name": "answer"}


def test_a_non_object_schema_is_wrapped_and_unwrapped(fake_anthropic: FakeAnthropic) -> None:
    schema = {"type": "string", "enum": ["refund", "shipping", "other"]}
    fake_anthropic.script(tool_use_answer("answer", {"value": "refund"}))

    generation = make_backend(fake_anthropic).generate(
        tool_prompt(task_type="classification", output_schema=schema)
    )

    assert generation.text == '"refund"'
    assert fake_anthropic.last_body["tools"][0]["input_schema"] == {
        "type": "object",
        "properties": {"value": schema},
        "required": ["value"],
    }


def test_the_conversation_is_translated_to_anthropic_messages(fake_anthropic: FakeAnthropic) -> None:
    conversation = [
        {"role": "system", "content": "Be polite."},
        {"role": "user", "content": "Refund A-1 and check A-2."},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "lookup_order", "arguments": '{"order_id": "A-1"}'},
                },
                {
                    "id": "call_2",
                    "type": "function",
                    "function": {"name": "lookup_order", "arguments": '{"order_id": "A-2"}'},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": '{"status": "delivered"}'},
        {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "shipped"}]},
        {"role": "developer", "content": "Amounts are in EUR."},
        {"role": "user", "content": "Thanks, go ahead."},
    ]

    make_backend(fake_anthropic).generate(
        tool_prompt(conversation=conversation, feedback="Your last answer had no order_id.")
    )

    body = fake_anthropic.last_body
    assert body["system"] == "You pick the next tool call.\n\nBe polite.\n\nAmounts are in EUR."
    assert body["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "Refund A-1 and check A-2."}]},
        {
            "role": "assistant",
            "content": [
                {"type": "tool_use", "id": "call_1", "name": "lookup_order", "input": {"order_id": "A-1"}},
                {"type": "tool_use", "id": "call_2", "name": "lookup_order", "input": {"order_id": "A-2"}},
            ],
        },
        {
            # Tool results and the user's next words are one user turn, results first.
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "call_1", "content": '{"status": "delivered"}'},
                {"type": "tool_result", "tool_use_id": "call_2", "content": "shipped"},
                {"type": "text", "text": "Thanks, go ahead."},
                {"type": "text", "text": "Your last answer had no order_id."},
            ],
        },
    ]


def test_unpaired_tool_blocks_become_text(fake_anthropic: FakeAnthropic) -> None:
    conversation = [
        {"role": "assistant", "content": "Hello, how can I help?"},
        {"role": "user", "content": "Check A-1."},
        {
            "role": "assistant",
            "content": "Checking.",
            "tool_calls": [
                {"id": "call_9", "function": {"name": "lookup_order", "arguments": '{"order_id":"A-1"}'}}
            ],
        },
        {"role": "tool", "tool_call_id": "call_other", "name": "lookup_order", "content": "delivered"},
        {"role": "assistant", "content": "It was delivered."},
    ]

    make_backend(fake_anthropic).generate(tool_prompt(conversation=conversation))

    messages = fake_anthropic.last_body["messages"]
    assert [m["role"] for m in messages] == [
        "user",
        "assistant",
        "user",
        "assistant",
        "user",
        "assistant",
        "user",
    ]
    assert messages[3]["content"] == [
        {"type": "text", "text": "Checking."},
        {"type": "text", "text": 'Called lookup_order with {"order_id":"A-1"} (no result recorded).'},
    ]
    assert messages[4]["content"] == [{"type": "text", "text": "Tool result (lookup_order):\ndelivered"}]
    assert messages[-1]["content"] == [{"type": "text", "text": "Continue with the next step."}]


def test_prompt_text_is_the_request_sent(fake_anthropic: FakeAnthropic) -> None:
    generation = make_backend(fake_anthropic).generate(tool_prompt())

    logged = json.loads(generation.prompt_text)
    for key in ("system", "messages", "tools", "tool_choice"):
        assert logged[key] == fake_anthropic.last_body[key]


@pytest.mark.parametrize("status", [429, 500, 529])
def test_the_client_retries_rate_limits_and_server_errors(fake_anthropic: FakeAnthropic, status: int) -> None:
    fake_anthropic.script(error_answer(status), tool_use_answer("lookup_order", {"order_id": "A-1001"}))

    started = time.perf_counter()
    generation = make_backend(fake_anthropic).generate(tool_prompt())

    assert json.loads(generation.text)["arguments"] == {"order_id": "A-1001"}
    assert len(fake_anthropic.requests) == 2
    # The anthropic client did the retry (it counts them), after its backoff (0.5 s less jitter).
    assert [r.headers["x-stainless-retry-count"] for r in fake_anthropic.requests] == ["0", "1"]
    assert time.perf_counter() - started >= 0.3


def test_persistent_server_errors_fail_after_the_retries(fake_anthropic: FakeAnthropic) -> None:
    # retry-after-ms keeps the client's waits short; the real API's 5xx have no such header.
    fake_anthropic.script(*[error_answer(500, retry_after=None, retry_after_ms="10")] * 4)

    with pytest.raises(BackendError, match="HTTP 500") as excinfo:
        make_backend(fake_anthropic, max_retries=3).generate(tool_prompt())

    assert len(fake_anthropic.requests) == 4
    assert "api_error" in str(excinfo.value)


def test_an_overloaded_api_is_a_backend_error(fake_anthropic: FakeAnthropic) -> None:
    fake_anthropic.script(error_answer(529))

    with pytest.raises(BackendError, match=r"HTTP 529.*overloaded_error"):
        make_backend(fake_anthropic, max_retries=0).generate(tool_prompt())


def test_client_errors_are_not_retried(fake_anthropic: FakeAnthropic) -> None:
    fake_anthropic.script(error_answer(400, retry_after=None))

    with pytest.raises(BackendError, match="HTTP 400"):
        make_backend(fake_anthropic).generate(tool_prompt())

    assert len(fake_anthropic.requests) == 1


def test_a_slow_answer_times_out(fake_anthropic: FakeAnthropic) -> None:
    fake_anthropic.script(slow_answer(2.0))

    with pytest.raises(BackendError, match="timed out"):
        make_backend(fake_anthropic, timeout_s=0.2, max_retries=0).generate(tool_prompt())


def test_a_timed_out_call_is_retried(fake_anthropic: FakeAnthropic) -> None:
    fake_anthropic.script(slow_answer(2.0), tool_use_answer("escalate", {}))

    generation = make_backend(fake_anthropic, timeout_s=0.3, max_retries=1).generate(tool_prompt())

    assert generation.text == '{"name":"escalate","arguments":{}}'
    assert len(fake_anthropic.requests) == 2


def test_an_answer_without_a_tool_call_is_a_backend_error(fake_anthropic: FakeAnthropic) -> None:
    fake_anthropic.script(text_answer("I would look the order up."))

    with pytest.raises(BackendError, match="without a tool call"):
        make_backend(fake_anthropic).generate(tool_prompt())


def test_an_answer_calling_the_wrong_tool_is_a_backend_error(fake_anthropic: FakeAnthropic) -> None:
    fake_anthropic.script(tool_use_answer("lookup_order", {"order_id": "A-1"}))

    with pytest.raises(BackendError, match="'answer' tool"):
        make_backend(fake_anthropic).generate(
            tool_prompt(task_type="respond", output_schema={"type": "object"})
        )


def test_a_cut_off_answer_is_a_backend_error(fake_anthropic: FakeAnthropic) -> None:
    fake_anthropic.script(tool_uses_answer([("lookup_order", {})], stop_reason="max_tokens"))

    with pytest.raises(BackendError, match="max_tokens"):
        make_backend(fake_anthropic).generate(tool_prompt())


def test_an_unreachable_api_is_a_backend_error() -> None:
    with socket.socket() as sock:  # a port that was free a moment ago: nothing listens there
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    backend = AnthropicBackend(
        model="claude-test", api_key="sk", base_url=f"http://127.0.0.1:{port}", timeout_s=1, max_retries=0
    )

    with pytest.raises(BackendError, match="could not reach"):
        backend.generate(tool_prompt())


def _claude_spec(**overrides: Any) -> ModelSpec:
    fields: dict[str, Any] = {
        "name": "claude",
        "backend": ModelSpec.Backend.ANTHROPIC,
        "model_path": "claude-sonnet-test-1",
        "tier": Tier.LLM,
    }
    fields.update(overrides)
    return ModelSpec(**fields)  # never saved: the registry needs no database


def test_the_registry_calls_the_spec_model_with_the_settings_key(
    fake_anthropic: FakeAnthropic, settings: Any
) -> None:
    settings.ANTHROPIC_API_KEY = "sk-ant-from-env"
    settings.LLM_TIMEOUT_S = 2
    backend = get_backend(_claude_spec(base_url=fake_anthropic.base_url))

    assert isinstance(backend, AnthropicBackend)
    assert backend.timeout_s == 2
    backend.generate(tool_prompt())
    assert fake_anthropic.last_body["model"] == "claude-sonnet-test-1"
    assert api_key_sent(fake_anthropic.requests[0].headers) == "sk-ant-from-env"


def test_the_registry_reads_the_base_url_from_the_settings(
    fake_anthropic: FakeAnthropic, settings: Any
) -> None:
    settings.ANTHROPIC_API_KEY = "sk-ant-from-env"
    settings.ANTHROPIC_BASE_URL = fake_anthropic.base_url

    get_backend(_claude_spec()).generate(tool_prompt())

    assert len(fake_anthropic.requests) == 1


def test_the_registry_refuses_without_an_api_key(settings: Any) -> None:
    settings.ANTHROPIC_API_KEY = ""

    with pytest.raises(BackendError, match="ANTHROPIC_API_KEY is not set"):
        get_backend(_claude_spec())
