"""A model served over the OpenAI chat-completions API by llama-server or vLLM.

Both servers constrain the answer to ``response_format``'s JSON schema with a grammar, like the
in-process llama.cpp backend, so the answer is the same compact JSON. The conversation is
rendered as plain chat turns the way the local backend does (tool calls as JSON lines, tool
results as labelled user turns): small models were rarely trained on a tool role, and chat
templates differ in what they accept.
"""

from __future__ import annotations

import json
import time
from typing import Any

import httpx2

from router.backends.base import BackendError, Generation, Prompt
from router.backends.decision_tokens import server_token_logprobs
from router.messages import approx_tokens, chat_turns


class OpenAICompatibleBackend:
    """One model on an OpenAI-compatible server, behind a long-lived (thread-safe) HTTP client."""

    def __init__(self, *, base_url: str, model: str, api_key: str = "", timeout_s: float = 30.0) -> None:
        if not base_url:
            raise BackendError(f"model {model!r} needs a base_url for its OpenAI-compatible server")
        self.url = chat_completions_url(base_url)
        self.model = model
        self.timeout_s = timeout_s
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx2.Client(timeout=timeout_s, headers=headers)

    def generate(self, prompt: Prompt) -> Generation:
        payload = {
            "model": self.model,
            "messages": render_messages(prompt),
            "temperature": 0,
            "max_tokens": prompt.max_tokens,
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "answer", "schema": prompt.output_schema, "strict": True},
            },
            "logprobs": True,
        }
        prompt_text = json.dumps(payload["messages"], ensure_ascii=False)
        started = time.perf_counter()
        try:
            response = self._client.post(self.url, json=payload)
        except httpx2.TimeoutException as exc:
            raise BackendError(f"{self.url} timed out after {self.timeout_s:g} s") from exc
        except httpx2.HTTPError as exc:
            raise BackendError(f"could not reach {self.url}: {exc}") from exc
        latency_ms = (time.perf_counter() - started) * 1000
        if not response.is_success:
            raise BackendError(f"{self.url} returned HTTP {response.status_code}: {response.text[:300]}")
        text, tokens_in, tokens_out, logprobs = _parse_response(response)
        return Generation(
            text=text,
            # Without usage figures, a rough guess keeps costs honest.
            tokens_in=tokens_in if tokens_in is not None else max(1, approx_tokens(prompt_text)),
            tokens_out=tokens_out if tokens_out is not None else max(1, approx_tokens(text)),
            latency_ms=latency_ms,
            decision_logprobs=logprobs,
            prompt_text=prompt_text,
        )

    def close(self) -> None:
        self._client.close()


def chat_completions_url(base_url: str) -> str:
    """``{base_url}/v1/chat/completions``, whether or not ``base_url`` already ends in /v1."""
    base = base_url.rstrip("/")
    if not base.endswith("/v1"):
        base += "/v1"
    return base + "/chat/completions"


def render_messages(prompt: Prompt) -> list[dict[str, str]]:
    """System, then the conversation as user/assistant text turns, then the feedback.

    System and developer messages of the conversation join the system message (many chat
    templates reject a system turn anywhere else); it still starts with ``Prompt.system``, so
    the server's prompt cache keeps that prefix. Consecutive turns of one role are merged, since
    some templates insist that user and assistant alternate.
    """
    system_parts = [prompt.system] if prompt.system else []
    turns: list[dict[str, str]] = []

    def add(role: str, text: str) -> None:
        if not text:
            return
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"] += "\n\n" + text
        else:
            turns.append({"role": role, "content": text})

    for turn in chat_turns(prompt.conversation):
        if turn.role == "system":
            if turn.text:
                system_parts.append(turn.text)
        else:
            add(turn.text_role, turn.as_text())
    add("user", prompt.feedback)
    return [{"role": "system", "content": "\n\n".join(system_parts)}, *turns]


def _parse_response(response: httpx2.Response) -> tuple[str, int | None, int | None, list[float]]:
    try:
        data = response.json()
        choice = data["choices"][0]
        text = choice["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise BackendError(f"unexpected chat-completions response: {response.text[:300]}") from exc
    if not isinstance(text, str):
        raise BackendError(f"chat-completions answer has no text content: {response.text[:300]}")
    usage = _dict(data.get("usage"))
    # llama-server and vLLM put token log-probabilities here when asked; others leave it out.
    entries = _dict(choice.get("logprobs")).get("content")
    if not isinstance(entries, list):
        entries = []
    return (
        text,
        _int_or_none(usage.get("prompt_tokens")),
        _int_or_none(usage.get("completion_tokens")),
        server_token_logprobs(text, entries),
    )


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _int_or_none(value: Any) -> int | None:
    return int(value) if isinstance(value, int | float) else None
