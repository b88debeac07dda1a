from __future__ import annotations

from django.contrib import admin

from reviewq.models import AgentKey, GoldenTrace, Request, ReviewItem, RiskPolicy, ToolSpec


@admin.register(AgentKey)
class AgentKeyAdmin(admin.ModelAdmin):
    list_display = ["name", "prefix", "owner", "created_at", "revoked_at"]
    readonly_fields = ["prefix", "key_hash", "created_at"]
    search_fields = ["name", "prefix"]

    def has_add_permission(self, request) -> bool:  # type: ignore[no-untyped-def]
        # Keys are made with `manage.py create_agent_key`, which shows the raw key once.
        return False


class ReadOnlyAdmin(admin.ModelAdmin):
    """Records the pipeline and reviewers write: ops may look, never edit by hand."""

    def has_add_permission(self, request) -> bool:  # type: ignore[no-untyped-def]
        return False

    def has_change_permission(self, request, obj=None) -> bool:  # type: ignore[no-untyped-def]
        return False


@admin.register(Request)
class RequestAdmin(ReadOnlyAdmin):
    list_display = ["id", "agent_key", "status", "created_at", "finished_at"]
    list_filter = ["status", "agent_key"]
    search_fields = ["id", "idempotency_key"]
    date_hierarchy = "created_at"


@admin.register(ReviewItem)
class ReviewItemAdmin(ReadOnlyAdmin):
    list_display = [
        "id",
        "request",
        "status",
        "policy",
        "created_at",
        "sla_due_at",
        "expires_at",
        "decided_by",
    ]
    list_filter = ["status", "policy"]


@admin.register(GoldenTrace)
class GoldenTraceAdmin(ReadOnlyAdmin):
    list_display = ["id", "request", "decision", "reviewer", "time_to_decision_ms", "created_at"]
    list_filter = ["decision"]


@admin.register(ToolSpec)
class ToolSpecAdmin(admin.ModelAdmin):
    list_display = ["name", "risk_tags", "enabled"]
    list_filter = ["enabled"]
    search_fields = ["name", "description"]


@admin.register(RiskPolicy)
class RiskPolicyAdmin(admin.ModelAdmin):
    list_display = [
        "priority",
        "name",
        "tool_pattern",
        "match_tags",
        "decision",
        "required_approvals",
        "enabled",
    ]
    list_display_links = ["name"]
    list_filter = ["decision", "enabled"]
    ordering = ["priority"]
