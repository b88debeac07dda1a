from __future__ import annotations

from django.contrib import admin

from telemetry.models import ModelCall


@admin.register(ModelCall)
class ModelCallAdmin(admin.ModelAdmin):
    list_display = [
        "created_at",
        "model_name",
        "tier",
        "purpose",
        "attempt",
        "latency_ms",
        "tokens_in",
        "tokens_out",
        "cost_usd",
        "trigger",
    ]
    list_filter = ["tier", "purpose", "model_name"]
    search_fields = ["request__id"]

    def has_add_permission(self, request) -> bool:  # type: ignore[no-untyped-def]
        return False

    def has_change_permission(self, request, obj=None) -> bool:  # type: ignore[no-untyped-def]
        return False
