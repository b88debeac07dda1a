"""The request pipeline: route, propose, validate, escalate, apply the risk policy, release or hold.

``run_pipeline`` is idempotent: it claims the request with a guarded move out of ``received``
and stops quietly at any step where another worker (or the sweeper) has taken the request over.

The escalation ladder climbs on explicit triggers only (see ``Trigger``): the SLM retries with
its validation errors, then the LLM gets the whole conversation plus the SLM's failed attempts,
then a human decides. Each trigger can be switched off per task type (EscalationPolicy).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from reviewq import alerts, audit, live
from reviewq.adjudication import adjudicate
from reviewq.configuration import Configuration, current_configuration, stamp_subquery
from reviewq.models import Request, RequestStatus, ReviewItem, RiskPolicy
from reviewq.policies import PolicyDecision, calls_of, decide_action
from reviewq.transitions import move_request
from router.backends.base import BackendError, Generation, Prompt
from router.backends.registry import get_backend
from router.models import EscalationPolicy, ModelSpec
from router.pii import PIIFinding, find_pii
from router.prompts import (
    INTENT_OUT_OF_SCOPE,
    TOOL_USE,
    TaskSpec,
    build_prompt,
    estimate_tokens,
    intent_task,
    parse_answer,
    task_type_of,
)
from router.routing import NoModelAvailable, Route, choose_model
from router.validators import ValidationIssue, issues_as_feedback
from telemetry.models import ModelCall
from telemetry.services import model_call_record, uncertainty_from_logprobs

logger = logging.getLogger(__name__)


class Trigger:
    """Why a request climbs the ladder. Stored on the ModelCall that caused the next step."""

    VALIDATION_FAILED = "validation_failed"
    UNCERTAINTY = "uncertainty"
    OUT_OF_SCOPE = "out_of_scope"
    CONTEXT_TOO_LONG = "context_too_long"
    POLICY_REQUIRES_LLM = "policy_requires_llm"
    NO_SLM = "no_slm"
    BACKEND_ERROR = "backend_error"


@dataclass
class Attempt:
    """One model answer, kept so the next rung of the ladder can see what went wrong."""

    model: str
    tier: str
    raw_output: str
    issues: list[ValidationIssue] = field(default_factory=list)
    note: str = ""


@dataclass
class Outcome:
    action: dict[str, Any] | None
    tier: str = ""
    model: str = ""
    trigger: str = ""
    failure: str = ""
    attempts: list[Attempt] = field(default_factory=list)
    uncertainty: float | None = None


# Where a request stands once a model has proposed an action: the policy moves it on from here.
PROPOSED = (RequestStatus.PROPOSING, RequestStatus.ESCALATED)


def run_pipeline(request_id: Any) -> None:
    request = (
        Request.objects.filter(id=request_id, status=RequestStatus.RECEIVED)
        .annotate(config_stamp=stamp_subquery())
        .first()
    )
    if request is None:
        return  # another worker owns it, it is already done (a redelivered task), or it is gone
    # Ops' configuration, from this process's snapshot unless the stamp read with the row changed.
    configuration = current_configuration(request.config_stamp)
    task = task_spec_for(request, configuration)
    escalation = configuration.escalation_for(task.task_type)
    # Routing reads only configuration, so it happens before the claim: the claim and the route
    # are then one guarded UPDATE (each write is a commit on the hot path). The prompt it sizes
    # is the one the small model then gets.
    prompt = build_prompt(task)
    route, no_route = _route_slm(task, prompt, configuration)
    if route:
        request.route = {**route.as_dict(), "task_type_reason": task.task_type_reason}
    if not move_request(
        request.id,
        from_statuses=[RequestStatus.RECEIVED],
        to_status=RequestStatus.PROPOSING if route else RequestStatus.ROUTING,
        pipeline_runs=F("pipeline_runs") + 1,
        **({"route": request.route} if route else {}),
    ):
        return  # lost the claim to another worker

    outcome = _propose_with_slm(request, task, escalation, route, prompt) if route else no_route
    decision: PolicyDecision | None = None  # computed once for the proposal that goes on
    if outcome.action is not None and outcome.tier == ModelSpec.Tier.SLM:
        decision = _decide(request, outcome, configuration)
        if decision.policy is not None and decision.policy.requires_llm:
            outcome.action, outcome.trigger = None, Trigger.POLICY_REQUIRES_LLM
            outcome.failure = f"policy {decision.policy.name!r} requires an LLM-tier proposal"
            decision = None
    if outcome.action is None:
        outcome = _escalate(request, task, escalation, outcome, configuration)
    if outcome.action is None:
        trail = {
            "by": "pipeline",
            "decision": "human",
            "reason": outcome.failure,
            "model": outcome.model or None,
            "tier": outcome.tier or None,
            "escalation_trigger": outcome.trigger or None,
        }
        _hold(request, reason=outcome.failure, trail=trail)
        return
    request.proposal = outcome.action
    _apply_policy(request, outcome, decision or _decide(request, outcome, configuration))


def task_spec_for(request: Request, configuration: Configuration | None = None) -> TaskSpec:
    """What the models are asked to do for ``request``, with the business rules of its tools."""
    task_type, reason = task_type_of(
        hint=request.task_type,
        tools=request.tools,
        response_schema=request.response_schema,
        labels=request.labels,
    )
    configuration = configuration or current_configuration()
    tools = configuration.tools_named(tool["function"]["name"] for tool in request.tools)
    return TaskSpec(
        task_type=task_type,
        messages=request.messages,
        tools=request.tools,
        response_schema=request.response_schema,
        labels=request.labels,
        parallel_tool_calls=request.parallel_tool_calls,
        output_format=request.output_format,
        rules={name: list(tool.rules or []) for name, tool in tools.items()},
        task_type_reason=reason,
    )


# --- The small model ---


def _route_slm(task: TaskSpec, prompt: Prompt, configuration: Configuration) -> tuple[Route | None, Outcome]:
    """The small model for ``prompt``, or None and the outcome that sends the request up the ladder."""
    try:
        route = _choose_model(task, prompt, ModelSpec.Tier.SLM, configuration)
    except NoModelAvailable as exc:
        trigger = Trigger.CONTEXT_TOO_LONG if exc.context_too_long else Trigger.NO_SLM
        return None, Outcome(None, trigger=trigger, failure=f"not routed to a small model: {exc}")
    return route, Outcome(None)


def _choose_model(task: TaskSpec, prompt: Prompt, tier: str, configuration: Configuration) -> Route:
    """The cheapest enabled model of ``tier`` for ``task`` whose context fits ``prompt`` (raises
    NoModelAvailable)."""
    prompt_tokens = estimate_tokens(prompt)
    return choose_model(task.task_type, prompt_tokens=prompt_tokens, tier=tier, models=configuration.models)


def _propose_with_slm(
    request: Request, task: TaskSpec, escalation: EscalationPolicy, route: Route, prompt: Prompt
) -> Outcome:
    backend, error = _backend(request, route.model)
    if backend is None:
        return Outcome(None, trigger=Trigger.BACKEND_ERROR, failure=error)
    if task.task_type == TOOL_USE and escalation.classify_intent:
        out_of_scope = _out_of_scope(request, task, route.model, backend)
        if out_of_scope:
            return Outcome(None, trigger=Trigger.OUT_OF_SCOPE, failure=out_of_scope)

    outcome = Outcome(None, tier=route.model.tier, model=route.model.name)
    feedback = ""
    attempts = 1 + escalation.max_slm_retries
    for attempt in range(1, attempts + 1):
        purpose = ModelCall.Purpose.PROPOSE if attempt == 1 else ModelCall.Purpose.RETRY
        try:
            generation = backend.generate(build_prompt(task, feedback=feedback) if feedback else prompt)
        except BackendError as exc:
            _record_failure(request, route.model, purpose, attempt, exc)
            outcome.trigger, outcome.failure = (
                Trigger.BACKEND_ERROR,
                f"model {route.model.name} failed: {exc}",
            )
            return outcome
        confidence = _confidence(generation)
        parsed, action, issues = parse_answer(task, generation.text, confidence=confidence)
        outcome.attempts.append(Attempt(route.model.name, route.model.tier, generation.text, issues))
        trigger = ""
        if issues:
            trigger = Trigger.VALIDATION_FAILED
        elif _too_uncertain(generation, escalation):
            trigger = Trigger.UNCERTAINTY
            outcome.attempts[-1].note = (
                f"uncertainty {uncertainty_from_logprobs(generation.decision_logprobs) or {}} is above the "
                f"threshold {escalation.uncertainty_threshold}"
            )
        model_call_record(
            request_id=request.id,
            spec=route.model,
            purpose=purpose,
            attempt=attempt,
            generation=generation,
            parsed_output=parsed,
            issues=issues,
            trigger=trigger,
            # The ladder climbs past the SLM on uncertainty at once, on bad answers after the retries.
            escalated=trigger == Trigger.UNCERTAINTY or (bool(trigger) and attempt == attempts),
        )
        if not trigger:
            outcome.action = action
            scores = uncertainty_from_logprobs(generation.decision_logprobs)
            outcome.uncertainty = scores["score"] if scores else None
            return outcome
        if trigger == Trigger.UNCERTAINTY:
            # A retry of a greedy decoder with no new information gives the same answer: climb.
            outcome.trigger, outcome.failure = trigger, outcome.attempts[-1].note
            return outcome
        feedback = issues_as_feedback(issues)
    failure = "; ".join(str(issue) for issue in outcome.attempts[-1].issues)
    outcome.trigger = Trigger.VALIDATION_FAILED
    outcome.failure = f"{route.model.name}'s proposal failed validation after {attempts} attempts: {failure}"
    return outcome


def _out_of_scope(request: Request, task: TaskSpec, spec: ModelSpec, backend: Any) -> str:
    """Asks the SLM whether any tool fits; a non-empty answer says why the request is out of scope."""
    intent = intent_task(task)
    try:
        generation = backend.generate(build_prompt(intent))
    except BackendError as exc:
        _record_failure(request, spec, ModelCall.Purpose.ROUTE, 1, exc)
        return ""  # the check is advisory: without it the proposal goes ahead
    parsed, action, issues = parse_answer(intent, generation.text, confidence=_confidence(generation))
    out_of_scope = action is not None and action["label"] == INTENT_OUT_OF_SCOPE
    model_call_record(
        request_id=request.id,
        spec=spec,
        purpose=ModelCall.Purpose.ROUTE,
        attempt=1,
        generation=generation,
        parsed_output=parsed,
        issues=issues,
        trigger=Trigger.OUT_OF_SCOPE if out_of_scope else "",
        escalated=out_of_scope,
    )
    return f"{spec.name} judged that none of the agent's tools fits the request" if out_of_scope else ""


def _confidence(generation: Generation) -> float | None:
    if not generation.decision_logprobs:
        return None
    return math.exp(min(generation.decision_logprobs))


def _too_uncertain(generation: Generation, escalation: EscalationPolicy) -> bool:
    if escalation.uncertainty_threshold is None:
        return False
    uncertainty = uncertainty_from_logprobs(generation.decision_logprobs)
    return uncertainty is not None and uncertainty["score"] > escalation.uncertainty_threshold


# --- The large model ---


def _escalate(
    request: Request, task: TaskSpec, escalation: EscalationPolicy, slm: Outcome, configuration: Configuration
) -> Outcome:
    """The LLM rung: the whole conversation, the SLM's failed attempts and their errors."""
    if not escalation.trigger_enabled(slm.trigger):
        slm.failure += f" (escalation on {slm.trigger} is switched off for {task.task_type})"
        return slm
    if not move_request(
        request.id,
        from_statuses=[RequestStatus.ROUTING, RequestStatus.PROPOSING],
        to_status=RequestStatus.ESCALATED,
    ):
        return Outcome(None, trigger="lost")
    try:
        # Sized without the earlier answers: a long list of them must not make "no model fits"
        # send to a human a request that an LLM could take.
        route = _choose_model(task, build_prompt(task), ModelSpec.Tier.LLM, configuration)
    except NoModelAvailable as exc:
        return Outcome(
            None,
            trigger=slm.trigger,
            failure=f"{slm.failure}; escalation ({slm.trigger}) is needed but {exc}, so a human decides",
            attempts=slm.attempts,
        )
    backend, error = _backend(request, route.model)
    if backend is None:
        return Outcome(
            None, trigger=Trigger.BACKEND_ERROR, failure=f"{slm.failure}; {error}", attempts=slm.attempts
        )

    attempts = list(slm.attempts)
    for attempt in range(1, escalation.max_llm_attempts + 1):
        prompt = build_prompt(task, feedback=_ladder_feedback(slm.trigger, attempts))
        try:
            generation = backend.generate(prompt)
        except BackendError as exc:
            _record_failure(request, route.model, ModelCall.Purpose.ESCALATE, attempt, exc)
            return Outcome(
                None,
                trigger=Trigger.BACKEND_ERROR,
                failure=f"{slm.failure}; LLM {route.model.name} failed: {exc}",
            )
        parsed, action, issues = parse_answer(task, generation.text)
        attempts.append(Attempt(route.model.name, route.model.tier, generation.text, issues))
        model_call_record(
            request_id=request.id,
            spec=route.model,
            purpose=ModelCall.Purpose.ESCALATE,
            attempt=attempt,
            generation=generation,
            parsed_output=parsed,
            issues=issues,
            trigger=Trigger.VALIDATION_FAILED if issues else "",
        )
        if action is not None:
            return Outcome(
                action, tier=route.model.tier, model=route.model.name, trigger=slm.trigger, attempts=attempts
            )
    failure = "; ".join(str(issue) for issue in attempts[-1].issues)
    return Outcome(
        None,
        trigger=Trigger.VALIDATION_FAILED,
        failure=f"{slm.failure}; the LLM's proposal also failed validation after "
        f"{escalation.max_llm_attempts} attempts: {failure}",
        attempts=attempts,
    )


