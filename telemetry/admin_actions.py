"""Admin actions on golden traces: download the selection as JSONL, in each export format."""

from __future__ import annotations

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest, StreamingHttpResponse

from reviewq.models import GoldenTrace
from telemetry import exports


def _download(request: HttpRequest, queryset: QuerySet[GoldenTrace], format: str) -> StreamingHttpResponse:
    options = exports.export_options(format=format)
    lines = exports.export_lines(queryset, options)
    return exports.jsonl_response(request, lines, filename=exports.export_filename(options))


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
