"""Turns a request into a model prompt, and a model answer back into an action.

Instructions and the tool list come first and in a stable order, so a local model reuses the
KV cache of that prefix across requests with the same tools.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any

import yaml
from jsonschema import Draft202012Validator

from router.backends.base import Prompt
from router.schemas import DEFAULT_STRING_MAX_LENGTH, bounded, plan_schema, tool_choice_schema, tool_function
from router.validators import (
    ValidationIssue,
    parse_json_answer,
    schema_issues,
    validate_grounding,
    validate_tool_call,
)

TOOL_USE = "tool_use"
EXTRACTION = "extraction"
CLASSIFICATION = "classification"
RESPOND = "respond"
TASK_TYPES = (TOOL_USE, EXTRACTION, CLASSIFICATION, RESPOND)
MAX_PLAN_CALLS = 5

_TOOL_INSTRUCTIONS = (
    "You are the next step of a customer-service agent. Choose the one tool call that moves the "
    "conversation forward and answer with JSON only: "
    '{"name": <tool name>, "arguments": {...}}. Copy identifiers, emails and amounts exactly as '
    "they appear in the conversation; never invent them."
)
_PLAN_INSTRUCTIONS = (
    "You are the next step of a customer-service agent. Choose the tool calls, in order, that move "
    'the conversation forward and answer with JSON only: {"calls": [{"name": <tool name>, '
    '"arguments": {...}}, ...]}. Copy identifiers, emails and amounts exactly as they appear in the '
    "conversation; never invent them."
)
_EXTRACTION_INSTRUCTIONS = (
    "Extract the requested fields from the conversation and answer with JSON only, matching this "
    "JSON Schema. Copy values exactly as they appear; use null where the schema allows it and the "
    "conversation does not say.\nSchema: "
)
_CLASSIFICATION_INSTRUCTIONS = (
    'Classify the conversation\'s last message. Answer with JSON only: {"label": <one of the labels>}.'
    "\nLabels: "
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


@dataclass(frozen=True)
class TaskSpec:
    """What a request asks of a model, independent of which model answers."""

    task_type: str
    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]] = field(default_factory=list)
    response_schema: dict[str, Any] | None = None
    labels: list[str] | None = None
    parallel_tool_calls: bool = False
    output_format: str = "json"
    rules: dict[str, list[dict[str, str]]] = field(default_factory=dict)
    # Replaces the task type's standard instructions (the intent check uses it).
    instructions: str = ""
    task_type_reason: str = ""


# The intent check: does any tool fit, or should the request climb the ladder?
INTENT_USE_TOOL = "use_a_tool"
INTENT_OUT_OF_SCOPE = "out_of_scope"


def intent_task(task: TaskSpec) -> TaskSpec:
    """A classification asking whether one of the task's tools fits the last message."""
    names = ", ".join(tool_function(tool)["name"] for tool in task.tools)
    instructions = (
        "Decide whether the customer's last message can be handled with one of these tools: "
        f"{names}. Answer with JSON only: "
        f'{{"label": "{INTENT_USE_TOOL}"}} if a tool fits, {{"label": "{INTENT_OUT_OF_SCOPE}"}} if none does.'
    )
    return TaskSpec(
        task_type=CLASSIFICATION,
        messages=task.messages,
        labels=[INTENT_USE_TOOL, INTENT_OUT_OF_SCOPE],
        instructions=instructions,
    )


def task_type_of(*, hint: str, tools: list[Any], response_schema: Any, labels: Any) -> tuple[str, str]:
    """The task type from the agent's hint or the request's shape, and why."""
    if hint:
        return hint, f"the agent asked for {hint!r}"
    if response_schema is not None:
        return EXTRACTION, "a response_schema was given"
    if labels:
        return CLASSIFICATION, "labels were given"
    if tools:
        return TOOL_USE, "tools were given"
    return RESPOND, "no tools, schema or labels: a text reply"


def _tool_catalogue(tools: list[dict[str, Any]]) -> str:
    lines = []
    for tool in tools:
        function = tool_function(tool)
        params = json.dumps(function.get("parameters", {}), separators=(",", ":"), sort_keys=True)
        lines.append(f"- {function['name']}: {function.get('description', '').strip()} Parameters: {params}")
    return "Tools:\n" + "\n".join(lines)


