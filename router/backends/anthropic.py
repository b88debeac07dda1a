"""Claude through the Anthropic Messages API, always answering by forced tool use.

Forced tool use is Anthropic's equivalent of the local grammar: the model must answer with a
``tool_use`` block whose input follows a JSON schema. For ``tool_use`` prompts those are the
agent's own tools; for every other task type a single synthetic ``answer`` tool carries
``Prompt.output_schema``. Either way the answer is translated back into the JSON text every
backend returns (see ``Prompt``), so the validator chain treats SLM and LLM answers alike.

Retries of 429, 5xx (529 "overloaded" included) and timeouts are left to the ``anthropic``
client, which backs off exponentially and honours ``retry-after``; whatever still fails
becomes a ``BackendError``.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

import anthropic

from router.backends.base import BackendError, Generation, Prompt
from router.contracts import TaskType
from router.messages import chat_turns, compact_json

# The pipeline's Prompt.max_tokens is sized for a small model's terse answers; an LLM writing a
# tool call with long arguments must not be cut off, and unused tokens cost nothing.
MIN_MAX_TOKENS = 1024
ANSWER_TOOL = "answer"
_EMPTY_OBJECT_SCHEMA: dict[str, Any] = {"type": "object", "properties": {}}
_TOOL_ID_CHARS = re.compile(r"[^a-zA-Z0-9_-]")


class AnthropicBackend:
    """One Anthropic model behind a long-lived client (thread-safe, reuses connections)."""

    def __init__(
        self,
        *,
        model: str,
        api_key: str,
        base_url: str | None = None,
        timeout_s: float = 30.0,
        max_retries: int = 3,
    ) -> None:
        self.model = model
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        try:
            self._client = anthropic.Anthropic(
                api_key=api_key, base_url=base_url, timeout=timeout_s, max_retries=max_retries
            )
        except anthropic.AnthropicError as exc:
            raise BackendError(f"could not set up the Anthropic client: {exc}") from exc

    def generate(self, prompt: Prompt) -> Generation:
        request = build_request(prompt, model=self.model)
        prompt_text = json.dumps(request, ensure_ascii=False)
        started = time.perf_counter()
        try:
            message = self._client.messages.create(**request)
        except anthropic.APITimeoutError as exc:
            raise BackendError(
                f"Anthropic API timed out after {self.timeout_s:g} s ({self.max_retries} retries)"
            ) from exc
        except anthropic.APIStatusError as exc:
            raise BackendError(
                f"Anthropic API returned HTTP {exc.status_code}: {_error_message(exc)}"
            ) from exc
        except anthropic.APIConnectionError as exc:
            raise BackendError(f"could not reach the Anthropic API: {exc}") from exc
        except anthropic.AnthropicError as exc:  # anything else the client raises stays inside
            raise BackendError(f"Anthropic API call failed: {exc}") from exc
        latency_ms = (time.perf_counter() - started) * 1000
        text = answer_text(prompt, message)
        usage = message.usage
        return Generation(
            text=text,
            tokens_in=int(usage.input_tokens or 0) if usage else 0,
            tokens_out=int(usage.output_tokens or 0) if usage else 0,
            latency_ms=latency_ms,
            decision_logprobs=[],  # the Messages API gives no token log-probabilities
            prompt_text=prompt_text,
        )


# -- request -------------------------------------------------------------------------------------


def build_request(prompt: Prompt, *, model: str) -> dict[str, Any]:
    """The keyword arguments of ``messages.create`` for ``prompt`` (also what gets logged)."""
    system, messages = translate_conversation(prompt.conversation, system=prompt.system)
    if prompt.feedback:
        messages = _append(messages, "user", [_text_block(prompt.feedback)])
    if not messages or messages[-1]["role"] != "user":
        # A final assistant turn would be read as a prefill to continue, which forced tool use
        # does not allow: ask for the next step explicitly.
        messages = _append(messages, "user", [_text_block("Continue with the next step.")])
    if prompt.task_type == TaskType.TOOL_USE:
        tools = [_anthropic_tool(tool) for tool in prompt.tools or _tools_from_schema(prompt.output_schema)]
        if not tools:
            raise BackendError("a tool_use prompt needs at least one tool")
        tool_choice: dict[str, Any] = {
            # "auto" lets Claude answer in text: a reply instead of a call.
            "type": "auto" if prompt.may_reply else "any",
            "disable_parallel_tool_use": not prompt.parallel_tool_calls,
        }
    else:
        tools = [
            {
                "name": ANSWER_TOOL,
                "description": "Give your final answer by calling this tool; its input is the answer.",
                "input_schema": _answer_schema(prompt.output_schema),
            }
        ]
        tool_choice = {"type": "tool", "name": ANSWER_TOOL}
    return {
        "model": model,
        "max_tokens": max(prompt.max_tokens, MIN_MAX_TOKENS),
        "system": system,
        "messages": messages,
        "tools": tools,
        "tool_choice": tool_choice,
    }


def translate_conversation(
    conversation: list[dict[str, Any]], *, system: str = ""
) -> tuple[str, list[dict[str, Any]]]:
    """An OpenAI chat conversation as (Anthropic system text, Anthropic messages).

    Anthropic has no system, developer or tool roles: system and developer messages join the
    system text, tool results become ``tool_result`` blocks of a user turn. Consecutive turns
    of the same role are merged, since the API wants user and assistant to alternate.
    """
    system_parts = [system] if system else []
    messages: list[dict[str, Any]] = []
    for turn in chat_turns(conversation):
        if turn.role == "system":
            if turn.text:
                system_parts.append(turn.text)
        elif turn.role == "assistant":
            blocks = [_text_block(turn.text)] if turn.text else []
            for call in turn.calls:
                blocks.append(
                    {
                        "type": "tool_use",
                        "id": _tool_id(call.id),
                        "name": call.name,
                        "input": _arguments(call.arguments),
                    }
                )
            messages = _append(messages, "assistant", blocks)
        elif turn.role == "tool":
            block: dict[str, Any] = {"type": "tool_result", "tool_use_id": _tool_id(turn.call_id)}
            if turn.text:
                block["content"] = turn.text
            # Kept aside so that _pair_tool_blocks can fall back to text when the id matches no call.
            block["_name"] = turn.tool_name
            messages = _append(messages, "user", [block])
        else:
            messages = _append(messages, "user", [_text_block(turn.text)] if turn.text else [])
    messages = _pair_tool_blocks([m for m in messages if m["content"]])
    if messages and messages[0]["role"] != "user":
        messages.insert(0, {"role": "user", "content": [_text_block("(The conversation so far follows.)")]})
    return "\n\n".join(system_parts), messages


def _append(messages: list[dict[str, Any]], role: str, blocks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    if messages and messages[-1]["role"] == role:
        messages[-1]["content"].extend(blocks)
    else:
        messages.append({"role": role, "content": list(blocks)})
    return messages


def _pair_tool_blocks(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Make tool_use / tool_result blocks acceptable to the API, or turn them into text.

    The API rejects a ``tool_use`` without a ``tool_result`` in the very next user turn, and a
    ``tool_result`` whose id matches no ``tool_use`` just before it. Agents' transcripts are
    not always that tidy (a call whose result was never sent, a result without an id), so
    unpaired blocks are kept as plain text rather than failing the whole escalation. Tool
    results must also come first in their user turn.
    """
    for index, message in enumerate(messages):
        if message["role"] == "assistant":
            following = messages[index + 1] if index + 1 < len(messages) else None
            answered = {
                block["tool_use_id"]
                for block in (following["content"] if following else [])
                if block["type"] == "tool_result"
            }
            message["content"] = [
                block
                if block["type"] != "tool_use" or (block["id"] and block["id"] in answered)
                else _text_block(
                    f"Called {block['name']} with {compact_json(block['input'])} (no result recorded)."
                )
                for block in message["content"]
            ]
        else:
            previous = messages[index - 1] if index > 0 else None
            called = {
                block["id"]
                for block in (previous["content"] if previous and previous["role"] == "assistant" else [])
                if block["type"] == "tool_use"
            }
            blocks = []
            for block in message["content"]:
                if block["type"] == "tool_result":
                    name = block.pop("_name")
                    if not (block["tool_use_id"] and block["tool_use_id"] in called):
                        block = _text_block(f"Tool result ({name}):\n{block.get('content', '')}")
                blocks.append(block)
            message["content"] = sorted(blocks, key=lambda block: block["type"] != "tool_result")
    return messages