def _ladder_feedback(trigger: str, attempts: list[Attempt]) -> str:
    """The earlier answers that failed validation, with their errors, for the next model to avoid.

    A valid answer that climbed only because the SLM was unsure, or because a policy wants an LLM,
    is left out: it has no error to avoid, it would anchor the LLM on the small model's guess, and
    it would lengthen the LLM's prompt.
    """
    failed = [attempt for attempt in attempts if attempt.issues]
    if not failed:
        return ""
    lines = [f"Earlier answers to this request were not accepted (reason: {trigger}):"]
    for index, attempt in enumerate(failed, 1):
        problems = "; ".join(str(issue) for issue in attempt.issues)
        lines.append(
            f"{index}. {attempt.model} ({attempt.tier}) answered {attempt.raw_output[:800]} — {problems}"
        )
    lines.append("Answer with one valid answer that avoids these problems.")
    return "\n".join(lines)


# --- Shared ---


def _backend(request: Request, spec: ModelSpec) -> tuple[Any, str]:
    try:
        return get_backend(spec), ""
    except BackendError as exc:
        _record_failure(request, spec, ModelCall.Purpose.PROPOSE, 1, exc)
        return None, f"model {spec.name} is unavailable: {exc}"


def _record_failure(request: Request, spec: ModelSpec, purpose: str, attempt: int, exc: Exception) -> None:
    model_call_record(
        request_id=request.id,
        spec=spec,
        purpose=purpose,
        attempt=attempt,
        error=str(exc),
        trigger="backend_error",
    )