def output_schema(task: TaskSpec) -> dict[str, Any]:
    """The JSON Schema a model's answer must match (and the grammar local models decode under)."""
    if task.task_type == TOOL_USE:
        return (
            plan_schema(task.tools, MAX_PLAN_CALLS)
            if task.parallel_tool_calls
            else tool_choice_schema(task.tools)
        )
    if task.task_type == EXTRACTION:
        return bounded(task.response_schema or {})
    if task.task_type == CLASSIFICATION:
        return {
            "type": "object",
            "properties": {"label": {"enum": list(task.labels or [])}},
            "required": ["label"],
            "additionalProperties": False,
        }
    return RESPOND_SCHEMA


def build_prompt(task: TaskSpec, *, feedback: str = "") -> Prompt:
    if task.task_type == TOOL_USE:
        instructions = _PLAN_INSTRUCTIONS if task.parallel_tool_calls else _TOOL_INSTRUCTIONS
        system = f"{instructions}\n{_tool_catalogue(task.tools)}"
    elif task.task_type == EXTRACTION:
        system = _EXTRACTION_INSTRUCTIONS + json.dumps(task.response_schema, separators=(",", ":"))
    elif task.task_type == CLASSIFICATION:
        system = _CLASSIFICATION_INSTRUCTIONS + ", ".join(task.labels or [])
    else:
        system = _RESPOND_INSTRUCTIONS
    if task.instructions:
        system = task.instructions
    return Prompt(
        system=system,
        conversation=task.messages,
        output_schema=output_schema(task),
        feedback=feedback,
        task_type=task.task_type,
        tools=task.tools if task.task_type == TOOL_USE else [],
        parallel_tool_calls=task.parallel_tool_calls,
    )


def estimate_tokens(prompt: Prompt) -> int:
    """A cheap upper-bound guess (about 3.5 characters per token) for routing by context size."""
    size = len(prompt.system) + len(json.dumps(prompt.conversation)) + len(prompt.feedback)
    return int(size / 3.5) + prompt.max_tokens


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
    task: TaskSpec, text: str, *, confidence: float | None = None
) -> tuple[Any, dict[str, Any] | None, list[ValidationIssue]]:
    """(parsed JSON, action or None, validation issues) for a model's answer.

    Every tier's answer goes through this same validator chain.
    """
    parsed, issues = parse_json_answer(text)
    if issues:
        return None, None, issues
    if task.task_type == TOOL_USE:
        return parsed, *_tool_calls(task, parsed)
    if task.task_type == EXTRACTION:
        issues = schema_issues(parsed, task.response_schema or {}, "$")
        if not issues:
            issues = validate_grounding(parsed, task.messages)
        if issues:
            return parsed, None, issues
        action: dict[str, Any] = {"id": new_action_id(), "type": "json", "data": parsed}
        if task.output_format == "yaml":
            action["yaml"] = yaml.safe_dump(parsed, sort_keys=False, allow_unicode=True)
        return parsed, action, []
    if task.task_type == CLASSIFICATION:
        label = parsed.get("label") if isinstance(parsed, dict) else None
        if label not in (task.labels or []):
            return parsed, None, [ValidationIssue("schema", "$.label", f"{label!r} is not one of the labels")]
        score = 1.0 if confidence is None else round(confidence, 4)
        return parsed, {"id": new_action_id(), "type": "label", "label": label, "score": score}, []
    if (
        not isinstance(parsed, dict)
        or not isinstance(parsed.get("content"), str)
        or not parsed["content"].strip()
    ):
        return parsed, None, [ValidationIssue("schema", "$.content", "a reply needs non-empty text content")]
    return parsed, {"id": new_action_id(), "type": "respond", "content": parsed["content"]}, []


def _tool_calls(task: TaskSpec, parsed: Any) -> tuple[dict[str, Any] | None, list[ValidationIssue]]:
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
        for issue in validate_tool_call(call, task.tools, conversation=task.messages, rules=task.rules):
            prefix = f"$.calls[{index}]" if len(calls) > 1 else "$"
            issues.append(ValidationIssue(issue.validator, prefix + issue.path[1:], issue.message))
    if issues:
        return None, issues
    return tool_calls_action(calls), []


def check_response_schema(schema: Any) -> str | None:
    """Why ``schema`` cannot serve as an extraction schema (and a grammar), or None."""
    if not isinstance(schema, dict):
        return "response_schema must be a JSON Schema object"
    try:
        Draft202012Validator.check_schema(schema)
    except Exception as exc:  # noqa: BLE001 - any failure means the schema is unusable
        return f"response_schema is not valid JSON Schema: {getattr(exc, 'message', exc)}"
    from router.grammar import grammar_problem

    return grammar_problem(bounded(schema))
