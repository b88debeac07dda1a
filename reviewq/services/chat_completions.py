"""The drop-in OpenAI Chat Completions endpoint: an agent points its SDK's ``base_url`` here.

In ``gateway`` mode the request becomes an ordinary reviewq request (small model first, ladder,
policies, review) and its outcome an assistant message. In ``observe`` mode the team's own LLM
answers, unchanged, and reviewq logs the call, records what the risk policies would have done,
and has the small model propose on the same input off the hot path; with ``enforce_policies`` a
risky upstream call is held for review like any other.

A held action is never returned as if released: after the key's ``decision_wait_ms`` the answer
is an assistant message without tool calls saying the action awaits review, with the request id
in the ``X-Reviewq-Request-Id`` header and in the text; ``GET /api/v1/requests/{id}`` gives the
outcome.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db.models import Sum

from reviewq import selectors
from reviewq.errors import ApplicationError
from reviewq.models import AgentKey, ProposalSource, Request, RequestStatus, ToolChoice
from reviewq.services import observe
from reviewq.services.intake import request_create
from reviewq.services.upstream import UpstreamError, forward_chat_completion
from router.contracts import TaskType
from router.openai_actions import message_from_action
from telemetry.models import ModelCall, UpstreamCall
from telemetry.services import upstream_call_record

REQUEST_ID_HEADER = "X-Reviewq-Request-Id"
STATUS_HEADER = "X-Reviewq-Status"
UPSTREAM_CALL_HEADER = "X-Reviewq-Upstream-Call"


@dataclass
class CompletionReply:
    """What the endpoint answers: an HTTP status, a JSON body and reviewq's headers."""

    status: int
    body: dict[str, Any] | bytes
    headers: dict[str, str] = field(default_factory=dict)


def openai_error(
    status: int, message: str, *, code: str, kind: str = "invalid_request_error"
) -> CompletionReply:
    """An error in OpenAI's shape, which its SDK raises as the matching APIStatusError."""
    return CompletionReply(status, {"error": {"message": message, "type": kind, "param": None, "code": code}})


def request_payload(body: dict[str, Any]) -> dict[str, Any]:
    """A Chat Completions body as a reviewq request payload (what intake stores and hashes)."""
    tools = body.get("tools") or []
    choice = body.get("tool_choice")
    payload: dict[str, Any] = {"messages": body["messages"], "metadata": {"via": "/v1/chat/completions"}}
    if body.get("model"):
        payload["metadata"]["model"] = str(body["model"])[:200]
    response_format = body.get("response_format") or {}
    if response_format.get("type") == "json_schema":
        payload["response_schema"] = (response_format.get("json_schema") or {}).get("schema") or {}
        payload["task_type"] = TaskType.EXTRACTION
        return payload
    if not tools or choice == "none":
        payload["task_type"] = TaskType.RESPOND
        return payload
    if isinstance(choice, dict):  # {"type": "function", "function": {"name": ...}}: that tool, called
        name = (choice.get("function") or {}).get("name")
        tools = [tool for tool in tools if tool["function"]["name"] == name]
        if not tools:
            raise ApplicationError(
                "invalid_tool_choice", f"tool_choice names {name!r}, which is not in tools"
            )
        choice = "required"
    payload["tools"] = tools
    payload["task_type"] = TaskType.TOOL_USE
    payload["tool_choice"] = ToolChoice.REQUIRED if choice == "required" else ToolChoice.AUTO
    if body.get("parallel_tool_calls"):
        payload["parallel_tool_calls"] = True
    return payload


async def gateway_completion(
    agent_key: AgentKey, body: dict[str, Any], idempotency_key: str
) -> CompletionReply:
    """The full reviewq pipeline behind the Chat Completions shape."""
    payload = request_payload(body)
    request, _ = await sync_to_async(request_create)(
        agent_key=agent_key, payload=payload, idempotency_key=idempotency_key[:255]
    )
    return await _answer_when_decided(agent_key, request, str(body.get("model") or ""))


