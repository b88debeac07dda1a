"""A small fake OpenAI-compatible server (llama-server / vLLM): POST /v1/chat/completions.

Same machinery as ``tests/fake_anthropic.py``: requests are recorded, answers come from a
script, and by default the answer is ``{"content":"ok"}`` with no log-probabilities. Test
modules import the fixture with ``from tests.fake_openai import fake_openai_fixture``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.fake_anthropic import Scripted, ScriptedServer, error_answer, slow_answer

__all__ = [
    "FakeOpenAI",
    "chat_answer",
    "error_answer",
    "fake_openai_fixture",
    "slow_answer",
    "tool_call_answer",
    "tool_call_completion",
]


def chat_answer(
    content: str | None,
    *,
    logprobs: list[tuple[str, float]] | None = None,
    prompt_tokens: int | None = 120,
    completion_tokens: int | None = 9,
) -> Scripted:
    """A chat completion whose message is ``content``, with (token, logprob) pairs if given."""
    choice: dict[str, Any] = {
        "index": 0,
        "message": {"role": "assistant", "content": content},
        "finish_reason": "stop",
    }
    if logprobs is not None:
        choice["logprobs"] = {
            "content": [
                {"token": token, "logprob": logprob, "top_logprobs": []} for token, logprob in logprobs
            ]
        }
    body: dict[str, Any] = {"id": "chatcmpl-fake", "object": "chat.completion", "choices": [choice]}
    if prompt_tokens is not None and completion_tokens is not None:
        body["usage"] = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }
    return Scripted(body=body)


def tool_call_completion(
    name: str, arguments: dict[str, Any], *, call_id: str = "call_up_1"
) -> dict[str, Any]:
    """A chat completion whose message calls ``name`` (an upstream LLM's tool call)."""
    call = {"id": call_id, "type": "function", "function": {"name": name, "arguments": json.dumps(arguments)}}
    return {
        "id": "chatcmpl-upstream",
        "object": "chat.completion",
        "created": 1,
        "model": "gpt-team",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": None, "tool_calls": [call]},
                "finish_reason": "tool_calls",
            }
        ],
        "usage": {"prompt_tokens": 812, "completion_tokens": 31, "total_tokens": 843},
    }


def tool_call_answer(name: str, **arguments: Any) -> Scripted:
    return Scripted(body=tool_call_completion(name, arguments))


class FakeOpenAI(ScriptedServer):
    """POST /v1/chat/completions, answered from the script or with ``{"content":"ok"}``."""

    path = "/v1/chat/completions"

    def default_body(self, request: dict[str, Any]) -> dict[str, Any]:
        return chat_answer('{"content":"ok"}').body or {}


@pytest.fixture(name="fake_openai")
def fake_openai_fixture() -> Iterator[FakeOpenAI]:
    server = FakeOpenAI().start()
    try:
        yield server
    finally:
        server.stop()
