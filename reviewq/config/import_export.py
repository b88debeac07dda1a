"""Configuration as JSON: tools, risk policies, escalation policies and the model registry.

``export_config`` writes it so a configuration can be versioned and reviewed; ``import_config``
applies it in one transaction, upserting by name and refusing the whole file if any entry is
invalid (a bad condition, an unknown decision), so a half-applied configuration never exists.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Model

from reviewq.errors import ApplicationError
from reviewq.models import RiskPolicy, ToolSpec
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
    "max_prompt_tokens",
    "max_tools",
    "plans_parallel_calls",
    "max_retries",
    "uncertainty_threshold",
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


@transaction.atomic
def import_config(config: dict[str, Any]) -> dict[str, int]:
    """Applies ``config``; returns how many entries of each kind were created or updated.

    Each entry is checked by its model's own validation (``full_clean``: choices, and the
    condition language for rules and policy conditions, as in the admin) before it is saved; the
    first invalid one refuses the whole file.
    """
    if config.get("format_version") != FORMAT_VERSION:
        raise ApplicationError("invalid_config", f"format_version must be {FORMAT_VERSION}")
    counts = {"tools": 0, "policies": 0, "escalation": 0, "models": 0}
    for index, tool in enumerate(config.get("tools", [])):
        _upsert(ToolSpec, "name", tool, TOOL_FIELDS, f"tools[{index}]")
        counts["tools"] += 1
    for index, policy in enumerate(config.get("policies", [])):
        group = policy.get("reviewer_group")
        extra = {"reviewer_group": Group.objects.get_or_create(name=group)[0] if group else None}
        _upsert(RiskPolicy, "name", policy, POLICY_FIELDS, f"policies[{index}]", extra)
        counts["policies"] += 1
    for index, escalation in enumerate(config.get("escalation", [])):
        _upsert(EscalationPolicy, "task_type", escalation, ESCALATION_FIELDS, f"escalation[{index}]")
        counts["escalation"] += 1
    for index, model in enumerate(config.get("models", [])):
        _upsert(ModelSpec, "name", model, MODEL_FIELDS, f"models[{index}]")
        counts["models"] += 1
    return counts


def _upsert(
    model: type[Model],
    key: str,
    entry: dict[str, Any],
    fields: list[str],
    where: str,
    extra: dict[str, Any] | None = None,
) -> None:
    """Creates or updates the row whose ``key`` field is ``entry[key]``, once it validates."""
    if not isinstance(entry, dict) or not isinstance(entry.get(key), str):
        raise ApplicationError("invalid_config", f"{where}: needs a {key!r}")
    instance = model._default_manager.filter(**{key: entry[key]}).first() or model(**{key: entry[key]})
    for field in fields:
        if field in entry and field != key:
            setattr(instance, field, entry[field])
    for field, value in (extra or {}).items():
        setattr(instance, field, value)
    try:
        instance.full_clean()
    except ValidationError as exc:
        problems = "; ".join(f"{name}: {' '.join(messages)}" for name, messages in exc.message_dict.items())
        raise ApplicationError("invalid_config", f"{where} ({entry[key]}): {problems}") from None
    instance.save()
