"""A deterministic stand-in for a local model, for tests and for quick demos.

It reads the conversation the way a careful but literal model would: it picks the tool whose
name shares the most words with the last user or tool message, and fills each argument with a
``name=value`` or ``"name": value`` it finds in the conversation. Tests that need a specific
answer (an invalid one, say) queue it in ``FakeBackend.scripted_outputs``.
"""

from __future__ import annotations

import json
import re
import time
from collections import deque
from typing import Any, ClassVar

from router.backends.base import Generation, Prompt
from router.contracts import TaskType
from router.messages import approx_tokens, content_text


def _text_of(message: dict[str, Any]) -> str:
    return content_text(message.get("content"))


def _words(text: str) -> set[str]:
    return set(re.findall(r"[a-z0-9]+", text.lower()))


def _find_value(name: str, conversation_text: str, schema: dict[str, Any]) -> Any:
    pattern = rf'"?{re.escape(name)}"?\s*[:=]\s*("([^"]*)"|[^\s,;]+)'
    match = re.search(pattern, conversation_text)
    raw = None
    if match:
        raw = match.group(2) if match.group(2) is not None else match.group(1)
    kind = schema.get("type")
    if kind == "array":
        return [item.strip() for item in raw.split("|")] if raw else []
    if kind in ("number", "integer"):
        try:
            number = float(raw)  # type: ignore[arg-type]
            return int(number) if kind == "integer" or "." not in str(raw) else number
        except (TypeError, ValueError):
            return 0
    if kind == "boolean":
        return raw in ("true", "True", "1")
    if raw is None and "enum" in schema:
        return schema["enum"][0]
    return raw if raw is not None else "unknown"


class FakeBackend:
    scripted_outputs: ClassVar[deque[str]] = deque()

    def __init__(self, name: str = "fake", *, delay_ms: float = 0) -> None:
        self.name = name
        self.delay_ms = delay_ms

    def generate(self, prompt: Prompt) -> Generation:
        started = time.perf_counter()
        if self.delay_ms:
            time.sleep(self.delay_ms / 1000)  # stands in for a slow model (crash tests, benchmarks)
        if self.scripted_outputs:
            text = self.scripted_outputs.popleft()
        else:
            text = json.dumps(self._answer(prompt), separators=(",", ":"))
        prompt_text = prompt.system + json.dumps(prompt.conversation) + prompt.feedback
        return Generation(
            text=text,
            tokens_in=max(1, approx_tokens(prompt_text)),
            tokens_out=max(1, approx_tokens(text)),
            latency_ms=(time.perf_counter() - started) * 1000,
            decision_logprobs=[-0.01],
            prompt_text=prompt_text,
        )

    def _answer(self, prompt: Prompt) -> dict[str, Any]:
        conversation_text = "\n".join(_text_of(m) for m in prompt.conversation)
        last = next(
            (m for m in reversed(prompt.conversation) if m.get("role") in ("user", "tool")),
            {"content": ""},
        )
        last_words = _words(_text_of(last))
        schema = prompt.output_schema
        if prompt.task_type == TaskType.TOOL_USE:
            if prompt.may_reply and prompt.conversation and prompt.conversation[-1].get("role") == "tool":
                # A literal model that may reply does so once a tool has answered.
                return {"content": "Here is what I found: " + _text_of(prompt.conversation[-1])[:200]}
            # An answer that may be a reply has the reply's schema beside the calls': drop it.
            calls = [s for s in schema.get("anyOf", [schema]) if "content" not in s.get("properties", {})]
            if prompt.parallel_tool_calls:
                items = calls[0]["properties"]["calls"]["items"]
                return {"calls": [self._tool_call(items, last_words, conversation_text)]}
            return self._tool_call({"anyOf": calls}, last_words, conversation_text)
        if prompt.task_type == TaskType.ADJUDICATION:
            return {"verdict": "unsure", "reason": "the fake adjudicator has no opinion"}
        if prompt.task_type == TaskType.CLASSIFICATION:
            labels = schema["properties"]["label"]["enum"]
            # max() keeps the first label on ties: deterministic.
            return {"label": max(labels, key=lambda label: len(_words(label.replace("_", " ")) & last_words))}
        if prompt.task_type == TaskType.EXTRACTION and schema.get("type") == "object":
            return {
                key: _find_value(key, conversation_text, sub)
                for key, sub in schema.get("properties", {}).items()
                if key in schema.get("required", [])
            }
        return {"content": "Thanks for your message; an agent will follow up shortly."}

    @staticmethod
    def _tool_call(schema: dict[str, Any], last_words: set[str], conversation_text: str) -> dict[str, Any]:
        alternatives = schema.get("anyOf", [schema])

        def overlap(alternative: dict[str, Any]) -> int:
            name = alternative["properties"]["name"]["const"]
            return len(_words(name.replace("_", " ")) & last_words)

        chosen = max(alternatives, key=overlap)  # max() keeps the first on ties: deterministic
        params = chosen["properties"]["arguments"]
        arguments = {
            key: _find_value(key, conversation_text, sub)
            for key, sub in params.get("properties", {}).items()
            if key in params.get("required", [])
        }
        return {"name": chosen["properties"]["name"]["const"], "arguments": arguments}
