"""Telemetry in the admin, read-only: the model-call log, upstream calls, golden traces (downloadable
as JSONL), task clusters (with the action that trains an adapter for one) and datasets."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.template.response import TemplateResponse

from reviewq.admin import ReadOnlyAdmin
from reviewq.models import GoldenTrace
from reviewq.runtime.dispatch import later
from reviewq.services import decisions
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


class FlagReasonForm(forms.Form):
    reason = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3, "cols": 80}),
        help_text="Why these decisions were wrong (kept in the audit log).",
    )


class FlaggedBadFilter(admin.SimpleListFilter):
    title = "flagged as a bad decision"
    parameter_name = "flagged_bad"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("yes", "Flagged: skipped by exports and training"), ("no", "Trusted")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[GoldenTrace]) -> QuerySet[GoldenTrace]:
        if self.value() in ("yes", "no"):
            return queryset.filter(flagged_bad_at__isnull=self.value() == "no")
        return queryset


@admin.register(GoldenTrace)
class GoldenTraceAdmin(ReadOnlyAdmin):
    list_display = [
        "id",
        "request",
        "decision",
        "reviewer",
        "time_to_decision_ms",
        "created_at",
        "flagged_bad_reason",
    ]
    list_filter = ["decision", FlaggedBadFilter]
    actions = [
        export_selected_traces,
        export_selected_traces_dpo,
        export_selected_traces_raw,
        "flag_bad",
        "unflag",
    ]

    @admin.action(description="Flag as a bad decision (exports and training skip it)")
    def flag_bad(self, request: HttpRequest, queryset: QuerySet[GoldenTrace]) -> HttpResponse | None:
        form = FlagReasonForm(request.POST if "reason" in request.POST else None)
        if form.is_bound and form.is_valid():
            count = decisions.golden_traces_flag_bad(
                trace_ids=list(queryset.values_list("id", flat=True)),
                actor=request.user,  # type: ignore[arg-type]  # the admin's user is logged in
                reason=form.cleaned_data["reason"],
            )
            self.message_user(request, f"{count} traces flagged: exports and training skip them")
            return None
        context = {
            **self.admin_site.each_context(request),
            "title": "Flag golden traces as bad decisions",
            "form": form,
            "traces": queryset,
            "action_checkbox_name": ACTION_CHECKBOX_NAME,
            "opts": self.model._meta,
        }
        return TemplateResponse(request, "admin/telemetry/goldentrace/flag_bad.html", context)

    @admin.action(description="Trust again (undo the bad-decision flag)")
    def unflag(self, request: HttpRequest, queryset: QuerySet[GoldenTrace]) -> None:
        count = decisions.golden_traces_unflag(
            trace_ids=list(queryset.values_list("id", flat=True)),
            actor=request.user,  # type: ignore[arg-type]
        )
        self.message_user(request, f"{count} traces trusted again")
