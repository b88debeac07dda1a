"""Telemetry in the admin, read-only: the model-call log, upstream calls, golden traces (downloadable
as JSONL), task clusters (with the action that trains an adapter for one) and datasets."""

from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, StreamingHttpResponse

from reviewq.admin import ReadOnlyAdmin
from reviewq.models import GoldenTrace
from reviewq.runtime.dispatch import later
from router.contracts import TaskType, Tier
from router.models import ModelSpec
from telemetry import exports
from telemetry.downloads import export_filename, jsonl_response
from telemetry.models import Dataset, ModelCall, TaskCluster, UpstreamCall


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


@admin.register(TaskCluster)
class TaskClusterAdmin(ReadOnlyAdmin):
    """The tasks the traffic keeps asking for, rebuilt by ``manage.py build_clusters``."""

    list_display = [
        "final",
        "label",
        "traces",
        "share",
        "cost_usd",
        "first_proposal_accuracy",
        "escalation_rate",
        "human_edit_rate",
        "risky",
        "candidate",
    ]
    list_filter = ["candidate", "risky", "final"]
    search_fields = ["label", "final"]
    readonly_fields = ["candidate_reason"]
    actions = ["train_adapter"]

    @admin.action(description="Train an adapter for the cheapest small model (on the training queue)")
    def train_adapter(self, request: HttpRequest, queryset: QuerySet[TaskCluster]) -> None:
        base = cheapest_tool_use_base()
        if base is None:
            self.message_user(request, "no enabled llama.cpp small model proposes tool calls", messages.ERROR)
            return
        for cluster in queryset:
            later("reviewq.tasks.train_adapter", base.name, cluster.key, request.user.get_username())
        self.message_user(
            request,
            f"training queued for {queryset.count()} cluster(s) on {base.name}: the Adapters page shows "
            "each adapter once trained and replayed",
        )


@admin.register(Dataset)
class DatasetAdmin(ReadOnlyAdmin):
    """Versioned training sets, built by ``manage.py build_dataset``."""

    list_display = ["version", "train_rows", "replay_rows", "negative_rows", "sha256", "created_at"]
    readonly_fields = ["filters", "counts", "path"]


def cheapest_tool_use_base() -> ModelSpec | None:
    """The small llama.cpp model the ladder tries first for tool calls: the one to specialise."""
    candidates = [
        spec
        for spec in ModelSpec.objects.filter(tier=Tier.SLM, enabled=True, backend=ModelSpec.Backend.LLAMA_CPP)
        if TaskType.TOOL_USE in (spec.strengths or [])
    ]
    return min(candidates, key=lambda spec: (spec.price_input_per_mtok, spec.name), default=None)


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
