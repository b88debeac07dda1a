"""What becomes of a proposal: the policy's decision carried out (release, deny, adjudicate, hold).

Each step is one guarded move that also writes what the step decided (the proposal, the
decision trail), so a request takes one write per step. The decision trail (``Request.decision``)
says who or what decided (``DecisionBy``), which policy matched and why, the model and tier that
proposed, the uncertainty and the escalation trigger.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from reviewq import audit
from reviewq.models import DecisionBy, Request, RequestStatus, ReviewItem, RiskPolicy
from reviewq.notify import alerts, finality, push
from reviewq.notify.finish import finish_request
from reviewq.pipeline.adjudication import adjudicate
from reviewq.pipeline.ladder import Outcome
from reviewq.pipeline.policies import PolicyDecision, after_adjudication
from reviewq.transitions import move_request

logger = logging.getLogger(__name__)

# Where a request stands once a model has proposed an action: the policy moves it on from here.
PROPOSED = (RequestStatus.PROPOSING, RequestStatus.ESCALATED)
# Every state the pipeline may hold a request from.
HOLDABLE = (RequestStatus.ROUTING, *PROPOSED, RequestStatus.ADJUDICATING)


def apply_policy(request: Request, outcome: Outcome, decision: PolicyDecision) -> None:
    """Carries out ``decision`` on the validated action of ``outcome``."""
    action = outcome.action
    assert action is not None
    request.proposal = action
    trail = {
        "by": DecisionBy.POLICY,
        **decision.as_dict(),
        "model": outcome.model,
        "tier": outcome.tier,
        "proposed_by": request.proposed_by,
        "uncertainty": outcome.uncertainty,
        "escalation_trigger": outcome.trigger or None,
        # Kinds and places only: the values stay in the action, not copied into more records.
        "pii_found": [{"kind": finding.kind, "path": finding.path} for finding in decision.pii],
    }
    if decision.decision == RiskPolicy.Decision.AUTO:
        release(request, PROPOSED, action, trail)
    elif decision.decision == RiskPolicy.Decision.BLOCK:
        finish_request(
            request.id,
            from_statuses=PROPOSED,
            to_status=RequestStatus.DENIED,
            known_callback_url=request.callback_url,
            proposal=action,
            decision=trail,
        )
    elif decision.decision == RiskPolicy.Decision.ADJUDICATE:
        _adjudicate(request, action, decision, trail)
    else:
        hold(request, reason=decision.reason, decision=decision, trail=trail)


def release(
    request: Request, from_statuses: Iterable[str], action: dict[str, Any], trail: dict[str, Any]
) -> None:
    finish_request(
        request.id,
        from_statuses=from_statuses,
        to_status=RequestStatus.RELEASED,
        known_callback_url=request.callback_url,
        proposal=action,
        action=action,
        decision=trail,
    )


def _adjudicate(
    request: Request, action: dict[str, Any], decision: PolicyDecision, trail: dict[str, Any]
) -> None:
    """Two-stage verification: the policy decides what each of the second model's verdicts leads to."""
    policy = decision.policy
    assert policy is not None
    if not move_request(
        request.id, from_statuses=PROPOSED, to_status=RequestStatus.ADJUDICATING, proposal=action
    ):
        return  # taken over by another worker
    verdict = adjudicate(request, action, policy_reason=decision.reason, tier=policy.adjudicator_tier)
    trail = {**trail, "adjudication": verdict.as_dict()}
    then = after_adjudication(policy, verdict.verdict)
    if then == RiskPolicy.Decision.AUTO:
        release(request, [RequestStatus.ADJUDICATING], action, {**trail, "decision": "adjudicated"})
    elif then == RiskPolicy.Decision.BLOCK:
        finish_request(
            request.id,
            from_statuses=[RequestStatus.ADJUDICATING],
            to_status=RequestStatus.DENIED,
            known_callback_url=request.callback_url,
            decision={**trail, "decision": "adjudicated"},
        )
    else:
        judge = verdict.model or "none"
        reason = f"{decision.reason}; the adjudicator ({judge}) said {verdict.verdict}: {verdict.reason}"
        hold(request, reason=reason, decision=decision, trail=trail, adjudication=verdict.as_dict())


def hold(
    request: Request,
    *,
    reason: str,
    decision: PolicyDecision | None = None,
    trail: dict[str, Any] | None = None,
    adjudication: dict[str, Any] | None = None,
) -> None:
    """Puts the request in front of a human, with the reason it was held (``request.proposal``
    is the action under review, or None when no model produced a valid one)."""
    policy = decision.policy if decision else None
    now = timezone.now()
    sla = policy.sla_seconds if policy else 900
    expiry = policy.expiry_seconds if policy else settings.REVIEW_DEFAULT_EXPIRY_SECONDS
    trail = trail or {
        "by": DecisionBy.POLICY,
        **(decision.as_dict() if decision else {"decision": RiskPolicy.Decision.HUMAN, "reason": reason}),
    }
    with transaction.atomic():
        if not move_request(
            request.id,
            from_statuses=HOLDABLE,
            to_status=RequestStatus.AWAITING_REVIEW,
            proposal=request.proposal,
            decision=trail,
        ):
            return  # taken over by another worker
        item = ReviewItem.objects.create(
            request=request,
            policy=policy,
            hold_reason=reason,
            risk_tags=decision.risk_tags if decision else [],
            reviewer_group_id=policy.reviewer_group_id if policy else None,
            required_approvals=max(1, policy.required_approvals) if policy else 1,
            action_under_review=request.proposal,
            adjudication=adjudication,
            sla_due_at=now + timedelta(seconds=sla),
            expires_at=now + timedelta(seconds=expiry),
        )
        audit.record(kind="hold", actor="system", request_id=request.id, item_id=item.id, reason=reason)
        finality.announce_on_commit(request.id)  # wakes agents waiting until it is held (?until=held)
        transaction.on_commit(lambda: push.push_item_upserted(item))
        transaction.on_commit(lambda: alerts.page_if_nobody_watching(item.id))
    logger.info("request %s held for review: %s", request.id, reason)
