"""The model-call log and golden traces in the admin: read-only, traces downloadable as JSONL."""

from __future__ import annotations

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest, StreamingHttpResponse

from reviewq.admin import ReadOnlyAdmin
from reviewq.models import GoldenTrace
from telemetry import exports
from telemetry.downloads import export_filename, jsonl_response
from telemetry.models import ModelCall, UpstreamCall


@admin.register(ModelCall)
class ModelCallAdmin(ReadOnlyAdmin):
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


@admin.register(UpstreamCall)
class UpstreamCallAdmin(ReadOnlyAdmin):
    """The team's own LLM calls (observe mode, imports) and the small model's answer beside each."""

    list_display = [
        "created_at",
        "source",
        "agent_key",
        "model_name",
        "tool_name",
        "latency_ms",
        "cost_usd",
        "would_hold",
        "slm_model",
        "agreement",
    ]
    list_filter = ["source", "agreement", "would_hold", "tool_name"]
    search_fields = ["tool_name", "model_name"]
    date_hierarchy = "created_at"


def _download(request: HttpRequest, queryset: QuerySet[GoldenTrace], format: str) -> StreamingHttpResponse:
    options = exports.export_options(format=format)
    lines = exports.export_lines(queryset, options)
    return jsonl_response(request, lines, filename=export_filename(options))


@admin.action(description="Download selected traces as SFT JSONL (chat fine-tuning)", permissions=["view"])
def export_selected_traces(
    modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet[GoldenTrace]
) -> StreamingHttpResponse:
    """The selection as SFT JSONL (approvals and edits; denials have no positive target)."""
    return _download(request, queryset, "sft")


@admin.action(description="Download selected traces as DPO JSONL (preference pairs)", permissions=["view"])
def export_selected_traces_dpo(
    modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet[GoldenTrace]
) -> StreamingHttpResponse:
    """The selection as DPO pairs (edits and denials)."""
    return _download(request, queryset, "dpo")


@admin.action(description="Download selected traces as raw JSONL (every column)", permissions=["view"])
def export_selected_traces_raw(
    modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet[GoldenTrace]
) -> StreamingHttpResponse:
    """The selection with every column, for analysis."""
    return _download(request, queryset, "raw")


@admin.register(GoldenTrace)
class GoldenTraceAdmin(ReadOnlyAdmin):
    list_display = ["id", "request", "decision", "reviewer", "time_to_decision_ms", "created_at"]
    list_filter = ["decision"]
    actions = [export_selected_traces, export_selected_traces_dpo, export_selected_traces_raw]
