"""The default model registry, seeded on first run and editable in admin afterwards."""

from __future__ import annotations

from decimal import Decimal

from django.conf import settings

from router.contracts import TaskType, Tier
from router.model_files import GEMMA3_PATH, QWEN_CODER_05B_PATH, QWEN_CODER_15B_PATH, SMOLLM2_PATH
from router.models import ModelSpec

ANSWERS = [TaskType.TOOL_USE, TaskType.CLASSIFICATION, TaskType.EXTRACTION, TaskType.RESPOND]
# Local prices are what the compute costs, not zero: a 2-core machine at about $0.05 an hour, and
# how many tokens an hour it prefills and decodes with each model (README, "Models").
DEFAULT_MODELS: list[dict] = [
    {
        # The cheapest rung: short single-turn requests with few tools, where it was measured
        # competent (BFCL simple and multiple); not agent-sized conversations, where it picks one
        # tool for everything.
        "name": "qwen2.5-coder-0.5b-instruct",
        "backend": ModelSpec.Backend.LLAMA_CPP,
        "model_path": QWEN_CODER_05B_PATH,
        "tier": Tier.SLM,
        "strengths": ANSWERS,
        "price_input_per_mtok": Decimal("0.15"),
        "price_output_per_mtok": Decimal("0.70"),
        "context_size": 8192,
        "max_prompt_tokens": 2048,
        "max_tools": 8,
        # It closes a {"calls": [...]} plan after the first call however many were asked for.
        "plans_parallel_calls": False,
    },
    {
        # The default proposer for agent conversations (a policy, a dozen tools, many turns).
        "name": "qwen2.5-coder-1.5b-instruct",
        "backend": ModelSpec.Backend.LLAMA_CPP,
        "model_path": QWEN_CODER_15B_PATH,
        "tier": Tier.SLM,
        "strengths": ANSWERS,
        "price_input_per_mtok": Decimal("0.25"),
        "price_output_per_mtok": Decimal("1.40"),
        "context_size": 16384,
    },
    {
        # Registered but off: measured not competent at tool use (BFCL simple 15 %, retail turns
        # 0 %). Kept for comparison and for tests that need a model that loads in a second.
        "name": "smollm2-135m-instruct",
        "backend": ModelSpec.Backend.LLAMA_CPP,
        "model_path": SMOLLM2_PATH,
        "tier": Tier.SLM,
        "strengths": ANSWERS,
        "price_input_per_mtok": Decimal("0.05"),
        "price_output_per_mtok": Decimal("0.20"),
        "context_size": 8192,
        "enabled": False,
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
