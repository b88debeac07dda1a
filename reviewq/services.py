"""Writes: every state change of the gateway goes through a function here."""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.db import IntegrityError, transaction
from django.utils import timezone

from reviewq import live
from reviewq.dispatch import enqueue_pipeline
from reviewq.errors import ApplicationError
from reviewq.models import (
    WORKING_STATUSES,
    AgentKey,
    GoldenTrace,
    Request,
    RequestStatus,
    ReviewItem,
)
from reviewq.pipeline import task_spec_for
from reviewq.transitions import move_request
from router.prompts import check_response_schema, new_action_id, new_call_id
from router.schemas import tool_function
from router.validators import check_tool_schema, validate_tool_call

logger = logging.getLogger(__name__)
AGENT_KEY_PREFIX = "rq_"


# --- Agent keys ---


def _hash_key(raw_key: str) -> str:
    # Keys are 256-bit random tokens, so a plain SHA-256 is enough (no password stretching).
    return hashlib.sha256(raw_key.encode()).hexdigest()


def agent_key_create(
    *, name: str, owner: User | None = None, scope: str = AgentKey.Scope.AGENT
) -> tuple[AgentKey, str]:
    """A new API key. Returns the row and the raw key, which is shown once and never stored."""
    raw_key = AGENT_KEY_PREFIX + secrets.token_urlsafe(32)
    key = AgentKey.objects.create(
        name=name, scope=scope, prefix=raw_key[:10], key_hash=_hash_key(raw_key), owner=owner
    )
    return key, raw_key


def agent_key_authenticate(raw_key: str, *, scope: str = AgentKey.Scope.AGENT) -> AgentKey | None:
    """The live key ``raw_key`` names, if it has ``scope``."""
    return (
        AgentKey.objects.filter(key_hash=_hash_key(raw_key), revoked_at__isnull=True, scope=scope)
        .select_related("owner")
        .first()
    )


# --- Intake ---


def _canonical_sha256(payload: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _check_tools(tools: list[dict[str, Any]]) -> None:
    seen: set[str] = set()
    for index, tool in enumerate(tools):
        name = tool_function(tool)["name"]
        if name in seen:
            raise ApplicationError("invalid_tools", f"tools[{index}]: the tool name {name!r} appears twice")
        seen.add(name)
        problem = check_tool_schema(tool_function(tool).get("parameters", {"type": "object"}))
        if problem:
            raise ApplicationError("invalid_tool_schema", f"tools[{index}] ({name}): {problem}")


def _check_tool_history(messages: list[dict[str, Any]]) -> None:
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


def request_create(
    *, agent_key: AgentKey, payload: dict[str, Any], idempotency_key: str = ""
) -> tuple[Request, bool]:
    """Accepts an agent request and enqueues its pipeline. Returns (request, created).

    With an ``idempotency_key``, a repeat of the same body returns the first request; the same
    key with another body is refused (409).
    """
    _check_tools(payload.get("tools") or [])
    _check_tool_history(payload["messages"])
    if payload.get("response_schema") is not None:
        problem = check_response_schema(payload["response_schema"])
        if problem:
            raise ApplicationError("invalid_response_schema", problem)
    body_sha256 = _canonical_sha256(payload)

    if idempotency_key:
        existing = _idempotent_replay(agent_key, idempotency_key, body_sha256)
        if existing is not None:
            return existing, False
    try:
        with transaction.atomic():
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
                callback_url=payload.get("callback_url") or "",
                metadata=payload.get("metadata") or {},
                lease_expires_at=timezone.now() + timedelta(seconds=settings.PIPELINE_LEASE_SECONDS),
            )
            enqueue_pipeline(request.id)
    except IntegrityError:
        # A concurrent POST with the same key won the insert: answer with its request.
        existing = _idempotent_replay(agent_key, idempotency_key, body_sha256)
        if existing is None:
            raise
        return existing, False
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


# --- Recovery ---


def sweep_stuck_requests() -> int:
    """Re-enqueues requests whose worker lease has passed (crashed worker, lost task)."""
    now = timezone.now()
    stuck = Request.objects.filter(status__in=list(WORKING_STATUSES), lease_expires_at__lt=now)
    count = 0
    for request_id, status in stuck.values_list("id", "status")[:500]:
        with transaction.atomic():
            if move_request(request_id, from_statuses=[status], to_status=RequestStatus.RECEIVED):
                enqueue_pipeline(request_id)
                count += 1
    if count:
        logger.warning("re-enqueued %d requests whose lease had passed", count)
    return count


def expire_review_items() -> int:
    """Held items past their expiry are denied: expiry fails closed."""
    count = 0
    overdue = ReviewItem.objects.filter(status=ReviewItem.Status.PENDING, expires_at__lte=timezone.now())
    for item_id in overdue.values_list("id", flat=True)[:500]:
        if _expire_item(item_id):
            count += 1
    return count


def _expire_item(item_id: int) -> bool:
    with transaction.atomic():
        item = ReviewItem.objects.select_for_update().select_related("request").get(id=item_id)
        if item.status != ReviewItem.Status.PENDING:
            return False
        now = timezone.now()
        ReviewItem.objects.filter(id=item.id).update(status=ReviewItem.Status.EXPIRED, decided_at=now)
        move_request(
            item.request_id,
            from_statuses=[RequestStatus.AWAITING_REVIEW],
            to_status=RequestStatus.EXPIRED,
            decision={"by": "expiry", "decision": "expire", "reason": "nobody decided before it expired"},
        )
        transaction.on_commit(lambda: live.push_item_removed(item))
    return True


