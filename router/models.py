"""The capability registry: which models exist, what they are good at, and what they cost."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from typing import Any

from django.db import models, transaction

from router.contracts import REQUEST_TASK_TYPES, Tier, Trigger


class ConfigVersion(models.Model):
    """One row whose stamp changes with every change to ops' configuration: the models, the
    escalation policies, the tools and the risk policies (every ``ConfigModel``).

    Processes keep that configuration in memory and compare the stamp, read in the same query as
    the request they work on, to know when to read it again (reviewq/configuration.py). A random
    stamp rather than a counter: a rolled-back change or a restored backup can never make an old
    snapshot look current.
    """

    stamp = models.UUIDField(default=uuid.uuid4)

    def __str__(self) -> str:
        return f"configuration {self.stamp}"

    @classmethod
    def bump(cls) -> None:
        """A new stamp: every process reads the configuration again before its next use of it."""
        if not cls.objects.filter(pk=1).update(stamp=uuid.uuid4()):
            cls.objects.get_or_create(pk=1)  # the row is gone (a flushed test database): a new one


@contextmanager
def changing_configuration(using: str | None = None) -> Iterator[None]:
    """Around a write to configuration: the write and a new stamp commit together."""
    with transaction.atomic(using=using):
        yield
        ConfigVersion.bump()


class ConfigQuerySet(models.QuerySet):
    """Bulk writes to configuration change the stamp too (they send no save or delete signals)."""

    def update(self, **kwargs: Any) -> int:
        with changing_configuration(self.db):
            return super().update(**kwargs)

    def delete(self) -> tuple[int, dict[str, int]]:
        with changing_configuration(self.db):
            return super().delete()

    def bulk_create(self, *args: Any, **kwargs: Any) -> list[Any]:
        with changing_configuration(self.db):
            return super().bulk_create(*args, **kwargs)

    def bulk_update(self, *args: Any, **kwargs: Any) -> int:
        with changing_configuration(self.db):
            return super().bulk_update(*args, **kwargs)


class ConfigModel(models.Model):
    """Configuration that ops edit and every request reads: each write changes ConfigVersion's
    stamp in the same transaction, so cached copies are never used after the change commits."""

    objects = ConfigQuerySet.as_manager()

    class Meta:
        abstract = True

    def save(self, *args: Any, **kwargs: Any) -> None:
        with changing_configuration(kwargs.get("using")):
            super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> tuple[int, dict[str, int]]:
        with changing_configuration(kwargs.get("using")):
            return super().delete(*args, **kwargs)


class ModelSpec(ConfigModel):
    class Backend(models.TextChoices):
        LLAMA_CPP = "llama_cpp", "llama.cpp (local GGUF)"
        ANTHROPIC = "anthropic", "Anthropic"
        OPENAI_COMPATIBLE = "openai_compatible", "OpenAI-compatible server (llama-server, vLLM)"
        FAKE = "fake", "Deterministic fake (tests)"

    name = models.CharField(max_length=100, unique=True)
    backend = models.CharField(max_length=32, choices=Backend.choices)
    # A filesystem path, a "package:" reference resolved by router.model_files, or a model id.
    model_path = models.CharField(max_length=500)
    base_url = models.CharField(max_length=500, blank=True, help_text="For openai_compatible / anthropic.")
    tier = models.CharField(max_length=8, choices=Tier.choices)
    strengths = models.JSONField(
        default=list, help_text='Task types it is good at, e.g. ["tool_use", "classification"]'
    )
    # USD per million tokens. For local models, an honest figure for the compute they use.
    price_input_per_mtok = models.DecimalField(max_digits=10, decimal_places=4, default=Decimal("0"))
    price_output_per_mtok = models.DecimalField(max_digits=10, decimal_places=4, default=Decimal("0"))
    context_size = models.PositiveIntegerField(default=8192)
    # Where the model was measured competent: the router sends it only requests of this shape.
    max_prompt_tokens = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="Serves only prompts (system, tools and conversation) of at most this many tokens; "
        "empty: any that fits its context.",
    )
    max_tools = models.PositiveSmallIntegerField(
        null=True, blank=True, help_text="Serves only requests with at most this many tools; empty: any."
    )
    plans_parallel_calls = models.BooleanField(
        default=True,
        help_text="Serves requests that allow several tool calls (parallel_tool_calls) at once.",
    )
    # This rung of the escalation ladder: how often it retries with its errors, and how unsure it
    # may be before the request climbs (empty: the task type's escalation policy decides).
    max_retries = models.PositiveSmallIntegerField(
        null=True, blank=True, help_text="Retries with its validation errors before the next rung."
    )
    uncertainty_threshold = models.FloatField(
        null=True,
        blank=True,
        help_text="Climbs to the next rung when its answer's uncertainty score is above this.",
    )
    adapter_path = models.CharField(
        max_length=500,
        blank=True,
        help_text="A promoted LoRA adapter served over this model (set by promotion, cleared by rollback).",
    )
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["tier", "name"]

    def __str__(self) -> str:
        return f"{self.name} ({self.tier})"

    def serves(self, *, prompt_tokens: int, tools: int, parallel: bool = False) -> bool:
        """Whether a request of this shape is within the context and where the model is competent."""
        return (
            prompt_tokens <= self.context_size
            and (self.max_prompt_tokens is None or prompt_tokens <= self.max_prompt_tokens)
            and (self.max_tools is None or tools <= self.max_tools)
            and (self.plans_parallel_calls or not parallel)
        )

    def cost_usd(self, tokens_in: int, tokens_out: int) -> Decimal:
        """What a call with these token counts costs at the registry's prices."""
        return price(tokens_in, tokens_out, self.price_input_per_mtok, self.price_output_per_mtok)


