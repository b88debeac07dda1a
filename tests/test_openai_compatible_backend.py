"""The OpenAI-compatible backend (llama-server, vLLM) against a fake chat-completions server."""

from __future__ import annotations

import json
import socket
from typing import Any

import pytest

from router.backends.base import BackendError, Prompt
from router.backends.openai_compatible import OpenAICompatibleBackend, chat_completions_url
from router.backends.registry import get_backend
from router.contracts import Tier
from router.models import ModelSpec
from router.schemas import tool_choice_schema
from tests.fake_anthropic import Scripted
from tests.fake_openai import (
    FakeOpenAI,
    chat_answer,
    error_answer,
    fake_openai_fixture,  # noqa: F401 (registers the fake_openai fixture)
    slow_answer,
)

TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "function": {
            "name": "lookup_order",
            "parameters": {
                "type": "object",
                "properties": {"order_id": {"type": "string"}},
                "required": ["order_id"],
            },
        },
    }
]


def tool_prompt(**overrides: Any) -> Prompt:
    fields: dict[str, Any] = {
        "system": "You pick the next tool call.",
        "conversation": [{"role": "user", "content": "Where is order A-1001?"}],
        "output_schema": tool_choice_schema(TOOLS),
        "max_tokens": 96,
    }
    fields.update(overrides)
    return Prompt(**fields)


def make_backend(server: FakeOpenAI, **overrides: Any) -> OpenAICompatibleBackend:
    fields: dict[str, Any] = {"base_url": server.base_url, "model": "smollm2-135m", "timeout_s": 2.0}
    fields.update(overrides)
    return OpenAICompatibleBackend(**fields)


def test_it_posts_a_schema_constrained_greedy_request(fake_openai: FakeOpenAI) -> None:
    prompt = tool_prompt()

    make_backend(fake_openai).generate(prompt)

    request = fake_openai.requests[0]
    assert request.path == "/v1/chat/completions"
    assert "authorization" not in request.headers  # no key configured, none sent
    assert request.body == {
        "model": "smollm2-135m",
        "messages": [
            {"role": "system", "content": "You pick the next tool call."},
            {"role": "user", "content": "Where is order A-1001?"},
        ],
        "temperature": 0,
        "max_tokens": 96,
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "answer", "schema": prompt.output_schema, "strict": True},
        },
        "logprobs": True,
    }


@pytest.mark.parametrize("suffix", ["", "/", "/v1", "/v1/"])
def test_the_base_url_may_end_in_v1(fake_openai: FakeOpenAI, suffix: str) -> None:
    make_backend(fake_openai, base_url=fake_openai.base_url + suffix).generate(tool_prompt())

    assert fake_openai.requests[0].path == "/v1/chat/completions"


def test_chat_completions_url() -> None:
    assert chat_completions_url("http://vllm:8000") == "http://vllm:8000/v1/chat/completions"
    assert chat_completions_url("http://vllm:8000/v1/") == "http://vllm:8000/v1/chat/completions"


def test_the_api_key_is_sent_as_a_bearer_token(fake_openai: FakeOpenAI) -> None:
    make_backend(fake_openai, api_key="sk-local").generate(tool_prompt())

    assert fake_openai.requests[0].headers["authorization"] == "Bearer sk-local"


def test_the_answer_usage_and_decision_logprobs(fake_openai: FakeOpenAI) -> None:
    tokens = [
        ('{"', -0.0),
        ("name", -0.0),
        ('":"', -0.0),
        ("lookup", -0.2),
        ("_order", -0.1),
        ('","', -0.0),
        ("arguments", -0.0),
        ('":{"', -0.0),
        ("order", -0.0),
        ("_id", -0.0),
        ('":"', -0.0),
        ("A-1001", -0.7),
        ('"}}', -0.01),
    ]
    text = "".join(token for token, _ in tokens)
    fake_openai.script(chat_answer(text, logprobs=tokens, prompt_tokens=210, completion_tokens=13))

    generation = make_backend(fake_openai).generate(tool_prompt())

    assert generation.text == '{"name":"lookup_order","arguments":{"order_id":"A-1001"}}'
    assert (generation.tokens_in, generation.tokens_out) == (210, 13)
    # The tool name and the argument value carry choices; keys and punctuation are forced.
    assert generation.decision_logprobs == [-0.2, -0.1, -0.7]
    assert json.loads(generation.prompt_text)[0] == {
        "role": "system",
        "content": "You pick the next tool call.",
    }
    assert generation.latency_ms > 0


