"""The escalation ladder: small models propose, retry with their errors, and hand over.

The ladder climbs on explicit triggers only (``router.contracts.Trigger``). Its small-model rungs
are the enabled SLMs that serve the request's task type and shape, cheapest first
(``router.routing.rungs``): each retries with its validation errors (its own ``max_retries``, or
the task type's), and hands over when it fails or is less sure than its own threshold. The next
rung gets the earlier rungs' failed attempts; the LLM gets the whole conversation plus all of
them; then a human decides. Each trigger can be switched off per task type (EscalationPolicy).
Every model call is logged, with the trigger it caused.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from reviewq.config.snapshot import Configuration
from reviewq.models import Request, RequestStatus
from reviewq.transitions import move_request
from router.answers import parse_answer
from router.backends.base import BackendError, ModelBackend, Prompt
from router.backends.registry import get_adapter_backend, get_backend
from router.contracts import TaskType, Tier, Trigger
from router.models import EscalationPolicy, ModelSpec
from router.prompts import (
    INTENT_OUT_OF_SCOPE,
    TaskSpec,
    build_prompt,
    estimate_tokens,
    floor_tokens,
    intent_task,
)
from router.routing import NoModelAvailable, Route, rungs
from router.validators import ValidationIssue, issues_as_feedback
from telemetry.models import ModelCall
from telemetry.services import model_call_record


class TakenOver(Exception):
    """Another worker (or the sweeper) moved the request on first: this run stops quietly."""


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
    """Where the ladder got to: a validated action from some tier, or why there is none."""

    action: dict[str, Any] | None
    tier: str = ""
    model: str = ""
    trigger: str = ""
    failure: str = ""
    attempts: list[Attempt] = field(default_factory=list)
    uncertainty: float | None = None


def route_slm(task: TaskSpec, prompt: Prompt, configuration: Configuration) -> tuple[list[Route], Outcome]:
    """The small-model rungs for ``prompt``, cheapest first, or none and the outcome that sends the
    request up the ladder."""
    try:
        routes = rungs_for(task, prompt, Tier.SLM, configuration)
    except NoModelAvailable as exc:
        trigger = Trigger.CONTEXT_TOO_LONG if exc.context_too_long else Trigger.NO_SLM
        return [], Outcome(None, trigger=trigger, failure=f"not routed to a small model: {exc}")
    return routes, Outcome(None)


def rungs_for(task: TaskSpec, prompt: Prompt, tier: str, configuration: Configuration) -> list[Route]:
    """The enabled models of ``tier`` that serve ``task`` with ``prompt``, cheapest first (raises
    NoModelAvailable)."""
    routes = rungs(
        task.task_type,
        prompt_tokens=estimate_tokens(prompt),
        tools=len(task.tools),
        parallel=task.parallel_tool_calls,
        tier=tier,
        models=configuration.models,
        # A small model gets the conversation cut to its context (router/context_budget.py).
        floor_tokens=floor_tokens(task, prompt) if tier == Tier.SLM else None,
    )
    names = [tool["function"]["name"] for tool in task.tools]
    served = []
    for route in routes:
        adapter = configuration.adapter_for(route.model, names) if names else None
        if adapter is not None:  # the request's task cluster has an adapter promoted for this rung
            route = replace(
                route,
                adapter_name=adapter.name,
                adapter_path=adapter.path,
                adapter_threshold=adapter.calibrated_threshold,
                reason=f"{route.reason}; adapter {adapter.name} for its task cluster",
            )
        elif route.model.id in configuration.base_adapters and route.model.adapter_path:
            # Its promoted adapter over all its traffic: loaded with the model (its adapter_path);
            # named, so that each answer is logged under the adapter generation that gave it.
            route = replace(
                route,
                adapter_name=configuration.base_adapters[route.model.id].name,
                adapter_threshold=route.model.uncertainty_threshold,
            )
        served.append(route)
    return served


def climb_slm_rungs(
    request: Request, task: TaskSpec, escalation: EscalationPolicy, routes: list[Route]
) -> Outcome:
    """The small models' rungs in turn, cheapest first, until one gives a valid answer it is sure
    enough of; the outcome of the last rung tried, with every rung's attempts, otherwise."""
    outcome = Outcome(None)
    attempts: list[Attempt] = []
    for index, route in enumerate(routes):
        if index and not escalation.trigger_enabled(outcome.trigger):
            break  # climbing on this trigger is switched off: the next rung would not help either
        feedback = ladder_feedback(outcome.trigger, attempts) if index else ""
        rung_prompt = build_prompt(task, feedback=feedback, context_tokens=route.model.context_size)
        outcome = propose_with_slm(request, task, escalation, route, rung_prompt, first_rung=index == 0)
        outcome.attempts = attempts = attempts + outcome.attempts
        if outcome.action is not None:
            return outcome
    return outcome


