"""Turns a request into a model prompt, and a model answer back into an action.

Instructions and the tool list come first and in a stable order, so a local model reuses the
KV cache of that prefix across requests with the same tools.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from router.backends.base import Prompt
from router.schemas import DEFAULT_STRING_MAX_LENGTH, tool_choice_schema, tool_function
from router.validators import ValidationIssue, parse_json_answer, validate_tool_call

TOOL_USE = "tool_use"
RESPOND = "respond"

_TOOL_INSTRUCTIONS = (
    "You are the next step of a customer-service agent. Choose the one tool call that moves the "
    "conversation forward and answer with JSON only: "
    '{"name": <tool name>, "arguments": {...}}. Copy identifiers, emails and amounts exactly as '
    "they appear in the conversation; never invent them."
)
_RESPOND_INSTRUCTIONS = (
    'You are a helpful assistant. Answer the user with JSON only: {"content": <your reply>}.'
)
RESPOND_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"content": {"type": "string", "minLength": 1, "maxLength": 4 * DEFAULT_STRING_MAX_LENGTH}},
    "required": ["content"],
    "additionalProperties": False,
}


def task_type_of(request_task_type: str, tools: list[dict[str, Any]]) -> str:
    return request_task_type or (TOOL_USE if tools else RESPOND)


def _tool_catalogue(tools: list[dict[str, Any]]) -> str:
    lines = []
    for tool in tools:
        function = tool_function(tool)
        params = json.dumps(function.get("parameters", {}), separators=(",", ":"), sort_keys=True)
        lines.append(f"- {function['name']}: {function.get('description', '').strip()} Parameters: {params}")
    return "Tools:\n" + "\n".join(lines)


def build_prompt(
    task_type: str, *, messages: list[dict[str, Any]], tools: list[dict[str, Any]], feedback: str = ""
) -> Prompt:
    if task_type == TOOL_USE:
        return Prompt(
            system=f"{_TOOL_INSTRUCTIONS}\n{_tool_catalogue(tools)}",
            conversation=messages,
            output_schema=tool_choice_schema(tools),
            feedback=feedback,
        )
    return Prompt(
        system=_RESPOND_INSTRUCTIONS, conversation=messages, output_schema=RESPOND_SCHEMA, feedback=feedback
    )


def estimate_tokens(prompt: Prompt) -> int:
    """A cheap upper-bound guess (about 3.5 characters per token) for routing by context size."""
    size = len(prompt.system) + len(json.dumps(prompt.conversation)) + len(prompt.feedback)
    return int(size / 3.5) + prompt.max_tokens


def new_action_id() -> str:
    return "act_" + uuid.uuid4().hex


def new_call_id() -> str:
    return "call_" + uuid.uuid4().hex[:24]


def parse_answer(
    task_type: str, text: str, *, tools: list[dict[str, Any]]
) -> tuple[Any, dict[str, Any] | None, list[ValidationIssue]]:
    """(parsed JSON, action or None, validation issues) for a model's answer."""
    parsed, issues = parse_json_answer(text)
    if issues:
        return None, None, issues
    if task_type == TOOL_USE:
        issues = validate_tool_call(parsed, tools)
        if issues:
            return parsed, None, issues
        action = {
            "id": new_action_id(),
            "type": "tool_calls",
            "tool_calls": [
                {"id": new_call_id(), "name": parsed["name"], "arguments": parsed.get("arguments", {})}
            ],
        }
        return parsed, action, []
    if (
        not isinstance(parsed, dict)
        or not isinstance(parsed.get("content"), str)
        or not parsed["content"].strip()
    ):
        return parsed, None, [ValidationIssue("schema", "$.content", "a reply needs non-empty text content")]
    return parsed, {"id": new_action_id(), "type": "respond", "content": parsed["content"]}, []
