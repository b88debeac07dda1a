"""The request pipeline: route, propose, validate, apply the risk policy, release or hold.

``run_pipeline`` is idempotent: it claims the request with a guarded move out of ``received``
and stops quietly at any step where another worker (or the sweeper) has taken the request over.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from reviewq import live
from reviewq.models import Request, RequestStatus, ReviewItem, RiskPolicy
from reviewq.policies import PolicyDecision, decide_action
from reviewq.transitions import move_request
from router.backends.base import BackendError
from router.backends.registry import get_backend
from router.prompts import build_prompt, estimate_tokens, parse_answer, task_type_of
from router.routing import NoModelAvailable, Route, choose_model
from router.validators import issues_as_feedback
from telemetry.models import ModelCall
from telemetry.services import model_call_record

logger = logging.getLogger(__name__)


def run_pipeline(request_id: Any) -> None:
    if not move_request(
        request_id,
        from_statuses=[RequestStatus.RECEIVED],
        to_status=RequestStatus.ROUTING,
        pipeline_runs=F("pipeline_runs") + 1,
    ):
        return  # another worker owns it, or it is already done: a redelivered task
    try:
        request = Request.objects.get(id=request_id)
    except Request.DoesNotExist:
        return  # deleted in the meantime (retention): nothing to do

    task_type = task_type_of(request.task_type, request.tools)
    prompt = build_prompt(task_type, messages=request.messages, tools=request.tools)
    try:
        route = choose_model(task_type, prompt_tokens=estimate_tokens(prompt))
    except NoModelAvailable as exc:
        _hold(request, from_status=RequestStatus.ROUTING, reason=f"not routed: {exc}")
        return
    if not move_request(
        request.id,
        from_statuses=[RequestStatus.ROUTING],
        to_status=RequestStatus.PROPOSING,
        route=route.as_dict(),
    ):
        return

    action, failure = _propose(request, route)
    if action is None:
        _hold(request, from_status=RequestStatus.PROPOSING, reason=failure)
        return
    if not move_request(
        request.id,
        from_statuses=[RequestStatus.PROPOSING],
        to_status=RequestStatus.VALIDATING,
        proposal=action,
    ):
        return
    request.route, request.proposal = route.as_dict(), action
    _apply_policy(request, action)


def _propose(request: Request, route: Route) -> tuple[dict[str, Any] | None, str]:
    """Asks the routed model for an action, retrying with its errors. Returns (action, failure)."""
    spec = route.model
    try:
        backend = get_backend(spec)
    except BackendError as exc:
        model_call_record(
            request_id=request.id,
            spec=spec,
            purpose=ModelCall.Purpose.PROPOSE,
            attempt=1,
            error=str(exc),
            trigger="backend_error",
        )
        return None, f"model {spec.name} is unavailable: {exc}"

    feedback = ""
    attempts = 1 + settings.PIPELINE_MAX_SLM_RETRIES
    failure = ""
    for attempt in range(1, attempts + 1):
        purpose = ModelCall.Purpose.PROPOSE if attempt == 1 else ModelCall.Purpose.RETRY
        prompt = build_prompt(
            route.task_type, messages=request.messages, tools=request.tools, feedback=feedback
        )
        try:
            generation = backend.generate(prompt)
        except BackendError as exc:
            model_call_record(
                request_id=request.id,
                spec=spec,
                purpose=purpose,
                attempt=attempt,
                error=str(exc),
                trigger="backend_error",
            )
            return None, f"model {spec.name} failed: {exc}"
        parsed, action, issues = parse_answer(route.task_type, generation.text, tools=request.tools)
        trigger = (
            "" if not issues else ("validation_failed" if attempt < attempts else "validation_failed_final")
        )
        model_call_record(
            request_id=request.id,
            spec=spec,
            purpose=purpose,
            attempt=attempt,
            generation=generation,
            parsed_output=parsed,
            issues=issues,
            trigger=trigger,
        )
        if action is not None:
            return action, ""
        feedback = issues_as_feedback(issues)
        failure = "; ".join(str(issue) for issue in issues)
    return None, f"{spec.name}'s proposal failed validation after {attempts} attempts: {failure}"


def _apply_policy(request: Request, action: dict[str, Any]) -> None:
    if action["type"] == "tool_calls":
        decision = decide_action([call["name"] for call in action["tool_calls"]])
    else:
        # A plain text reply changes nothing outside the conversation.
        decision = PolicyDecision(RiskPolicy.Decision.AUTO, "a text reply has no side effects")

    trail = {"by": "policy", **decision.as_dict(), "model": request.route.get("model")}
    if decision.decision == RiskPolicy.Decision.AUTO:
        move_request(
            request.id,
            from_statuses=[RequestStatus.VALIDATING],
            to_status=RequestStatus.RELEASED,
            action=action,
            decision=trail,
        )
    elif decision.decision == RiskPolicy.Decision.BLOCK:
        move_request(
            request.id,
            from_statuses=[RequestStatus.VALIDATING],
            to_status=RequestStatus.DENIED,
            decision=trail,
        )
    else:
        reason = decision.reason
        if decision.decision == RiskPolicy.Decision.ADJUDICATE:
            reason += "; no adjudicator is configured, so a human decides"
        _hold(request, from_status=RequestStatus.VALIDATING, reason=reason, decision=decision)


def _hold(request: Request, *, from_status: str, reason: str, decision: PolicyDecision | None = None) -> None:
    """Puts the request in front of a human, with the reason it was held."""
    policy = decision.policy if decision else None
    now = timezone.now()
    sla = policy.sla_seconds if policy else 900
    expiry = policy.expiry_seconds if policy else settings.REVIEW_DEFAULT_EXPIRY_SECONDS
    trail = {"by": "policy", **(decision.as_dict() if decision else {"decision": "human", "reason": reason})}
    with transaction.atomic():
        if not move_request(
            request.id, from_statuses=[from_status], to_status=RequestStatus.AWAITING_REVIEW, decision=trail
        ):
            return
        item = ReviewItem.objects.create(
            request=request,
            policy=policy,
            hold_reason=reason,
            risk_tags=decision.risk_tags if decision else [],
            sla_due_at=now + timedelta(seconds=sla),
            expires_at=now + timedelta(seconds=expiry),
        )
        transaction.on_commit(lambda: live.push_item_added(item))
    logger.info("request %s held for review: %s", request.id, reason)
