"""Configuration as JSON: tools, risk policies, escalation policies and the model registry.

``export_config`` writes it so a configuration can be versioned and reviewed; ``import_config``
applies it in one transaction, upserting by name and refusing the whole file if any entry is
invalid (a bad condition, an unknown decision), so a half-applied configuration never exists.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.contrib.auth.models import Group
from django.db import transaction

from reviewq.errors import ApplicationError
from reviewq.models import RiskPolicy, ToolSpec
from router.conditions import check_condition
from router.models import EscalationPolicy, ModelSpec

FORMAT_VERSION = 1
TOOL_FIELDS = ["name", "description", "parameters", "risk_tags", "rules", "enabled"]
POLICY_FIELDS = [
    "name",
    "priority",
    "tool_pattern",
    "match_tags",
    "condition",
    "min_uncertainty",
    "model_tier",
    "match_pii",
    "decision",
    "adjudicator_tier",
    "on_adjudicator_approve",
    "on_adjudicator_reject",
    "required_approvals",
    "requires_llm",
    "sla_seconds",
    "expiry_seconds",
    "notify_url",
    "enabled",
]
MODEL_FIELDS = [
    "name",
    "backend",
    "model_path",
    "base_url",
    "tier",
    "strengths",
    "price_input_per_mtok",
    "price_output_per_mtok",
    "context_size",
    "enabled",
]
ESCALATION_FIELDS = [
    "task_type",
    "uncertainty_threshold",
    "max_slm_retries",
    "max_llm_attempts",
    "escalate_on_validation_failure",
    "escalate_on_uncertainty",
    "escalate_on_out_of_scope",
    "escalate_on_context_too_long",
    "escalate_on_policy",
    "classify_intent",
]


def _plain(value: Any) -> Any:
    return str(value) if isinstance(value, Decimal) else value


def export_config() -> dict[str, Any]:
    return {
        "format_version": FORMAT_VERSION,
        "tools": [{f: _plain(getattr(t, f)) for f in TOOL_FIELDS} for t in ToolSpec.objects.order_by("name")],
        "policies": [
            {
                **{f: _plain(getattr(p, f)) for f in POLICY_FIELDS},
                "reviewer_group": p.reviewer_group.name if p.reviewer_group else None,
            }
            for p in RiskPolicy.objects.select_related("reviewer_group").order_by("priority", "name")
        ],
        "escalation": [
            {f: getattr(e, f) for f in ESCALATION_FIELDS}
            for e in EscalationPolicy.objects.order_by("task_type")
        ],
        "models": [
            {f: _plain(getattr(m, f)) for f in MODEL_FIELDS} for m in ModelSpec.objects.order_by("name")
        ],
    }


def _check(config: dict[str, Any]) -> None:
    if config.get("format_version") != FORMAT_VERSION:
        raise ApplicationError("invalid_config", f"format_version must be {FORMAT_VERSION}")
    decisions = {choice.value for choice in RiskPolicy.Decision}
    for index, policy in enumerate(config.get("policies", [])):
        if policy.get("decision") not in decisions:
            raise ApplicationError(
                "invalid_config", f"policies[{index}]: decision must be one of {sorted(decisions)}"
            )
        problem = check_condition(policy["condition"]) if policy.get("condition") else None
        if problem:
            raise ApplicationError("invalid_config", f"policies[{index}] ({policy.get('name')}): {problem}")
    for index, tool in enumerate(config.get("tools", [])):
        for rule in tool.get("rules") or []:
            problem = check_condition(rule.get("condition", ""))
            if problem:
                raise ApplicationError("invalid_config", f"tools[{index}] ({tool.get('name')}): {problem}")


@transaction.atomic
def import_config(config: dict[str, Any]) -> dict[str, int]:
    """Applies ``config``; returns how many entries of each kind were created or updated."""
    _check(config)
    counts = {"tools": 0, "policies": 0, "escalation": 0, "models": 0}
    for tool in config.get("tools", []):
        fields = {f: tool[f] for f in TOOL_FIELDS if f in tool and f != "name"}
        ToolSpec.objects.update_or_create(name=tool["name"], defaults=fields)
        counts["tools"] += 1
    for policy in config.get("policies", []):
        fields = {f: policy[f] for f in POLICY_FIELDS if f in policy and f != "name"}
        group = policy.get("reviewer_group")
        fields["reviewer_group"] = Group.objects.get_or_create(name=group)[0] if group else None
        RiskPolicy.objects.update_or_create(name=policy["name"], defaults=fields)
        counts["policies"] += 1
    for escalation in config.get("escalation", []):
        fields = {f: escalation[f] for f in ESCALATION_FIELDS if f in escalation and f != "task_type"}
        EscalationPolicy.objects.update_or_create(task_type=escalation["task_type"], defaults=fields)
        counts["escalation"] += 1
    for model in config.get("models", []):
        fields = {f: model[f] for f in MODEL_FIELDS if f in model and f != "name"}
        ModelSpec.objects.update_or_create(name=model["name"], defaults=fields)
        counts["models"] += 1
    return counts
