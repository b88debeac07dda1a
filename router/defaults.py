"""The default model registry, seeded on first run and editable in admin afterwards."""

from __future__ import annotations

from decimal import Decimal

from django.conf import settings

from router.contracts import TaskType, Tier
from router.model_files import GEMMA3_PATH, SMOLLM2_PATH
from router.models import ModelSpec

# Local prices are what the compute costs, not zero: a 2-core machine at about $0.05 an hour
# prefills roughly 1M tokens and decodes roughly 0.25M tokens an hour with SmolLM2-135M.
DEFAULT_MODELS: list[dict] = [
    {
        "name": "smollm2-135m-instruct",
        "backend": ModelSpec.Backend.LLAMA_CPP,
        "model_path": SMOLLM2_PATH,
        "tier": Tier.SLM,
        "strengths": [TaskType.TOOL_USE, TaskType.CLASSIFICATION, TaskType.EXTRACTION, TaskType.RESPOND],
        "price_input_per_mtok": Decimal("0.05"),
        "price_output_per_mtok": Decimal("0.20"),
        "context_size": 8192,
    },
    {
        "name": "gemma-3-270m",
        "backend": ModelSpec.Backend.LLAMA_CPP,
        "model_path": GEMMA3_PATH,
        "tier": Tier.SLM,
        "strengths": [TaskType.ADJUDICATION],
        "price_input_per_mtok": Decimal("0.10"),
        "price_output_per_mtok": Decimal("0.40"),
        # Verdict prompts are short; a small context keeps its KV cache (and the worker) small.
        "context_size": 2048,
    },
    {
        "name": "claude-sonnet-4-6",
        "backend": ModelSpec.Backend.ANTHROPIC,
        "model_path": "claude-sonnet-4-6",
        "tier": Tier.LLM,
        "strengths": [*TaskType.values, "coding"],
        "price_input_per_mtok": Decimal("3.00"),
        "price_output_per_mtok": Decimal("15.00"),
        "context_size": 200000,
    },
]


def ensure_default_models() -> list[ModelSpec]:
    """Creates the default models that are missing; leaves ops' edits to existing ones alone."""
    specs = []
    for defaults in DEFAULT_MODELS:
        fields = dict(defaults)
        name = fields.pop("name")
        if fields["backend"] == ModelSpec.Backend.ANTHROPIC:
            # Without a key, escalations go straight to the human queue, visibly.
            fields["enabled"] = bool(settings.ANTHROPIC_API_KEY)
        spec, _ = ModelSpec.objects.get_or_create(name=name, defaults=fields)
        specs.append(spec)
    return specs
