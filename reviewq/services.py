"""Writes: every state change of the gateway goes through a function here."""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
import threading
import time
from contextlib import nullcontext
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.db import IntegrityError, transaction
from django.utils import timezone

from reviewq import audit, live
from reviewq.dispatch import enqueue_pipeline
from reviewq.errors import ApplicationError
from reviewq.models import (
    WORKING_STATUSES,
    AgentKey,
    Approval,
    GoldenTrace,
    Request,
    RequestStatus,
    ReviewItem,
)
from reviewq.pipeline import task_spec_for
from reviewq.transitions import move_request
from router.prompts import check_response_schema, tool_calls_action
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
        name=name,
        scope=scope,
        prefix=raw_key[:10],
        key_hash=_hash_key(raw_key),
        owner=owner,
        webhook_secret=secrets.token_hex(32),
    )
    return key, raw_key


def agent_key_authenticate(raw_key: str, *, scope: str = AgentKey.Scope.AGENT) -> AgentKey | None:
    """The live key ``raw_key`` names, if it has ``scope``. Remembered for a moment (see below)."""
    key_hash = _hash_key(raw_key)
    key = (
        AgentKey.objects.filter(key_hash=key_hash, revoked_at__isnull=True, scope=scope)
        .select_related("owner")
        .first()
    )
    if key is not None and settings.AGENT_KEY_CACHE_SECONDS > 0:
        with _recent_keys_lock:
            if len(_recent_keys) >= _RECENT_KEYS_MAX:
                _recent_keys.clear()
            _recent_keys[(key_hash, scope)] = (key, time.monotonic() + settings.AGENT_KEY_CACHE_SECONDS)
    return key


# Keys this process authenticated in the last AGENT_KEY_CACHE_SECONDS, so that an agent's calls
# skip the lookup and the thread hop it takes under ASGI (3 to 8 ms of a routine call). Saving or
# deleting a key clears them in this process at once; any other change (a bulk update, another
# process's admin) reaches every process within AGENT_KEY_CACHE_SECONDS.
_recent_keys: dict[tuple[str, str], tuple[AgentKey, float]] = {}
_recent_keys_lock = threading.Lock()
_RECENT_KEYS_MAX = 4096


def agent_key_recently_authenticated(raw_key: str, *, scope: str = AgentKey.Scope.AGENT) -> AgentKey | None:
    """The key ``raw_key`` names if this process authenticated it a moment ago; no query."""
    remembered = _recent_keys.get((_hash_key(raw_key), scope))
    if remembered is None or remembered[1] < time.monotonic():
        return None
    return remembered[0]


def agent_keys_forget(**kwargs: Any) -> None:
    """Connected to AgentKey's saves and deletes: a revoked key is refused from the next call."""
    with _recent_keys_lock:
        _recent_keys.clear()


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
                callback_url=payload.get("callback_url") or "",
                metadata=payload.get("metadata") or {},
                lease_expires_at=timezone.now() + timedelta(seconds=settings.PIPELINE_LEASE_SECONDS),
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
        audit.record(kind="expire", actor="system", request_id=item.request_id, item_id=item.id)
        transaction.on_commit(lambda: live.push_item_removed(item))
    return True


# --- Human decisions ---


def _locked_item(item_id: int) -> ReviewItem:
    try:
        return ReviewItem.objects.select_for_update().select_related("request__agent_key").get(id=item_id)
    except ReviewItem.DoesNotExist:
        raise ApplicationError("not_found", f"review item {item_id} does not exist", status=404) from None


def _check_may_decide(item: ReviewItem, reviewer: User, now: Any) -> None:
    """Separation of duties, expiry, finality and claims, in that order."""
    if item.request.agent_key.owner_id is not None and item.request.agent_key.owner_id == reviewer.pk:
        raise ApplicationError(
            "own_request", "you raised this request, so someone else must decide on it", status=403
        )
    if item.reviewer_group_id and not reviewer.is_superuser:
        if not reviewer.groups.filter(id=item.reviewer_group_id).exists():
            raise ApplicationError("wrong_group", "this item is for another reviewer group", status=403)
    if item.status == ReviewItem.Status.EXPIRED or (
        item.status == ReviewItem.Status.PENDING and item.expires_at <= now
    ):
        raise ApplicationError("expired", "this item expired before the decision", status=410)
    if item.status != ReviewItem.Status.PENDING:
        raise ApplicationError("already_decided", f"this item was already {item.status}", status=409)
    if (
        item.claimed_by_id
        and item.claimed_by_id != reviewer.pk
        and item.claim_expires_at
        and item.claim_expires_at > now
    ):
        raise ApplicationError(
            "claimed",
            f"{item.claimed_by} is working on this item until {item.claim_expires_at:%H:%M:%S}",
            status=409,
        )


def review_claim(*, item_id: int, reviewer: User) -> ReviewItem:
    """Marks the item as being worked on by ``reviewer`` for a while, so others leave it alone."""
    now = timezone.now()
    with transaction.atomic():
        item = _locked_item(item_id)
        _check_may_decide(item, reviewer, now)
        ReviewItem.objects.filter(id=item.id).update(
            claimed_by=reviewer, claim_expires_at=now + timedelta(seconds=settings.REVIEW_CLAIM_SECONDS)
        )
        audit.record(kind="claim", actor=reviewer.get_username(), request_id=item.request_id, item_id=item.id)
        item.refresh_from_db()
        transaction.on_commit(lambda: live.push_item_changed(item))
    return item