def test_without_logprobs_there_are_none(fake_openai: FakeOpenAI) -> None:
    fake_openai.script(chat_answer('{"content":"hi"}'))

    assert make_backend(fake_openai).generate(tool_prompt()).decision_logprobs == []


def test_tokens_that_do_not_spell_the_text_keep_every_logprob(fake_openai: FakeOpenAI) -> None:
    fake_openai.script(
        chat_answer('{"content":"é"}', logprobs=[('{"content":"', -0.1), ("\\xc3\\xa9", -0.5)])
    )

    assert make_backend(fake_openai).generate(tool_prompt()).decision_logprobs == [-0.1, -0.5]


def test_without_usage_tokens_are_estimated(fake_openai: FakeOpenAI) -> None:
    fake_openai.script(chat_answer('{"content":"hi"}', prompt_tokens=None, completion_tokens=None))

    generation = make_backend(fake_openai).generate(tool_prompt())

    assert generation.tokens_in > 0
    assert generation.tokens_out > 0


def test_the_conversation_is_rendered_as_text_turns(fake_openai: FakeOpenAI) -> None:
    conversation = [
        {"role": "user", "content": "Check A-1."},
        {"role": "developer", "content": "Amounts are in EUR."},
        {
            "role": "assistant",
            "content": "Checking.",
            "tool_calls": [
                {"id": "call_1", "function": {"name": "lookup_order", "arguments": '{"order_id": "A-1"}'}}
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "delivered"},
        {"role": "user", "content": [{"type": "text", "text": "Refund it."}]},
    ]

    make_backend(fake_openai).generate(
        tool_prompt(conversation=conversation, feedback="Fix: order_id missing.")
    )

    assert fake_openai.last_body["messages"] == [
        {"role": "system", "content": "You pick the next tool call.\n\nAmounts are in EUR."},
        {"role": "user", "content": "Check A-1."},
        {"role": "assistant", "content": 'Checking.\n{"name":"lookup_order","arguments":{"order_id":"A-1"}}'},
        {
            "role": "user",
            "content": "Tool result (lookup_order):\ndelivered\n\nRefund it.\n\nFix: order_id missing.",
        },
    ]


def test_a_server_error_is_a_backend_error(fake_openai: FakeOpenAI) -> None:
    fake_openai.script(error_answer(503))

    with pytest.raises(BackendError, match="HTTP 503"):
        make_backend(fake_openai).generate(tool_prompt())


def test_a_slow_answer_times_out(fake_openai: FakeOpenAI) -> None:
    fake_openai.script(slow_answer(2.0))

    with pytest.raises(BackendError, match="timed out"):
        make_backend(fake_openai, timeout_s=0.2).generate(tool_prompt())


@pytest.mark.parametrize(
    "body",
    [{"choices": []}, {"choices": [{"message": {"role": "assistant", "content": None}}]}, {"error": "x"}],
)
def test_an_unexpected_response_is_a_backend_error(fake_openai: FakeOpenAI, body: dict[str, Any]) -> None:
    fake_openai.script(Scripted(body=body))

    with pytest.raises(BackendError, match="chat-completions"):
        make_backend(fake_openai).generate(tool_prompt())


def test_an_unreachable_server_is_a_backend_error() -> None:
    with socket.socket() as sock:  # a port that was free a moment ago: nothing listens there
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    backend = OpenAICompatibleBackend(base_url=f"http://127.0.0.1:{port}", model="m", timeout_s=1)

    with pytest.raises(BackendError, match="could not reach"):
        backend.generate(tool_prompt())


def test_the_registry_builds_it_from_the_model_spec(fake_openai: FakeOpenAI, settings: Any) -> None:
    settings.REVIEWQ_MODEL_BACKEND = "llama_cpp"  # the suite's autouse fixture fakes every SLM
    spec = ModelSpec(
        name="vllm-qwen",
        backend=ModelSpec.Backend.OPENAI_COMPATIBLE,
        model_path="Qwen/Qwen2.5-0.5B-Instruct",
        base_url=fake_openai.base_url + "/v1",
        tier=Tier.SLM,
    )

    backend = get_backend(spec)

    assert isinstance(backend, OpenAICompatibleBackend)
    backend.generate(tool_prompt())
    assert fake_openai.last_body["model"] == "Qwen/Qwen2.5-0.5B-Instruct"