def _anthropic_tool(tool: dict[str, Any]) -> dict[str, Any]:
    function = tool.get("function") or tool
    anthropic_tool: dict[str, Any] = {
        "name": function["name"],
        "input_schema": function.get("parameters") or dict(_EMPTY_OBJECT_SCHEMA),
    }
    if function.get("description"):
        anthropic_tool["description"] = function["description"]
    return anthropic_tool


def _tools_from_schema(output_schema: dict[str, Any]) -> list[dict[str, Any]]:
    """OpenAI tools rebuilt from a ``{"name": {"const"}, "arguments"}`` answer schema.

    Only for prompts built without ``tools``: the answer schema names every allowed tool.
    """
    tools = []
    for alternative in output_schema.get("anyOf", [output_schema]):
        properties = alternative.get("properties") or {}
        name = (properties.get("name") or {}).get("const")
        if isinstance(name, str):
            tools.append(
                {"type": "function", "function": {"name": name, "parameters": properties.get("arguments")}}
            )
    return tools


def _is_object_schema(schema: dict[str, Any]) -> bool:
    return schema.get("type") == "object"


def _answer_schema(output_schema: dict[str, Any]) -> dict[str, Any]:
    # A tool's input is always a JSON object: other answers (a bare string, a union) ride in "value".
    if _is_object_schema(output_schema):
        return output_schema
    return {"type": "object", "properties": {"value": output_schema}, "required": ["value"]}


