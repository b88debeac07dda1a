"""Writes to the model-call log and the log of upstream LLM calls."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from router.backends.base import Generation
from router.json_tree import UNSTORABLE
from router.models import ModelSpec
from router.openai_actions import action_from_message, first_tool_name
from router.prompts import task_type_of
from router.validators import ValidationIssue, issues_as_dicts
from telemetry.models import ModelCall, UpstreamCall


def _storable(text: str) -> str:
    """A model's text as a column can hold it: characters no column takes become U+FFFD."""
    return UNSTORABLE.sub("\ufffd", text)


def model_call_record(
    *,
    request_id: Any,
    spec: ModelSpec,
    purpose: str,
    attempt: int,
    generation: Generation | None = None,
    parsed_output: Any = None,
    issues: list[ValidationIssue] | None = None,
    error: str = "",
    trigger: str = "",
    escalated: bool = False,
    model_name: str = "",
) -> ModelCall:
    """Stores one model call with its cost at the registry's prices (``model_name``: what to call
    the model when it is not ``spec`` alone, e.g. an adapter over it)."""
    tokens_in = generation.tokens_in if generation else 0
    tokens_out = generation.tokens_out if generation else 0
    return ModelCall.objects.create(
        request_id=request_id,
        model_spec=spec,
        model_name=model_name or spec.name,
        tier=spec.tier,
        purpose=purpose,
        attempt=attempt,
        prompt=_storable(generation.prompt_text) if generation else "",
        raw_output=_storable(generation.text) if generation else "",
        parsed_output=parsed_output,
        latency_ms=generation.latency_ms if generation else 0,
        tokens_in=tokens_in,
        tokens_out=tokens_out,
        cost_usd=spec.cost_usd(tokens_in, tokens_out) if generation else Decimal(0),
        validation_errors=issues_as_dicts(issues or []),
        uncertainty=generation.uncertainty.as_dict() if generation and generation.uncertainty else None,
        error=_storable(error),
        escalated=escalated,
        trigger=trigger,
    )


def upstream_call_record(
    *,
    source: str,
    agent_key: Any,
    model: ModelSpec | None,
    model_name: str,
    messages: list[dict[str, Any]],
    tools: list[dict[str, Any]],
    answer: dict[str, Any] | None,
    content_sha256: str,
    latency_ms: float = 0,
    tokens: tuple[int, int] = (0, 0),
    error: str = "",
    policy: tuple[str, str, bool | None] = ("", "", None),
) -> UpstreamCall:
    """Stores one upstream LLM call (observed or imported) with its cost at the registry's prices."""
    task_type, _ = task_type_of(hint="", tools=tools, response_schema=None, labels=None)
    return UpstreamCall.objects.create(
        source=source,
        agent_key=agent_key,
        content_sha256=content_sha256,
        model_name=model_name,
        messages=messages,
        tools=tools,
        answer=answer,
        tool_name=first_tool_name(action_from_message(answer)) if answer else "",
        task_type=task_type,
        latency_ms=latency_ms,
        tokens_in=tokens[0],
        tokens_out=tokens[1],
        cost_usd=model.cost_usd(*tokens) if model is not None else Decimal(0),
        error=error,
        policy_decision=policy[0],
        policy_name=policy[1],
        would_hold=policy[2],
    )
