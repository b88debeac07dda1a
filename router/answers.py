"""A model's answer back into an action, through the one validator chain every tier shares."""

from __future__ import annotations

import uuid
from typing import Any

import yaml

from router.contracts import TaskType
from router.prompts import MAX_PLAN_CALLS, TaskSpec
from router.validators import (
    ValidationIssue,
    parse_json_answer,
    schema_issues,
    validate_grounding,
    validate_not_repeated,
    validate_tool_call,
)


def new_action_id() -> str:
    return "act_" + uuid.uuid4().hex


def new_call_id() -> str:
    return "call_" + uuid.uuid4().hex[:24]


def tool_calls_action(calls: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "id": new_action_id(),
        "type": "tool_calls",
        "tool_calls": [
            {"id": new_call_id(), "name": call["name"], "arguments": call.get("arguments", {})}
            for call in calls
        ],
    }


def parse_answer(
    task: TaskSpec, text: str, *, confidence: float | None = None, feedback: str = ""
) -> tuple[Any, dict[str, Any] | None, list[ValidationIssue]]:
    """(parsed JSON, action or None, validation issues) for a model's answer.

    Every tier's answer goes through this same validator chain. ``feedback`` is the text reviewq
    added to the prompt (earlier errors): a value copied from it is not grounded.
    """
    parsed, issues = parse_json_answer(text)
    if issues:
        return None, None, issues
    if task.task_type == TaskType.TOOL_USE:
        return parsed, *_tool_calls(task, parsed, feedback)
    if task.task_type == TaskType.EXTRACTION:
        issues = schema_issues(parsed, task.response_schema or {}, "$")
        if not issues:
            issues = validate_grounding(parsed, task.messages, added_text=feedback)
        if issues:
            return parsed, None, issues
        action: dict[str, Any] = {"id": new_action_id(), "type": "json", "data": parsed}
        if task.output_format == "yaml":
            action["yaml"] = yaml.safe_dump(parsed, sort_keys=False, allow_unicode=True)
        return parsed, action, []
    if task.task_type == TaskType.CLASSIFICATION:
        label = parsed.get("label") if isinstance(parsed, dict) else None
        if label not in (task.labels or []):
            return parsed, None, [ValidationIssue("schema", "$.label", f"{label!r} is not one of the labels")]
        score = 1.0 if confidence is None else round(confidence, 4)
        return parsed, {"id": new_action_id(), "type": "label", "label": label, "score": score}, []
    return parsed, *_reply(parsed)


def _reply(parsed: Any) -> tuple[dict[str, Any] | None, list[ValidationIssue]]:
    if (
        not isinstance(parsed, dict)
        or not isinstance(parsed.get("content"), str)
        or not parsed["content"].strip()
    ):
        return None, [ValidationIssue("schema", "$.content", "a reply needs non-empty text content")]
    return {"id": new_action_id(), "type": "respond", "content": parsed["content"]}, []


def _tool_calls(
    task: TaskSpec, parsed: Any, feedback: str
) -> tuple[dict[str, Any] | None, list[ValidationIssue]]:
    if task.may_reply and isinstance(parsed, dict) and "content" in parsed and "name" not in parsed:
        return _reply(parsed)
    if isinstance(parsed, dict) and "calls" in parsed and "name" not in parsed:
        calls = parsed["calls"]
        if not isinstance(calls, list) or not calls:
            return None, [ValidationIssue("schema", "$.calls", "a plan needs at least one call")]
        if len(calls) > MAX_PLAN_CALLS:
            return None, [
                ValidationIssue("schema", "$.calls", f"a plan holds at most {MAX_PLAN_CALLS} calls")
            ]
    else:
        calls = [parsed]
    issues = []
    for index, call in enumerate(calls):
        checked = validate_tool_call(
            call, task.tools, conversation=task.messages, rules=task.rules, added_text=feedback
        )
        if not checked and task.may_reply:
            checked = validate_not_repeated(call, task.messages)
        for issue in checked:
            prefix = f"$.calls[{index}]" if len(calls) > 1 else "$"
            issues.append(ValidationIssue(issue.validator, prefix + issue.path[1:], issue.message))
    if issues:
        return None, issues
    return tool_calls_action(calls), []
