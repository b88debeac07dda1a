"""The request pipeline: route, propose, validate, escalate, apply the risk policy, release or hold.

``run_pipeline`` is idempotent: it claims the request with a guarded move out of ``received``
and stops quietly at any step where another worker (or the sweeper) has taken the request over.
The ladder (small model, retries, LLM) is in ladder.py; what the policy's decision leads to is
in outcome.py; the rules themselves are in policies.py.
"""

from __future__ import annotations

from typing import Any

from django.db.models import F

from reviewq.config.snapshot import Configuration, current_configuration, stamp_subquery
from reviewq.models import DecisionBy, ProposalSource, Request, RequestStatus, RiskPolicy, ToolChoice
from reviewq.pipeline.ladder import Outcome, TakenOver, climb_slm_rungs, escalate, route_slm
from reviewq.pipeline.outcome import apply_policy, hold
from reviewq.pipeline.policies import PolicyDecision, decide_answer
from reviewq.runtime.dispatch import later
from reviewq.runtime.leases import keeping_lease
from reviewq.services.intake import proposal_issues
from reviewq.transitions import move_request
from router.contracts import Trigger
from router.prompts import TaskSpec, build_prompt, task_type_of
from router.validators import issues_as_feedback


def run_pipeline(request_id: Any) -> None:
    """Takes a received request to released, denied or a human's queue."""
    request = (
        Request.objects.filter(id=request_id, status=RequestStatus.RECEIVED)
        .annotate(config_stamp=stamp_subquery())
        .first()
    )
    if request is None:
        return  # another worker owns it, it is already done (a redelivered task), or it is gone
    # Ops' configuration, from this process's snapshot unless the stamp read with the row changed.
    configuration = current_configuration(request.config_stamp)
    if request.proposed_by != ProposalSource.MODEL:
        gate_proposed_action(request, configuration)
        return
    task = task_spec_for(request, configuration)
    escalation = configuration.escalation_for(task.task_type)
    # Routing reads only configuration, so it happens before the claim: the claim and the route
    # are then one guarded UPDATE (each write is a commit on the hot path). It sizes the whole
    # prompt; each small-model rung then gets it cut to its own context (router/context_budget.py).
    prompt = build_prompt(task)
    routes, no_route = route_slm(task, prompt, configuration)
    if routes:
        request.route = {
            **routes[0].as_dict(),
            "task_type_reason": task.task_type_reason,
            "rungs": [route.model.name for route in routes],
        }
    if not move_request(
        request.id,
        from_statuses=[RequestStatus.RECEIVED],
        to_status=RequestStatus.PROPOSING if routes else RequestStatus.ROUTING,
        pipeline_runs=F("pipeline_runs") + 1,
        **({"route": request.route} if routes else {}),
    ):
        return  # lost the claim to another worker

    if routes:
        # A shadow adapter answers the same request beside its base, off the hot path (never released).
        for adapter in configuration.shadow_adapters.get(routes[0].model.id, ()):
            later("reviewq.tasks.shadow_propose", str(request.id), adapter.id)
    with keeping_lease(request.id):  # a long proposal is not swept while it runs
        try:
            outcome = climb_slm_rungs(request, task, escalation, routes) if routes else no_route
            decision = _decision_for(request, outcome, configuration)
            if decision is not None and decision.needs_llm_proposal(outcome.tier):
                assert decision.policy is not None
                outcome.action, outcome.trigger = None, Trigger.POLICY_REQUIRES_LLM
                outcome.failure = f"policy {decision.policy.name!r} requires an LLM-tier proposal"
            if outcome.action is None:
                outcome = escalate(request, task, escalation, outcome, configuration)
                decision = _decision_for(request, outcome, configuration)
        except TakenOver:
            return
        if outcome.action is None or decision is None:
            trail = {
                "by": DecisionBy.PIPELINE,
                "decision": RiskPolicy.Decision.HUMAN,
                "reason": outcome.failure,
                "model": outcome.model or None,
                "tier": outcome.tier or None,
                "escalation_trigger": outcome.trigger or None,
            }
            hold(request, reason=outcome.failure, trail=trail)
            return
        apply_policy(request, outcome, decision)


def gate_proposed_action(request: Request, configuration: Configuration) -> None:
    """A proposal the agent (or its upstream LLM) made: no model of reviewq's proposes; the
    validators run again (ops' rules may have changed since intake) and the risk policies decide,
    as on a model's proposal. An invalid one is held for a human, never released."""
    if not move_request(
        request.id,
        from_statuses=[RequestStatus.RECEIVED],
        to_status=RequestStatus.PROPOSING,
        pipeline_runs=F("pipeline_runs") + 1,
    ):
        return  # lost the claim to another worker
    proposer = request.agent_key.name if request.proposed_by == ProposalSource.AGENT else "upstream LLM"
    issues = proposal_issues(_payload_of(request), request.proposal or {})
    if issues:
        reason = f"the {request.proposed_by}'s proposal fails validation: " + issues_as_feedback(issues)
        trail = {
            "by": DecisionBy.PIPELINE,
            "decision": RiskPolicy.Decision.HUMAN,
            "reason": reason,
            "proposed_by": request.proposed_by,
            "model": proposer,
        }
        hold(request, reason=reason, trail=trail)
        return
    outcome = Outcome(request.proposal, model=proposer)
    decision = _decision_for(request, outcome, configuration)
    assert decision is not None
    apply_policy(request, outcome, decision)


def _payload_of(request: Request) -> dict[str, Any]:
    return {
        "messages": request.messages,
        "tools": request.tools,
        "task_type": request.task_type,
        "response_schema": request.response_schema,
        "labels": request.labels,
    }


def _decision_for(request: Request, outcome: Outcome, configuration: Configuration) -> PolicyDecision | None:
    """The policy decision on the outcome's action, computed once per proposal (None: no action)."""
    if outcome.action is None:
        return None
    return decide_answer(
        outcome.action,
        request.tools,
        uncertainty=outcome.uncertainty,
        tier=outcome.tier,
        configuration=configuration,
    )


def task_spec_for(request: Request, configuration: Configuration | None = None) -> TaskSpec:
    """What the models are asked to do for ``request``, with the business rules of its tools."""
    task_type, reason = task_type_of(
        hint=request.task_type,
        tools=request.tools,
        response_schema=request.response_schema,
        labels=request.labels,
    )
    configuration = configuration or current_configuration()
    return TaskSpec(
        task_type=task_type,
        messages=request.messages,
        tools=request.tools,
        response_schema=request.response_schema,
        labels=request.labels,
        parallel_tool_calls=request.parallel_tool_calls,
        may_reply=request.tool_choice == ToolChoice.AUTO,
        output_format=request.output_format,
        rules=configuration.tool_rules(tool["function"]["name"] for tool in request.tools),
        task_type_reason=reason,
    )
