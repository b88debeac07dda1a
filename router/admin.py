from __future__ import annotations

from django import forms
from django.contrib import admin

from router.contracts import TaskType
from router.models import EscalationPolicy, ModelSpec


class ModelSpecForm(forms.ModelForm):
    strengths = forms.MultipleChoiceField(
        choices=TaskType.choices,
        widget=forms.CheckboxSelectMultiple,
        required=False,
        help_text="Task types it serves.",
    )

    class Meta:
        model = ModelSpec
        fields = [
            *("name", "backend", "model_path", "base_url", "tier", "strengths", "price_input_per_mtok"),
            *("price_output_per_mtok", "context_size", "max_prompt_tokens", "max_tools"),
            *("plans_parallel_calls", "max_retries", "uncertainty_threshold", "adapter_path", "enabled"),
        ]


@admin.register(ModelSpec)
class ModelSpecAdmin(admin.ModelAdmin):
    form = ModelSpecForm
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