def review_release_claim(*, item_id: int, reviewer: User) -> None:
    ReviewItem.objects.filter(id=item_id, claimed_by=reviewer).update(claimed_by=None, claim_expires_at=None)
    item = ReviewItem.objects.filter(id=item_id).select_related("request__agent_key").first()
    if item is not None:
        live.push_item_changed(item)


def review_approve(*, item_id: int, reviewer: User) -> ReviewItem:
    """Approves the action under review; it is released once enough reviewers approved it.

    With a four-eyes policy the first approval is recorded and the item stays pending until a
    second, different reviewer approves the same action.
    """
    now = timezone.now()
    with transaction.atomic():
        item = _locked_item(item_id)
        _check_may_decide(item, reviewer, now)
        if item.action_under_review is None:
            raise ApplicationError(
                "no_proposal", "there is no valid proposal to approve; edit or deny it", status=409
            )
        if item.approvals.filter(reviewer=reviewer).exists():
            raise ApplicationError(
                "already_approved", "you already approved this; another reviewer must approve too", status=409
            )
        Approval.objects.create(item=item, reviewer=reviewer, action=item.action_under_review)
        audit.record(
            kind="approve",
            actor=reviewer.get_username(),
            request_id=item.request_id,
            item_id=item.id,
            action=item.action_under_review,
        )
        return _finish_if_approved(item, now)


def review_edit(*, item_id: int, reviewer: User, tool_calls: list[dict[str, Any]]) -> ReviewItem:
    """Replaces the action under review with the reviewer's version, once it passes the validators.

    The editor's own approval counts for the edited action; earlier approvals were for another
    action and no longer count.
    """
    now = timezone.now()
    with transaction.atomic():
        item = _locked_item(item_id)
        _check_may_decide(item, reviewer, now)
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
        action = tool_calls_action(tool_calls)
        if item.action_under_review:
            action["id"] = item.action_under_review["id"]  # the agent's idempotency key stays stable
        ReviewItem.objects.filter(id=item.id).update(action_under_review=action)
        item.action_under_review = action
        item.approvals.all().delete()
        Approval.objects.create(item=item, reviewer=reviewer, action=action)
        audit.record(
            kind="edit",
            actor=reviewer.get_username(),
            request_id=item.request_id,
            item_id=item.id,
            action=action,
        )
        return _finish_if_approved(item, now)


def review_deny(*, item_id: int, reviewer: User, reason: str) -> ReviewItem:
    """Denies the action. A reason is required: it is what the next model learns from."""
    if not reason.strip():
        raise ApplicationError("reason_required", "a denial needs a reason")
    now = timezone.now()
    with transaction.atomic():
        item = _locked_item(item_id)
        _check_may_decide(item, reviewer, now)
        return _finish(item, reviewer, now, decision=GoldenTrace.Decision.DENY, reason=reason.strip())


def _finish_if_approved(item: ReviewItem, now: Any) -> ReviewItem:
    approvals = list(item.approvals.select_related("reviewer"))
    if len(approvals) < item.required_approvals:
        item.refresh_from_db()
        transaction.on_commit(lambda: live.push_item_changed(item))
        return item
    edited = item.action_under_review != item.request.proposal
    return _finish(
        item,
        approvals[-1].reviewer,
        now,
        decision=GoldenTrace.Decision.EDIT if edited else GoldenTrace.Decision.APPROVE,
        approvers=[a.reviewer.get_username() for a in approvals],
    )


def _finish(
    item: ReviewItem,
    reviewer: User,
    now: Any,
    *,
    decision: str,
    reason: str = "",
    approvers: list[str] | None = None,
) -> ReviewItem:
    """Releases or denies the request, with its golden trace and audit entry, in one transaction."""
    request = item.request
    released = decision != GoldenTrace.Decision.DENY
    final_action = item.action_under_review if released else None
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
        "approvers": approvers or [],
        "decision": decision,
        "reason": reason,
        "policy": (request.decision or {}).get("policy"),
        "hold_reason": item.hold_reason,
        "adjudication": item.adjudication,
        # What the pipeline knew stays in the trail: which model proposed, and why it climbed.
        "model": (request.decision or {}).get("model"),
        "tier": (request.decision or {}).get("tier"),
        "escalation_trigger": (request.decision or {}).get("escalation_trigger"),
    }
    moved = move_request(
        request.id,
        from_statuses=[RequestStatus.AWAITING_REVIEW],
        to_status=RequestStatus.RELEASED if released else RequestStatus.DENIED,
        action=final_action,
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
        final_action=final_action,
        decision=decision,
        reason=reason,
        reviewer=reviewer,
        time_to_decision_ms=int((now - item.created_at).total_seconds() * 1000),
    )
    audit.record(
        kind=f"decision.{decision}",
        actor=reviewer.get_username(),
        request_id=request.id,
        item_id=item.id,
        action=final_action,
        reason=reason,
        approvers=approvers or [],
    )
    item.refresh_from_db()
    transaction.on_commit(lambda: live.push_item_removed(item))
    return item
