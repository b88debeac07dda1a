"""Reviewers' decisions on held items: claim, approve (four-eyes), edit, deny; and ops' flag on a
decision that was a mistake.

Each runs in one transaction with the item locked, checks that this reviewer may decide
(``ReviewItem.check_may_decide``), and records an audit entry; a final decision also moves the
request (``finish_request``) and keeps the golden trace the next model learns from.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.db import transaction
from django.utils import timezone

from reviewq import audit
from reviewq.config.snapshot import current_configuration
from reviewq.errors import ApplicationError
from reviewq.models import Approval, DecisionBy, GoldenTrace, RequestStatus, ReviewItem, RiskPolicy
from reviewq.notify import push
from reviewq.notify.finish import finish_request
from reviewq.pipeline.policies import PolicyDecision, decide_answer
from router.answers import tool_calls_action
from router.validators import validate_tool_call


def _locked_item(item_id: int) -> ReviewItem:
    try:
        return ReviewItem.objects.select_for_update().select_related("request__agent_key").get(id=item_id)
    except ReviewItem.DoesNotExist:
        raise ApplicationError("not_found", f"review item {item_id} does not exist", status=404) from None


def review_claim(*, item_id: int, reviewer: User) -> ReviewItem:
    """Marks the item as being worked on by ``reviewer`` for a while, so others leave it alone."""
    now = timezone.now()
    with transaction.atomic():
        item = _locked_item(item_id)
        item.check_may_decide(reviewer, now)
        ReviewItem.objects.filter(id=item.id).update(
            claimed_by=reviewer, claim_expires_at=now + timedelta(seconds=settings.REVIEW_CLAIM_SECONDS)
        )
        audit.record(kind="claim", actor=reviewer.get_username(), request_id=item.request_id, item_id=item.id)
        item.refresh_from_db()
        transaction.on_commit(lambda: push.push_item_upserted(item))
    return item


def review_approve(
    *, item_id: int, reviewer: User, seen_digest: str | None = None, confirmed_digest: str | None = None
) -> ReviewItem:
    """Approves the action under review; it is released once enough reviewers approved it.

    With a four-eyes policy the first approval is recorded and the item stays pending until a
    second, different reviewer approves the same action. From the browser (``seen_digest`` given):
    the action must still be the one the reviewer saw, and a payment, PII or destructive action
    must have been confirmed by name (``confirmed_digest``).
    """
    now = timezone.now()
    with transaction.atomic():
        item = _locked_item(item_id)
        item.check_may_decide(reviewer, now)
        if item.action_under_review is None:
            raise ApplicationError(
                "no_proposal", "there is no valid proposal to approve; edit or deny it", status=409
            )
        if seen_digest is not None and seen_digest != item.action_digest:
            raise ApplicationError(
                "action_changed", "the action changed since you opened it: look at it again", status=409
            )
        if (
            seen_digest is not None
            and item.needs_confirmed_approval
            and confirmed_digest != item.action_digest
        ):
            raise ApplicationError(
                "confirm_required", f"confirm that you approve {item.action_summary}", status=409
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

    The edited action goes through the risk policies as a model's proposal does, and the stricter
    of the two decisions wins: a policy that blocks it refuses the edit; one that needs more
    approvals or another reviewer group raises the item's. The editor's own approval counts for
    the edited action if they may decide it under those terms; earlier approvals were for another
    action and no longer count.
    """
    now = timezone.now()
    with transaction.atomic():
        item = _locked_item(item_id)
        item.check_may_decide(reviewer, now)
        if not tool_calls:
            raise ApplicationError("invalid_edit", "an edited action needs at least one tool call")
        configuration = current_configuration()
        # Schema and business rules, not grounding: a reviewer's value is evidence in itself.
        rules = configuration.tool_rules(tool["function"]["name"] for tool in item.request.tools)
        for index, call in enumerate(tool_calls):
            issues = validate_tool_call(call, item.request.tools, rules=rules)
            if issues:
                raise ApplicationError(
                    "invalid_edit",
                    f"tool call {index}: " + "; ".join(str(issue) for issue in issues),
                    extra={"errors": [issue.as_dict() for issue in issues], "call_index": index},
                )
        action = tool_calls_action(tool_calls)
        if item.action_under_review:
            action["id"] = item.action_under_review["id"]  # the agent's idempotency key stays stable
        decision = decide_answer(action, item.request.tools, configuration=configuration)
        if decision.decision == RiskPolicy.Decision.BLOCK:
            raise ApplicationError(
                "blocked_by_policy",
                f"{decision.reason}: this action is never released; deny instead",
                status=403,
            )
        _apply_stricter_terms(item, decision)
        item.action_under_review = action
        ReviewItem.objects.filter(id=item.id).update(
            action_under_review=action,
            required_approvals=item.required_approvals,
            reviewer_group_id=item.reviewer_group_id,
            policy=item.policy,
            risk_tags=item.risk_tags,
            hold_reason=item.hold_reason,
        )
        item.approvals.all().delete()
        audit.record(
            kind="edit",
            actor=reviewer.get_username(),
            request_id=item.request_id,
            item_id=item.id,
            action=action,
            policy=decision.policy.name if decision.policy else None,
        )
        try:
            item.check_may_decide(reviewer, now)  # under the edited action's terms
        except ApplicationError:
            item.refresh_from_db()
            transaction.on_commit(lambda: push.push_item_upserted(item))
            return item  # the edit stands; someone of the policy's group approves it
        Approval.objects.create(item=item, reviewer=reviewer, action=action)
        return _finish_if_approved(item, now)