# --- Human decisions ---


def _decide(
    *,
    item_id: int,
    reviewer: User,
    decision: str,
    reason: str = "",
    final_action: dict[str, Any] | None = None,
) -> ReviewItem:
    now = timezone.now()
    with transaction.atomic():
        try:
            item = ReviewItem.objects.select_for_update().select_related("request__agent_key").get(id=item_id)
        except ReviewItem.DoesNotExist:
            raise ApplicationError("not_found", f"review item {item_id} does not exist", status=404) from None
        request = item.request
        if request.agent_key.owner_id is not None and request.agent_key.owner_id == reviewer.pk:
            raise ApplicationError(
                "own_request", "you raised this request, so someone else must decide on it", status=403
            )
        if item.status == ReviewItem.Status.EXPIRED or (
            item.status == ReviewItem.Status.PENDING and item.expires_at <= now
        ):
            raise ApplicationError("expired", "this item expired before the decision", status=410)
        if item.status != ReviewItem.Status.PENDING:
            raise ApplicationError("already_decided", f"this item was already {item.status}", status=409)

        item_status = {
            GoldenTrace.Decision.APPROVE: ReviewItem.Status.APPROVED,
            GoldenTrace.Decision.EDIT: ReviewItem.Status.EDITED,
            GoldenTrace.Decision.DENY: ReviewItem.Status.DENIED,
        }[GoldenTrace.Decision(decision)]
        ReviewItem.objects.filter(id=item.id, status=ReviewItem.Status.PENDING).update(
            status=item_status, decided_by=reviewer, decided_at=now, decision_reason=reason
        )
        trail = {
            "by": "reviewer",
            "reviewer": reviewer.get_username(),
            "decision": decision,
            "reason": reason,
            "policy": (request.decision or {}).get("policy"),
            "hold_reason": item.hold_reason,
        }
        released = decision != GoldenTrace.Decision.DENY
        moved = move_request(
            request.id,
            from_statuses=[RequestStatus.AWAITING_REVIEW],
            to_status=RequestStatus.RELEASED if released else RequestStatus.DENIED,
            action=final_action if released else None,
            decision=trail,
        )
        if not moved:
            # The row lock makes this unreachable unless the request was changed by hand.
            raise ApplicationError("conflict", "the request is no longer awaiting review", status=409)
        GoldenTrace.objects.create(
            request=request,
            review_item=item,
            context={"messages": request.messages, "tools": request.tools},
            proposal=request.proposal,
            final_action=final_action if released else None,
            decision=decision,
            reason=reason,
            reviewer=reviewer,
            time_to_decision_ms=int((now - item.created_at).total_seconds() * 1000),
        )
        item.refresh_from_db()
        transaction.on_commit(lambda: live.push_item_removed(item))
    return item


def review_approve(*, item_id: int, reviewer: User) -> ReviewItem:
    """Releases the proposed action as it stands."""
    proposal = ReviewItem.objects.filter(id=item_id).values_list("request__proposal", flat=True).first()
    if proposal is None:
        raise ApplicationError(
            "no_proposal", "there is no valid proposal to approve; edit or deny it", status=409
        )
    return _decide(
        item_id=item_id, reviewer=reviewer, decision=GoldenTrace.Decision.APPROVE, final_action=proposal
    )


def review_edit(*, item_id: int, reviewer: User, tool_calls: list[dict[str, Any]]) -> ReviewItem:
    """Releases the reviewer's version of the action, once it passes the same validators."""
    item = ReviewItem.objects.select_related("request").filter(id=item_id).first()
    if item is None:
        raise ApplicationError("not_found", f"review item {item_id} does not exist", status=404)
    if not tool_calls:
        raise ApplicationError("invalid_edit", "an edited action needs at least one tool call")
    # Schema and business rules, not grounding: a reviewer's value is evidence in itself.
    rules = task_spec_for(item.request).rules
    for index, call in enumerate(tool_calls):
        issues = validate_tool_call(call, item.request.tools, rules=rules)
        if issues:
            raise ApplicationError(
                "invalid_edit",
                f"tool call {index}: " + "; ".join(str(issue) for issue in issues),
                extra={"errors": [issue.as_dict() for issue in issues]},
            )
    action = {
        "id": new_action_id(),
        "type": "tool_calls",
        "tool_calls": [
            {"id": new_call_id(), "name": call["name"], "arguments": call.get("arguments", {})}
            for call in tool_calls
        ],
    }
    return _decide(
        item_id=item_id, reviewer=reviewer, decision=GoldenTrace.Decision.EDIT, final_action=action
    )


def review_deny(*, item_id: int, reviewer: User, reason: str) -> ReviewItem:
    """Denies the action. A reason is required: it is what the next model learns from."""
    if not reason.strip():
        raise ApplicationError("reason_required", "a denial needs a reason")
    return _decide(
        item_id=item_id, reviewer=reviewer, decision=GoldenTrace.Decision.DENY, reason=reason.strip()
    )