def price(tokens_in: int, tokens_out: int, price_in: Decimal, price_out: Decimal) -> Decimal:
    """The cost in USD of these tokens at these prices per million tokens."""
    return (Decimal(tokens_in) * price_in + Decimal(tokens_out) * price_out) / Decimal(1_000_000)


class EscalationPolicy(ConfigModel):
    """Per task type: when the small model's answer is not trusted, and how far the ladder goes.

    The ladder: retry the SLM with its validation errors (``max_slm_retries``), then the LLM with
    the SLM's failed attempts in its prompt (``max_llm_attempts``), then a human. A task type
    without a row uses the defaults below.
    """

    task_type = models.CharField(
        max_length=32, choices=[(t.value, t.label) for t in REQUEST_TASK_TYPES], unique=True
    )
    uncertainty_threshold = models.FloatField(
        null=True,
        blank=True,
        default=None,
        help_text="Escalate a valid SLM answer whose uncertainty score (0 sure … 1 unsure) is above this. "
        "Empty: never.",
    )
    max_slm_retries = models.PositiveSmallIntegerField(default=1)
    max_llm_attempts = models.PositiveSmallIntegerField(default=2)
    escalate_on_validation_failure = models.BooleanField(default=True)
    escalate_on_uncertainty = models.BooleanField(default=True)
    escalate_on_out_of_scope = models.BooleanField(default=True)
    escalate_on_context_too_long = models.BooleanField(default=True)
    escalate_on_policy = models.BooleanField(
        default=True, help_text="Escalate when the matching risk policy requires an LLM-tier proposal."
    )
    classify_intent = models.BooleanField(
        default=False,
        help_text="tool_use only: ask the SLM first whether a tool fits at all (one short extra call); "
        "out-of-scope requests climb the ladder instead of being forced into a tool.",
    )

    class Meta:
        ordering = ["task_type"]
        verbose_name_plural = "escalation policies"

    def __str__(self) -> str:
        return f"Escalation for {self.task_type}"

    def trigger_enabled(self, trigger: str) -> bool:
        """Whether ``trigger`` climbs past the SLM for this task type (see ``Trigger``)."""
        flag: dict[str, bool] = {
            Trigger.VALIDATION_FAILED: self.escalate_on_validation_failure,
            Trigger.UNCERTAINTY: self.escalate_on_uncertainty,
            Trigger.OUT_OF_SCOPE: self.escalate_on_out_of_scope,
            Trigger.CONTEXT_TOO_LONG: self.escalate_on_context_too_long,
            Trigger.POLICY_REQUIRES_LLM: self.escalate_on_policy,
        }
        return flag.get(trigger, True)


class Adapter(ConfigModel):
    """A LoRA adapter trained for a small model (router/training.py), and where it is in its life:
    candidate (trained) → shadow (answers beside the base, never released) → promoted (the router
    serves base + adapter) → retired. Promotion and rollback go through reviewq/services/learning.py.
    Configuration: the pipeline's snapshot knows the shadow adapters of each model."""

    class Status(models.TextChoices):
        CANDIDATE = "candidate"
        SHADOW = "shadow"
        PROMOTED = "promoted"
        RETIRED = "retired"

    name = models.CharField(max_length=100, unique=True)
    base = models.ForeignKey(ModelSpec, on_delete=models.PROTECT, related_name="adapters")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.CANDIDATE, db_index=True)
    path = models.CharField(max_length=500, help_text="The GGUF LoRA adapter file.")
    cluster = models.CharField(
        max_length=64, blank=True, help_text="The task cluster it was trained for; empty: all."
    )
    dataset_version = models.PositiveIntegerField()
    dataset_sha256 = models.CharField(max_length=64)
    hyperparameters = models.JSONField(default=dict)
    losses = models.JSONField(default=list, help_text="Training loss per step.")
    train_seconds = models.FloatField(default=0)
    rows_used = models.PositiveIntegerField(default=0)
    size_bytes = models.PositiveBigIntegerField(default=0)
    replay_report = models.JSONField(
        null=True, blank=True, help_text="Candidate and base on the held-out rows."
    )
    # On promotion: the threshold its calibration chose, and the base's settings it replaced.
    calibrated_threshold = models.FloatField(null=True, blank=True)
    replaced = models.JSONField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    promoted_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.name} on {self.base.name} ({self.status})"