# -- answer --------------------------------------------------------------------------------------


def answer_text(prompt: Prompt, message: Any) -> str:
    """The backend-neutral JSON answer carried by the response's tool_use block(s)."""
    calls = [block for block in message.content or [] if getattr(block, "type", None) == "tool_use"]
    if message.stop_reason == "max_tokens":
        # A cut-off tool call can still parse, with arguments silently missing.
        raise BackendError(f"Anthropic answer was cut off at max_tokens ({len(calls)} tool_use blocks)")
    if prompt.task_type == TaskType.TOOL_USE:
        if not calls and prompt.may_reply:
            text = "".join(getattr(block, "text", "") for block in message.content or [])
            return compact_json({"content": text.strip()})
        if not calls:
            raise BackendError(f"Anthropic answered without a tool call (stop_reason={message.stop_reason})")
        answers = [{"name": block.name, "arguments": _as_dict(block.input)} for block in calls]
        if prompt.parallel_tool_calls:
            return compact_json({"calls": answers})
        return compact_json(answers[0])
    answer = next((block for block in calls if block.name == ANSWER_TOOL), None)
    if answer is None:
        raise BackendError(
            f"Anthropic answered without calling the {ANSWER_TOOL!r} tool (stop_reason={message.stop_reason})"
        )
    data = _as_dict(answer.input)
    if _is_object_schema(prompt.output_schema):
        return compact_json(data)
    if "value" not in data:
        raise BackendError(f"Anthropic's {ANSWER_TOOL!r} tool input has no 'value'")
    return compact_json(data["value"])


# -- helpers -------------------------------------------------------------------------------------


def _error_message(exc: anthropic.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        error = body["error"]
        return f"{error.get('type', 'error')}: {error.get('message', '')}"
    return exc.message


def _tool_id(raw: Any) -> str:
    # The API only accepts [a-zA-Z0-9_-] in tool_use ids; other agents' ids (for instance
    # "functions.lookup:0") are mapped the same way on the call and on its result.
    return _TOOL_ID_CHARS.sub("_", str(raw or ""))


def _text_block(text: str) -> dict[str, Any]:
    return {"type": "text", "text": text}


def _arguments(arguments: Any) -> dict[str, Any]:
    """A call's decoded arguments (``call_arguments``) as the object a tool_use input must be."""
    if isinstance(arguments, dict):
        return arguments
    if isinstance(arguments, str):  # text that is not JSON: keep what the agent sent visible
        return {"_raw": arguments} if arguments.strip() else {}
    return {"value": arguments}


def _as_dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}
