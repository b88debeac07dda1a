"""The model-call log: one row per call to any model, successful or not."""

from __future__ import annotations

from django.db import models

from router.contracts import Tier, Trigger


class ModelCall(models.Model):
    class Purpose(models.TextChoices):
        PROPOSE = "propose", "Propose an action"
        RETRY = "retry", "Retry with validation errors"
        ESCALATE = "escalate", "Escalated to the LLM"
        ADJUDICATE = "adjudicate", "Adjudicate a proposal"
        ROUTE = "route", "Classify the task type"

    request = models.ForeignKey("reviewq.Request", on_delete=models.CASCADE, related_name="model_calls")
    model_spec = models.ForeignKey("router.ModelSpec", null=True, blank=True, on_delete=models.SET_NULL)
    model_name = models.CharField(max_length=100)
    tier = models.CharField(max_length=8, choices=Tier.choices)
    purpose = models.CharField(max_length=16, choices=Purpose.choices, default=Purpose.PROPOSE)
    attempt = models.PositiveSmallIntegerField(default=1)
    prompt = models.TextField(blank=True)
    raw_output = models.TextField(blank=True)
    parsed_output = models.JSONField(null=True, blank=True)
    latency_ms = models.FloatField(default=0)
    tokens_in = models.PositiveIntegerField(default=0)
    tokens_out = models.PositiveIntegerField(default=0)
    cost_usd = models.DecimalField(max_digits=12, decimal_places=8, default=0)
    validation_errors = models.JSONField(default=list, blank=True)
    uncertainty = models.JSONField(null=True, blank=True)
    error = models.TextField(blank=True, help_text="Backend failure, if the call itself failed.")
    escalated = models.BooleanField(default=False)
    trigger = models.CharField(
        max_length=64, blank=True, choices=Trigger.choices, help_text="What caused the next step."
    )
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["created_at", "id"]

    def __str__(self) -> str:
        return f"{self.model_name} {self.purpose} #{self.attempt} ({self.latency_ms:.0f} ms)"

    @property
    def is_valid(self) -> bool:
        return not self.error and not self.validation_errors
