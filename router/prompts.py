"""Turns a request into a model prompt (router/answers.py turns the answer back into an action).

Instructions and the tool list come first and in a stable order, so a local model reuses the
KV cache of that prefix across requests with the same tools.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from router.backends.base import Prompt
from router.context_budget import conversation_floor, fit_conversation
from router.contracts import TaskType
from router.grammar import grammar_problem
from router.messages import approx_tokens
from router.schemas import DEFAULT_STRING_MAX_LENGTH, bounded, plan_schema, tool_choice_schema, tool_function
from router.untrusted_schemas import schema_problem

MAX_PLAN_CALLS = 5
PROMPT_MAX_TOKENS = Prompt.max_tokens  # the answer's budget, which the context must leave room for
# The chat template's own tokens (role markers, the tool block's wording) beyond the texts.
_TEMPLATE_TOKENS = 256

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
# For a model whose chat template lists the tools itself (Qwen's): the plan's format is the
# grammar's, and this asks for every call; with the ChatML catalogue and _PLAN_INSTRUCTIONS both
# Qwen models put exactly one call in 19-20 of 20 plans.
_PARALLEL_CALL_INSTRUCTIONS = (
    "You are the next step of a customer-service agent. Make every tool call the request needs, "
    "one after another in the order they should run, each on its own. Copy identifiers, emails and "
    "amounts exactly as they appear in the conversation; never invent them."
)
# Added to the tool instructions when the answer may be a reply (``tool_choice: auto``).
_REPLY_INSTRUCTIONS = (
    " If the conversation calls for a reply to the user rather than a tool call (a tool result "
    'already answers the question, or you need to ask the user something), answer {"content": '
    "<your reply>} instead."
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
    # tool_use: the model may reply to the user instead of calling a tool (``tool_choice: auto``).
    may_reply: bool = False
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
        task_type=TaskType.CLASSIFICATION,
        messages=task.messages,
        labels=[INTENT_USE_TOOL, INTENT_OUT_OF_SCOPE],
        instructions=instructions,
    )


def task_type_of(*, hint: str, tools: list[Any], response_schema: Any, labels: Any) -> tuple[str, str]:
    """The task type from the agent's hint or the request's shape, and why."""
    if hint:
        return hint, f"the agent asked for {hint!r}"
    if response_schema is not None:
        return TaskType.EXTRACTION, "a response_schema was given"
    if labels:
        return TaskType.CLASSIFICATION, "labels were given"
    if tools:
        return TaskType.TOOL_USE, "tools were given"
    return TaskType.RESPOND, "no tools, schema or labels: a text reply"


def _tool_catalogue(tools: list[dict[str, Any]]) -> str:
    lines = []
    for tool in tools:
        function = tool_function(tool)
        params = json.dumps(function.get("parameters", {}), separators=(",", ":"), sort_keys=True)
        lines.append(f"- {function['name']}: {function.get('description', '').strip()} Parameters: {params}")
    return "Tools:\n" + "\n".join(lines)


def output_schema(task: TaskSpec) -> dict[str, Any]:
    """The JSON Schema a model's answer must match (and the grammar local models decode under)."""
    if task.task_type == TaskType.TOOL_USE:
        calls = (
            plan_schema(task.tools, MAX_PLAN_CALLS)
            if task.parallel_tool_calls
            else tool_choice_schema(task.tools)
        )
        if not task.may_reply:
            return calls
        return {"anyOf": [*calls.get("anyOf", [calls]), RESPOND_SCHEMA]}
    if task.task_type == TaskType.EXTRACTION:
        return bounded(task.response_schema or {})
    if task.task_type == TaskType.CLASSIFICATION:
        return {
            "type": "object",
            "properties": {"label": {"enum": list(task.labels or [])}},
            "required": ["label"],
            "additionalProperties": False,
        }
    return RESPOND_SCHEMA


def build_prompt(task: TaskSpec, *, feedback: str = "", context_tokens: int | None = None) -> Prompt:
    """The prompt for ``task``; with ``context_tokens`` (a local model's context), its conversation
    cut to fit (router/context_budget.py)."""
    instructions = ""
    if task.task_type == TaskType.TOOL_USE:
        reply = _REPLY_INSTRUCTIONS if task.may_reply else ""
        plan = _PLAN_INSTRUCTIONS if task.parallel_tool_calls else _TOOL_INSTRUCTIONS
        system = f"{plan}{reply}\n{_tool_catalogue(task.tools)}"
        instructions = (
            _PARALLEL_CALL_INSTRUCTIONS if task.parallel_tool_calls else _TOOL_INSTRUCTIONS
        ) + reply
    elif task.task_type == TaskType.EXTRACTION:
        system = _EXTRACTION_INSTRUCTIONS + json.dumps(task.response_schema, separators=(",", ":"))
    elif task.task_type == TaskType.CLASSIFICATION:
        system = _CLASSIFICATION_INSTRUCTIONS + ", ".join(task.labels or [])
    else:
        system = _RESPOND_INSTRUCTIONS
    if task.instructions:
        system = instructions = task.instructions
    conversation = task.messages
    if context_tokens is not None:
        budget = context_tokens - approx_tokens(system + feedback) - PROMPT_MAX_TOKENS - _TEMPLATE_TOKENS
        conversation = fit_conversation(task.messages, budget)
    return Prompt(
        system=system,
        conversation=conversation,
        output_schema=output_schema(task),
        feedback=feedback,
        task_type=task.task_type,
        tools=task.tools if task.task_type == TaskType.TOOL_USE else [],
        parallel_tool_calls=task.parallel_tool_calls,
        may_reply=task.may_reply and task.task_type == TaskType.TOOL_USE,
        instructions=instructions or system,
    )


def floor_tokens(task: TaskSpec, prompt: Prompt) -> int:
    """What ``estimate_tokens`` comes down to when the conversation is cut to a context budget."""
    return (
        approx_tokens(prompt.system + prompt.feedback)
        + conversation_floor(task.messages)
        + prompt.max_tokens
        + _TEMPLATE_TOKENS
    )


def estimate_tokens(prompt: Prompt) -> int:
    """A cheap upper-bound guess of the prompt and answer's tokens, for routing by context size."""
    return (
        approx_tokens(prompt.system + json.dumps(prompt.conversation) + prompt.feedback) + prompt.max_tokens
    )


def check_response_schema(schema: Any) -> str | None:
    """Why ``schema`` cannot serve as an extraction schema (and a grammar), or None."""
    return schema_problem(schema, "response_schema") or grammar_problem(bounded(schema))