def propose_with_slm(
    request: Request,
    task: TaskSpec,
    escalation: EscalationPolicy,
    route: Route,
    prompt: Prompt,
    *,
    first_rung: bool = True,
) -> Outcome:
    """One small model's proposal, retried with its validation errors; the outcome says why the
    ladder must climb when there is no valid, sure enough answer."""
    backend, error = _backend(request, route.model, route.adapter_path)
    if backend is None:
        return Outcome(None, trigger=Trigger.BACKEND_ERROR, failure=error)
    if first_rung and task.task_type == TaskType.TOOL_USE and escalation.classify_intent:
        out_of_scope = _out_of_scope(request, task, route.model, backend)
        if out_of_scope:
            return Outcome(None, trigger=Trigger.OUT_OF_SCOPE, failure=out_of_scope)

    model = route.model
    retries = model.max_retries if model.max_retries is not None else escalation.max_slm_retries
    threshold = route.adapter_threshold if route.adapter_name else model.uncertainty_threshold
    if threshold is None:
        threshold = escalation.uncertainty_threshold
    outcome = Outcome(None, tier=model.tier, model=route.model_name)
    feedback = prompt.feedback
    attempts = 1 + retries
    for attempt in range(1, attempts + 1):
        purpose = ModelCall.Purpose.PROPOSE if attempt == 1 else ModelCall.Purpose.RETRY
        try:
            if feedback != prompt.feedback:
                prompt = build_prompt(task, feedback=feedback, context_tokens=model.context_size)
            generation = backend.generate(prompt)
        except BackendError as exc:
            _record_failure(request, route.model, purpose, attempt, exc)
            outcome.trigger = Trigger.BACKEND_ERROR
            outcome.failure = f"model {route.model.name} failed: {exc}"
            return outcome
        uncertainty = generation.uncertainty
        parsed, action, issues = parse_answer(
            task,
            generation.text,
            confidence=uncertainty.confidence if uncertainty else None,
            feedback=feedback,
        )
        outcome.attempts.append(Attempt(route.model.name, route.model.tier, generation.text, issues))
        trigger = ""
        if issues:
            trigger = Trigger.VALIDATION_FAILED
        elif uncertainty is not None and uncertainty.above(threshold):
            trigger = Trigger.UNCERTAINTY
            note = (
                f"uncertainty {uncertainty.score:.3f} is above the threshold {threshold} ({route.model_name})"
            )
            outcome.attempts[-1].note = note
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
            model_name=route.adapter_name,
        )
        if not trigger:
            outcome.action = action
            outcome.uncertainty = uncertainty.score if uncertainty else None
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


def _out_of_scope(request: Request, task: TaskSpec, spec: ModelSpec, backend: ModelBackend) -> str:
    """Asks the SLM whether any tool fits; a non-empty answer says why the request is out of scope."""
    intent = intent_task(task)
    try:
        generation = backend.generate(build_prompt(intent, context_tokens=spec.context_size))
    except BackendError as exc:
        _record_failure(request, spec, ModelCall.Purpose.ROUTE, 1, exc)
        return ""  # the check is advisory: without it the proposal goes ahead
    uncertainty = generation.uncertainty
    parsed, action, issues = parse_answer(
        intent, generation.text, confidence=uncertainty.confidence if uncertainty else None
    )
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


def escalate(
    request: Request, task: TaskSpec, escalation: EscalationPolicy, slm: Outcome, configuration: Configuration
) -> Outcome:
    """The LLM rung: the whole conversation, the SLM's failed attempts and their errors.

    Raises TakenOver when another worker moved the request on first.
    """
    if not escalation.trigger_enabled(slm.trigger):
        slm.failure += f" (escalation on {slm.trigger} is switched off for {task.task_type})"
        return slm
    if not move_request(
        request.id,
        from_statuses=[RequestStatus.ROUTING, RequestStatus.PROPOSING],
        to_status=RequestStatus.ESCALATED,
    ):
        raise TakenOver
    try:
        # Sized without the earlier answers: a long list of them must not make "no model fits"
        # send to a human a request that an LLM could take.
        route = rungs_for(task, build_prompt(task), Tier.LLM, configuration)[0]
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
        prompt = build_prompt(task, feedback=ladder_feedback(slm.trigger, attempts))
        try:
            generation = backend.generate(prompt)
        except BackendError as exc:
            _record_failure(request, route.model, ModelCall.Purpose.ESCALATE, attempt, exc)
            return Outcome(
                None,
                trigger=Trigger.BACKEND_ERROR,
                failure=f"{slm.failure}; LLM {route.model.name} failed: {exc}",
            )
        parsed, action, issues = parse_answer(task, generation.text, feedback=prompt.feedback)
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


def ladder_feedback(trigger: str, attempts: list[Attempt]) -> str:
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


def _backend(request: Request, spec: ModelSpec, adapter_path: str = "") -> tuple[ModelBackend | None, str]:
    try:
        return (get_adapter_backend(spec, adapter_path) if adapter_path else get_backend(spec)), ""
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
        trigger=Trigger.BACKEND_ERROR,
    )
