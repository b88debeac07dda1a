from __future__ import annotations

from django.contrib import admin

from router.models import EscalationPolicy, ModelSpec


@admin.register(ModelSpec)
class ModelSpecAdmin(admin.ModelAdmin):
    list_display = [
        "name",
        "backend",
        "tier",
        "strengths",
        "price_input_per_mtok",
        "price_output_per_mtok",
        "context_size",
        "enabled",
    ]
    list_filter = ["tier", "backend", "enabled"]


@admin.register(EscalationPolicy)
class EscalationPolicyAdmin(admin.ModelAdmin):
    list_display = [
        "task_type",
        "uncertainty_threshold",
        "max_slm_retries",
        "max_llm_attempts",
        "classify_intent",
    ]
