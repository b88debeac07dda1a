"""Risk policies: deterministic code, configured in admin, that decides an action's fate.

Rules that no configuration can loosen:
- a tool ops do not know (no enabled ToolSpec) is held for a human: it may have side effects;
- when no policy matches, the action is held (fail closed);
- a plan of several calls gets the strictest decision of its calls.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from typing import Any

from reviewq.models import RiskPolicy, ToolSpec

# Strictest last: the plan's decision is the max over its calls.
_STRICTNESS = {
    RiskPolicy.Decision.AUTO: 0,
    RiskPolicy.Decision.ADJUDICATE: 1,
    RiskPolicy.Decision.HUMAN: 2,
    RiskPolicy.Decision.BLOCK: 3,
}


@dataclass
class PolicyDecision:
    decision: str
    reason: str
    policy: RiskPolicy | None = None
    risk_tags: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "decision": self.decision,
            "policy": self.policy.name if self.policy else None,
            "reason": self.reason,
            "risk_tags": self.risk_tags,
        }


def _policy_matches(policy: RiskPolicy, tool_name: str, tags: list[str]) -> bool:
    if not fnmatch.fnmatchcase(tool_name, policy.tool_pattern or "*"):
        return False
    return not policy.match_tags or bool(set(policy.match_tags) & set(tags))


def decide_call(tool_name: str, *, policies: list[RiskPolicy], tools: dict[str, ToolSpec]) -> PolicyDecision:
    """The decision for one tool call."""
    tool = tools.get(tool_name)
    if tool is None:
        return PolicyDecision(
            RiskPolicy.Decision.HUMAN,
            f"{tool_name!r} is not a tool ops have registered; it may have side effects",
        )
    tags = list(tool.risk_tags or [])
    for policy in policies:
        if _policy_matches(policy, tool_name, tags):
            why = f"policy {policy.name!r} matched {tool_name!r}"
            if policy.match_tags:
                why += f" (tags {', '.join(sorted(set(policy.match_tags) & set(tags)))})"
            return PolicyDecision(policy.decision, why, policy, tags)
    return PolicyDecision(
        RiskPolicy.Decision.HUMAN, f"no policy matched {tool_name!r}; held by default", None, tags
    )


def decide_action(tool_names: list[str]) -> PolicyDecision:
    """The decision for a proposed plan: the strictest decision among its calls."""
    policies = list(RiskPolicy.objects.filter(enabled=True).order_by("priority", "id"))
    tools = {tool.name: tool for tool in ToolSpec.objects.filter(enabled=True, name__in=tool_names)}
    decisions = [decide_call(name, policies=policies, tools=tools) for name in tool_names]
    if not decisions:
        return PolicyDecision(RiskPolicy.Decision.HUMAN, "the proposal holds no action")
    strictest = max(decisions, key=lambda d: _STRICTNESS[RiskPolicy.Decision(d.decision)])
    strictest.risk_tags = sorted({tag for d in decisions for tag in d.risk_tags})
    return strictest