async def observe_completion(
    agent_key: AgentKey, body: dict[str, Any], idempotency_key: str
) -> CompletionReply:
    """The team's upstream LLM answers; reviewq logs, compares and (if enforcing) gates it."""
    model = agent_key.upstream_model  # loaded with the key (agent_key_authenticate)
    if model is None:
        return openai_error(
            503,
            f"agent key {agent_key.name!r} is in observe mode but has no upstream model: "
            "set one in the admin (Agent keys)",
            code="no_upstream_model",
            kind="server_error",
        )
    messages, tools = body["messages"], body.get("tools") or []
    content_sha256 = hashlib.sha256(
        json.dumps({"messages": messages, "tools": tools}, sort_keys=True).encode()
    ).hexdigest()
    try:
        answer = await forward_chat_completion(model, body)
    except UpstreamError as exc:
        call = await sync_to_async(upstream_call_record)(
            source=UpstreamCall.Source.OBSERVED,
            agent_key=agent_key,
            model=model,
            model_name=model.model_path,
            messages=messages,
            tools=tools,
            answer=None,
            content_sha256=content_sha256,
            error=str(exc)[:2000],
        )
        reply = openai_error(
            502, f"the upstream LLM failed: {exc}", code="upstream_error", kind="upstream_error"
        )
        reply.headers[UPSTREAM_CALL_HEADER] = str(call.id)
        return reply
    message = answer.message if answer.status < 400 else None
    call = await sync_to_async(_record_and_compare)(agent_key, model, body, answer, message, content_sha256)
    headers = {UPSTREAM_CALL_HEADER: str(call.id)}
    if agent_key.enforce_policies and call.would_hold and message is not None:
        payload = {**request_payload(body), "proposed_action": _proposed(message)}
        request, _ = await sync_to_async(request_create)(
            agent_key=agent_key,
            payload=payload,
            idempotency_key=idempotency_key[:255],
            proposed_by=ProposalSource.UPSTREAM,
            check_proposal=False,
        )
        await UpstreamCall.objects.filter(id=call.id).aupdate(held_request=request)
        reply = await _answer_when_decided(agent_key, request, model.model_path)
        reply.headers.update(headers)
        return reply
    return CompletionReply(answer.status, answer.body, headers)


def _record_and_compare(
    agent_key: AgentKey,
    model: Any,
    body: dict[str, Any],
    answer: Any,
    message: dict[str, Any] | None,
    content_sha256: str,
) -> UpstreamCall:
    tools = body.get("tools") or []
    call = upstream_call_record(
        source=UpstreamCall.Source.OBSERVED,
        agent_key=agent_key,
        model=model,
        model_name=str(answer.data.get("model") or model.model_path)[:200],
        messages=body["messages"],
        tools=tools,
        answer=message,
        content_sha256=content_sha256,
        latency_ms=answer.latency_ms,
        tokens=answer.usage(),
        error="" if answer.status < 400 else f"HTTP {answer.status}: {answer.body[:500]!r}",
        policy=observe.policy_on_upstream_answer(message, tools),
    )
    if message is not None:
        observe.compare_later(call.id)
    return call


def _proposed(message: dict[str, Any]) -> dict[str, Any]:
    if message.get("tool_calls"):
        return {"tool_calls": message["tool_calls"]}
    return {"content": str(message.get("content") or "")}


async def _answer_when_decided(agent_key: AgentKey, request: Request, model_name: str) -> CompletionReply:
    wait_ms = min(agent_key.decision_wait_ms, settings.MAX_WAIT_MS)
    if not request.is_final and wait_ms:
        request = await selectors.request_wait_final(
            agent_key=agent_key, request_id=request.id, wait_ms=wait_ms
        )
    return await sync_to_async(completion_for)(request, model_name)


def completion_for(request: Request, model_name: str = "") -> CompletionReply:
    """The Chat Completions answer for ``request`` as it stands: its released action, or a reply
    saying it awaits review, was denied or expired. A failed request is a 502."""
    headers = {REQUEST_ID_HEADER: str(request.id), STATUS_HEADER: request.status}
    where = f"reviewq request {request.id}"
    if request.status == RequestStatus.FAILED:
        reply = openai_error(
            502, f"{where} failed: {request.failure_reason}", code="request_failed", kind="server_error"
        )
        reply.headers.update(headers)
        return reply
    finish_reason = "stop"
    if request.status == RequestStatus.RELEASED and request.action:
        message = message_from_action(request.action)
        if message.get("tool_calls"):
            finish_reason = "tool_calls"
    else:
        reason = (request.decision or {}).get("reason") or ""
        because = f": {reason}" if reason else ""
        text = {
            RequestStatus.DENIED: f"The proposed action was denied{because} ({where}).",
            RequestStatus.EXPIRED: f"The proposed action expired before a reviewer decided ({where}).",
            RequestStatus.CANCELLED: f"The request was withdrawn{because} ({where}).",
        }.get(
            RequestStatus(request.status),
            f"This action is awaiting human review ({where}). Do not repeat it; "
            f"GET /api/v1/requests/{request.id} gives the outcome.",
        )
        message = {"role": "assistant", "content": text}
    usage = (
        ModelCall.objects.filter(request_id=request.id)
        .exclude(purpose=ModelCall.Purpose.SHADOW)
        .aggregate(prompt=Sum("tokens_in"), completion=Sum("tokens_out"))
    )
    prompt_tokens, completion_tokens = usage["prompt"] or 0, usage["completion"] or 0
    body = {
        "id": f"chatcmpl-{uuid.UUID(str(request.id)).hex}",
        "object": "chat.completion",
        "created": int(request.created_at.timestamp()) if request.created_at else int(time.time()),
        "model": (request.decision or {}).get("model") or model_name or "reviewq",
        "choices": [{"index": 0, "message": message, "finish_reason": finish_reason, "logprobs": None}],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }
    return CompletionReply(200, body, headers)
