"""Observe mode: log what a team's own LLM does, and what the small model would have done.

Every upstream answer is stored as an UpstreamCall (prompt, answer, latency, tokens, cost), with
the risk policies' decision on it ("would have held"). Off the hot path, the cheapest small model
that serves the request proposes on the same input, and its agreement with the upstream answer
(same tools, same arguments) is recorded: that share is what moving to the small model saves.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from reviewq.config.snapshot import current_configuration
from reviewq.models import RiskPolicy
from reviewq.pipeline.ladder import route_slm
from reviewq.pipeline.policies import decide_answer
from reviewq.runtime.dispatch import later
from router.answers import parse_answer
from router.backends.base import BackendError
from router.backends.registry import get_backend
from router.contracts import Agreement, Tier
from router.openai_actions import action_from_message, compare_answers
from router.prompts import TaskSpec, build_prompt
from router.schemas import tool_function
from router.validators import issues_as_dicts
from telemetry.models import UpstreamCall

logger = logging.getLogger(__name__)


def policy_on_upstream_answer(
    message: dict[str, Any] | None, tools: list[dict[str, Any]]
) -> tuple[str, str, bool | None]:
    """(decision, policy name, would hold) of the risk policies on the upstream LLM's answer, as
    if it were a proposal of the LLM tier. A reply changes nothing: released."""
    if message is None:
        return "", "", None
    decision = decide_answer(action_from_message(message), tools, tier=Tier.LLM)
    return (
        str(decision.decision),
        decision.policy.name if decision.policy else "",
        decision.decision != RiskPolicy.Decision.AUTO,
    )


def compare_later(call_id: int) -> None:
    """Has the small model propose on this upstream call's input, off the hot path."""
    later("reviewq.tasks.compare_upstream_call", call_id)


def compare_upstream_call(call_id: int) -> str:
    """The small model's answer on an upstream call's input, and how it compares; recorded once
    (a redelivered task finds the call compared and stops). Returns the agreement."""
    call = UpstreamCall.objects.filter(id=call_id, agreement="").first()
    if call is None or call.answer is None:
        return ""
    reference = action_from_message(call.answer)
    configuration = current_configuration()
    task = TaskSpec(
        task_type=call.task_type,
        messages=call.messages,
        tools=call.tools,
        parallel_tool_calls=len(reference.get("tool_calls") or []) > 1,
        may_reply=True,
        rules=configuration.tool_rules(tool_function(tool)["name"] for tool in call.tools),
    )
    routes, no_route = route_slm(task, build_prompt(task), configuration)
    fields: dict[str, Any] = {"agreement": Agreement.NO_ANSWER}
    if not routes:
        fields["slm_issues"] = [{"validator": "routing", "path": "$", "message": no_route.failure}]
    else:
        model = routes[0].model
        fields["slm_model"] = model.name
        started = time.perf_counter()
        try:
            generation = get_backend(model).generate(build_prompt(task, context_tokens=model.context_size))
        except BackendError as exc:
            fields["slm_issues"] = [{"validator": "backend", "path": "$", "message": str(exc)[:500]}]
        else:
            _, action, issues = parse_answer(task, generation.text)
            fields.update(
                slm_answer=action,
                slm_issues=issues_as_dicts(issues),
                slm_latency_ms=(time.perf_counter() - started) * 1000,
                slm_cost_usd=model.cost_usd(generation.tokens_in, generation.tokens_out),
                agreement=compare_answers(reference, action),
            )
    UpstreamCall.objects.filter(id=call.id, agreement="").update(**fields)
    return str(fields["agreement"])
