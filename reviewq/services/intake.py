"""Intake: an agent's request checked, stored once (idempotently) and handed to the pipeline."""

from __future__ import annotations

import hashlib
import json
from contextlib import nullcontext
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from reviewq.config.snapshot import current_configuration
from reviewq.errors import ApplicationError
from reviewq.models import AgentKey, ProposalSource, Request, ToolChoice
from reviewq.notify.webhooks import callback_url_problem
from reviewq.runtime.dispatch import later
from router.answers import parse_answer
from router.openai_actions import action_from_message, answer_text
from router.prompts import TaskSpec, check_response_schema, task_type_of
from router.schemas import tool_function
from router.validators import REPETITION, ValidationIssue, check_tool_schema, issues_as_dicts


def enqueue_pipeline(request_id: Any) -> None:
    """Run the pipeline for ``request_id`` once the current transaction commits."""
    later("reviewq.tasks.run_pipeline", str(request_id))


def _canonical_sha256(payload: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def check_tools(tools: list[dict[str, Any]]) -> None:
    seen: set[str] = set()
    for index, tool in enumerate(tools):
        name = tool_function(tool)["name"]
        if name in seen:
            raise ApplicationError("invalid_tools", f"tools[{index}]: the tool name {name!r} appears twice")
        seen.add(name)
        problem = check_tool_schema(tool_function(tool).get("parameters", {"type": "object"}))
        if problem:
            raise ApplicationError("invalid_tool_schema", f"tools[{index}] ({name}): {problem}")


def check_tool_history(messages: list[dict[str, Any]]) -> None:
    """Tool results must answer a tool call made earlier in the conversation."""
    call_ids: set[str] = set()
    for index, message in enumerate(messages):
        for call in message.get("tool_calls") or []:
            call_ids.add(call["id"])
        if message["role"] == "tool" and message.get("tool_call_id") not in call_ids:
            raise ApplicationError(
                "invalid_messages",
                f"messages[{index}]: tool_call_id {message.get('tool_call_id')!r} "
                "does not answer any earlier assistant tool call",
            )


def proposal_issues(payload: dict[str, Any], action: dict[str, Any]) -> list[ValidationIssue]:
    """What the validator chain finds wrong with a proposal the agent (or its LLM) made for the
    request in ``payload``: the same checks as a model's answer (schema, grounding in what the
    agent sent, business rules). A reply is always a possible answer here."""
    tools = payload.get("tools") or []
    task_type, _ = task_type_of(
        hint=payload.get("task_type") or "",
        tools=tools,
        response_schema=payload.get("response_schema"),
        labels=payload.get("labels"),
    )
    task = TaskSpec(
        task_type=task_type,
        messages=payload["messages"],
        tools=tools,
        parallel_tool_calls=True,
        may_reply=True,
        rules=current_configuration().tool_rules(tool_function(tool)["name"] for tool in tools),
    )
    _, _, issues = parse_answer(task, answer_text(action))
    # Repeating an answered call is a small model's loop; an agent may mean it (polling, say).
    return [issue for issue in issues if issue.validator != REPETITION]


def request_create(
    *,
    agent_key: AgentKey,
    payload: dict[str, Any],
    idempotency_key: str = "",
    proposed_by: str = ProposalSource.AGENT,
    check_proposal: bool = True,
) -> tuple[Request, bool]:
    """Accepts an agent request and enqueues its pipeline. Returns (request, created).

    With an ``idempotency_key``, a repeat of the same body returns the first request; the same
    key with another body is refused (409). A ``proposed_action`` in the payload is checked by
    the validators now (422 with their errors) and skips reviewq's models: the pipeline takes it
    straight to the risk policies. ``proposed_by`` says whose it is (the agent's, or its upstream
    LLM's as observe mode saw it); with ``check_proposal`` off (observe mode's enforcement) an
    invalid proposal is not refused here but held for a human by the pipeline.
    """
    check_tools(payload.get("tools") or [])
    check_tool_history(payload["messages"])
    if payload.get("callback_url"):
        problem = callback_url_problem(payload["callback_url"])
        if problem:
            raise ApplicationError("invalid_callback_url", problem, status=422)
    if payload.get("response_schema") is not None:
        problem = check_response_schema(payload["response_schema"])
        if problem:
            raise ApplicationError("invalid_response_schema", problem)
    proposal = None
    if payload.get("proposed_action"):
        if payload["proposed_action"].get("tool_calls") and not payload.get("tools"):
            raise ApplicationError(
                "invalid_proposed_action", "proposed tool calls need the request's tools", status=422
            )
        proposal = action_from_message(payload["proposed_action"])
        issues = proposal_issues(payload, proposal) if check_proposal else []
        if issues:
            raise ApplicationError(
                "invalid_proposed_action",
                "the proposed action fails validation: "
                + "; ".join(f"{issue.path}: {issue.message}" for issue in issues),
                status=422,
                extra={"issues": issues_as_dicts(issues)},
            )
    body_sha256 = _canonical_sha256(payload)

    if idempotency_key:
        existing = _idempotent_replay(agent_key, idempotency_key, body_sha256)
        if existing is not None:
            return existing, False
    # In autocommit (the API) the INSERT commits on its own, with no BEGIN and COMMIT round trips.
    # Inside a caller's transaction it gets a savepoint, so that a lost race below leaves that
    # transaction usable. Either way the pipeline is enqueued once the row is committed.
    savepoint = transaction.atomic() if transaction.get_connection().in_atomic_block else nullcontext()
    try:
        with savepoint:
            request = Request.objects.create(
                agent_key=agent_key,
                idempotency_key=idempotency_key,
                body_sha256=body_sha256,
                messages=payload["messages"],
                tools=payload.get("tools") or [],
                task_type=payload.get("task_type") or "",
                response_schema=payload.get("response_schema"),
                labels=payload.get("labels"),
                output_format=payload.get("format", "json"),
                parallel_tool_calls=payload.get("parallel_tool_calls", False),
                tool_choice=payload.get("tool_choice", ToolChoice.REQUIRED),
                proposal=proposal,
                proposed_by=proposed_by if proposal is not None else ProposalSource.MODEL,
                callback_url=payload.get("callback_url") or "",
                metadata=payload.get("metadata") or {},
                # Claimed within seconds unless its hand-over was lost: then the sweeper hands it over.
                lease_expires_at=timezone.now() + timedelta(seconds=settings.PIPELINE_CLAIM_SECONDS),
            )
    except IntegrityError:
        # A concurrent POST with the same key won the insert: answer with its request.
        existing = _idempotent_replay(agent_key, idempotency_key, body_sha256)
        if existing is None:
            raise
        return existing, False
    enqueue_pipeline(request.id)
    return request, True


def _idempotent_replay(agent_key: AgentKey, idempotency_key: str, body_sha256: str) -> Request | None:
    existing = Request.objects.filter(agent_key=agent_key, idempotency_key=idempotency_key).first()
    if existing is not None and existing.body_sha256 != body_sha256:
        raise ApplicationError(
            "idempotency_key_reused",
            "this Idempotency-Key was already used with a different request body",
            status=409,
        )
    return existing
