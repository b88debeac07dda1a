"""The capability registry: which models exist, what they are good at, and what they cost."""

from __future__ import annotations

from decimal import Decimal

from django.db import models


class ModelSpec(models.Model):
    class Backend(models.TextChoices):
        LLAMA_CPP = "llama_cpp", "llama.cpp (local GGUF)"
        ANTHROPIC = "anthropic", "Anthropic"
        OPENAI_COMPATIBLE = "openai_compatible", "OpenAI-compatible server (llama-server, vLLM)"
        FAKE = "fake", "Deterministic fake (tests)"

    class Tier(models.TextChoices):
        SLM = "slm", "Small language model"
        LLM = "llm", "Large language model"

    name = models.CharField(max_length=100, unique=True)
    backend = models.CharField(max_length=32, choices=Backend.choices)
    # A filesystem path, a "package:" reference resolved by router.model_files, or a model id.
    model_path = models.CharField(max_length=500)
    base_url = models.CharField(max_length=500, blank=True, help_text="For openai_compatible / anthropic.")
    tier = models.CharField(max_length=8, choices=Tier.choices)
    strengths = models.JSONField(default=list, help_text='e.g. ["tool_use", "classification"]')
    # USD per million tokens. For local models, an honest figure for the compute they use.
    price_input_per_mtok = models.DecimalField(max_digits=10, decimal_places=4, default=Decimal("0"))
    price_output_per_mtok = models.DecimalField(max_digits=10, decimal_places=4, default=Decimal("0"))
    context_size = models.PositiveIntegerField(default=8192)
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["tier", "name"]

    def __str__(self) -> str:
        return f"{self.name} ({self.tier})"

    def cost_usd(self, tokens_in: int, tokens_out: int) -> Decimal:
        """What a call with these token counts costs at the registry's prices."""
        million = Decimal(1_000_000)
        return (
            Decimal(tokens_in) * self.price_input_per_mtok / million
            + Decimal(tokens_out) * self.price_output_per_mtok / million
        )