def _decide(request: Request, outcome: Outcome, configuration: Configuration) -> PolicyDecision:
    action = outcome.action
    assert action is not None
    if action["type"] == "tool_calls":
        return decide_action(
            calls_of(action, request.tools, uncertainty=outcome.uncertainty, tier=outcome.tier),
            configuration=configuration,
        )
    # A reply, an extraction or a label changes nothing outside the conversation.
    return PolicyDecision(RiskPolicy.Decision.AUTO, f"a {action['type']} answer has no side effects")


def _pii_in(action: dict[str, Any]) -> list[PIIFinding]:
    if action["type"] == "tool_calls":
        return [
            finding
            for index, call in enumerate(action["tool_calls"])
            for finding in find_pii(call["arguments"], f"$.tool_calls[{index}].arguments")
        ]
    return find_pii(action.get("data", action.get("content")), "$")


def _apply_policy(request: Request, outcome: Outcome, decision: PolicyDecision) -> None:
    action = outcome.action
    assert action is not None
    trail = {
        "by": "policy",
        **decision.as_dict(),
        "model": outcome.model,
        "tier": outcome.tier,
        "uncertainty": outcome.uncertainty,
        "escalation_trigger": outcome.trigger or None,
        # Kinds and places only: the values stay in the action, not copied into more records.
        "pii_found": [{"kind": f.kind, "path": f.path} for f in _pii_in(action)],
    }
    # The proposal is written by the same UPDATE that moves the request on: one write per step.
    if decision.decision == RiskPolicy.Decision.AUTO:
        _release(request, PROPOSED, action, trail)
    elif decision.decision == RiskPolicy.Decision.BLOCK:
        move_request(
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
        _hold(request, reason=decision.reason, decision=decision, trail=trail)


def _release(
    request: Request, from_statuses: Iterable[str], action: dict[str, Any], trail: dict[str, Any]
) -> None:
    move_request(
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
        return
    verdict = adjudicate(request, action, policy_reason=decision.reason, tier=policy.adjudicator_tier)
    trail = {**trail, "adjudication": verdict.as_dict()}
    if (
        verdict.verdict == "approve"
        and policy.on_adjudicator_approve == RiskPolicy.AdjudicatorApprove.RELEASE
    ):
        _release(request, [RequestStatus.ADJUDICATING], action, {**trail, "decision": "adjudicated"})
    elif verdict.verdict == "reject" and policy.on_adjudicator_reject == RiskPolicy.AdjudicatorReject.DENY:
        move_request(
            request.id,
            from_statuses=[RequestStatus.ADJUDICATING],
            to_status=RequestStatus.DENIED,
            known_callback_url=request.callback_url,
            decision={**trail, "decision": "adjudicated"},
        )
    else:
        judge = verdict.model or "none"
        reason = f"{decision.reason}; the adjudicator ({judge}) said {verdict.verdict}: {verdict.reason}"
        _hold(request, reason=reason, decision=decision, trail=trail, adjudication=verdict.as_dict())


def _hold(
    request: Request,
    *,
    reason: str,
    decision: PolicyDecision | None = None,
    trail: dict[str, Any] | None = None,
    adjudication: dict[str, Any] | None = None,
) -> None:
    """Puts the request in front of a human, with the reason it was held."""
    if not reason:
        return  # the request was taken over by another worker: nothing to hold
    policy = decision.policy if decision else None
    now = timezone.now()
    sla = policy.sla_seconds if policy else 900
    expiry = policy.expiry_seconds if policy else settings.REVIEW_DEFAULT_EXPIRY_SECONDS
    trail = trail or {
        "by": "policy",
        **(decision.as_dict() if decision else {"decision": "human", "reason": reason}),
    }
    with transaction.atomic():
        if not move_request(
            request.id,
            from_statuses=[
                RequestStatus.ROUTING,
                RequestStatus.PROPOSING,
                RequestStatus.ESCALATED,
                RequestStatus.ADJUDICATING,
            ],
            to_status=RequestStatus.AWAITING_REVIEW,
            proposal=request.proposal,
            decision=trail,
        ):
            return
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
        transaction.on_commit(lambda: live.push_item_added(item))
        transaction.on_commit(lambda: alerts.page_if_nobody_watching(item.id))
    logger.info("request %s held for review: %s", request.id, reason)
