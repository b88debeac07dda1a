"""OpenAI assistant messages and reviewq actions, both ways, and how two answers compare.

An agent's own LLM speaks in OpenAI assistant messages (``tool_calls`` with JSON-encoded
arguments, or ``content``); reviewq's actions are ``{"type": "tool_calls", "tool_calls": [{"id",
"name", "arguments"}]}`` or ``{"type": "respond", "content"}``. The drop-in endpoint, a
``proposed_action``, observe mode and imported logs all cross between the two here.
"""

from __future__ import annotations

import json
from typing import Any

from router.answers import new_action_id, new_call_id
from router.contracts import Agreement
from router.messages import call_arguments, compact_json, content_text


def action_from_message(message: dict[str, Any]) -> dict[str, Any]:
    """The reviewq action an OpenAI assistant message stands for; the agent's call ids are kept,
    since its tool results will answer them."""
    calls = message.get("tool_calls") or []
    if calls:
        return {
            "id": new_action_id(),
            "type": "tool_calls",
            "tool_calls": [
                {
                    "id": str(call.get("id") or new_call_id()),
                    "name": str((call.get("function") or {}).get("name") or ""),
                    "arguments": call_arguments((call.get("function") or {}).get("arguments")),
                }
                for call in calls
            ],
        }
    return {"id": new_action_id(), "type": "respond", "content": content_text(message.get("content"))}


def answer_text(action: dict[str, Any]) -> str:
    """The action as the JSON answer a model would give, for the validator chain."""
    if action.get("type") != "tool_calls":
        return compact_json({"content": action.get("content", "")})
    calls = [{"name": call["name"], "arguments": call["arguments"]} for call in action["tool_calls"]]
    return compact_json(calls[0] if len(calls) == 1 else {"calls": calls})


def message_from_action(action: dict[str, Any]) -> dict[str, Any]:
    """The OpenAI assistant message that releases ``action`` (tool calls, or a reply's text)."""
    if action.get("type") == "tool_calls":
        return {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": call["id"],
                    "type": "function",
                    "function": {"name": call["name"], "arguments": json.dumps(call["arguments"])},
                }
                for call in action["tool_calls"]
            ],
        }
    if action.get("type") == "respond":
        return {"role": "assistant", "content": action["content"]}
    # An extraction or a label: its JSON is the reply's text.
    data = action.get("data") if action.get("type") == "json" else {"label": action.get("label")}
    return {"role": "assistant", "content": compact_json(data)}


def action_of_answer(parsed: Any) -> dict[str, Any] | None:
    """A model's parsed JSON answer (``{"name", "arguments"}``, a plan or a reply) as an action."""
    if not isinstance(parsed, dict):
        return None
    if "calls" in parsed and isinstance(parsed["calls"], list):
        calls = [call for call in parsed["calls"] if isinstance(call, dict)]
    elif "name" in parsed:
        calls = [parsed]
    elif isinstance(parsed.get("content"), str):
        return {"type": "respond", "content": parsed["content"]}
    else:
        return {"type": "json", "data": parsed}
    return {
        "type": "tool_calls",
        "tool_calls": [{"name": call.get("name"), "arguments": call.get("arguments")} for call in calls],
    }


def first_tool_name(action: dict[str, Any] | None) -> str:
    calls = (action or {}).get("tool_calls") or []
    return str(calls[0]["name"]) if calls else ""


def compare_answers(reference: dict[str, Any], candidate: dict[str, Any] | None) -> Agreement:
    """How ``candidate`` (the small model's action) compares with ``reference`` (the upstream
    LLM's): the same calls in the same order with equal arguments, or both a reply, agree."""
    if candidate is None:
        return Agreement.NO_ANSWER
    ours, theirs = reference.get("tool_calls") or [], candidate.get("tool_calls") or []
    if not ours and not theirs:
        return Agreement.AGREES if reference.get("type") == candidate.get("type") else Agreement.OTHER_TOOL
    if [call["name"] for call in ours] != [call["name"] for call in theirs]:
        return Agreement.OTHER_TOOL
    same = all(
        _canonical(a["arguments"]) == _canonical(b["arguments"]) for a, b in zip(ours, theirs, strict=True)
    )
    return Agreement.AGREES if same else Agreement.OTHER_ARGUMENTS


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))