def _apply_stricter_terms(item: ReviewItem, decision: PolicyDecision) -> None:
    """The item's approvals and group as the stricter of its own and the edited action's policy."""
    policy = decision.policy
    item.risk_tags = sorted(set(item.risk_tags or []) | set(decision.risk_tags))
    if policy is None:
        return
    stricter = []
    if policy.required_approvals > item.required_approvals:
        item.required_approvals = policy.required_approvals
        stricter.append(f"{policy.required_approvals} approvals")
    if policy.reviewer_group_id and policy.reviewer_group_id != item.reviewer_group_id:
        item.reviewer_group_id = policy.reviewer_group_id
        stricter.append("its reviewer group")
    if stricter:
        item.policy = policy
        item.hold_reason += (
            f" | The edited action falls under policy {policy.name!r}: {' and '.join(stricter)}."
        )


def review_deny(*, item_id: int, reviewer: User, reason: str) -> ReviewItem:
    """Denies the action. A reason is required: it is what the next model learns from."""
    if not reason.strip():
        raise ApplicationError("reason_required", "a denial needs a reason")
    now = timezone.now()
    with transaction.atomic():
        item = _locked_item(item_id)
        item.check_may_decide(reviewer, now)
        return _finish(item, reviewer, now, decision=GoldenTrace.Decision.DENY, reason=reason.strip())


def _finish_if_approved(item: ReviewItem, now: Any) -> ReviewItem:
    approvals = list(item.approvals.select_related("reviewer"))
    if len(approvals) < item.required_approvals:
        item.refresh_from_db()
        transaction.on_commit(lambda: push.push_item_upserted(item))
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
        "by": DecisionBy.REVIEWER,
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
        "proposed_by": request.proposed_by,
        "escalation_trigger": (request.decision or {}).get("escalation_trigger"),
    }
    moved = finish_request(
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
        proposed_by=request.proposed_by,
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
    transaction.on_commit(lambda: push.push_item_removed(item))
    return item


def golden_traces_flag_bad(*, trace_ids: list[int], actor: User, reason: str) -> int:
    """Marks human decisions as mistakes (a wrong refund approved, a careless edit): exports,
    datasets and training skip them from now on. A reason is required. Returns how many changed."""
    reason = reason.strip()
    if not reason:
        raise ApplicationError("reason_required", "say why the decision was bad")
    flag = {"flagged_bad_at": timezone.now(), "flagged_bad_by": actor, "flagged_bad_reason": reason}
    return _set_bad_flag(trace_ids, actor, flagged=True, fields=flag, reason=reason)


def golden_traces_unflag(*, trace_ids: list[int], actor: User) -> int:
    """Trusts flagged traces again. Returns how many changed."""
    clear = {"flagged_bad_at": None, "flagged_bad_by": None, "flagged_bad_reason": ""}
    return _set_bad_flag(trace_ids, actor, flagged=False, fields=clear)


def _set_bad_flag(
    trace_ids: list[int], actor: User, *, flagged: bool, fields: dict[str, Any], **audited: Any
) -> int:
    """Sets or clears the flag on each trace not already so, with a guarded update and an audit
    entry each. Returns how many changed."""
    changed = 0
    unchanged = {"flagged_bad_at__isnull": flagged}  # not flagged yet, or flagged still
    with transaction.atomic():
        for trace in GoldenTrace.objects.filter(id__in=trace_ids, **unchanged):
            if GoldenTrace.objects.filter(id=trace.id, **unchanged).update(**fields):
                audit.record(
                    kind="trace.flag_bad" if flagged else "trace.unflag",
                    actor=actor.get_username(),
                    request_id=trace.request_id,
                    item_id=trace.review_item_id,
                    trace_id=trace.id,
                    **audited,
                )
                changed += 1
    return changed
