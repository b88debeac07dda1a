from __future__ import annotations

from django.contrib import admin

from router.models import ModelSpec


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
