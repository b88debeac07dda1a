from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import path

from reviewq.admin_forms import CONDITION_LANGUAGE_HTML, RiskPolicyForm, ToolSpecForm
from reviewq.errors import ApplicationError
from reviewq.models import AgentKey, AuditEvent, Request, ReviewItem, RiskPolicy, ToolSpec, WebhookDelivery
from reviewq.pipeline.policies import preview_policies
from reviewq.services import learning
from router.contracts import Tier
from router.models import Adapter


@admin.register(AgentKey)
class AgentKeyAdmin(admin.ModelAdmin):
    list_display = [
        "name",
        "scope",
        "mode",
        "upstream_model",
        "enforce_policies",
        "prefix",
        "owner",
        "revoked_at",
    ]
    list_filter = ["scope", "mode"]
    readonly_fields = ["prefix", "key_hash", "webhook_secret", "created_at"]
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
    list_display = ["id", "agent_key", "status", "proposed_by", "created_at", "finished_at"]
    list_filter = ["status", "proposed_by", "agent_key"]
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


@admin.register(ToolSpec)
class ToolSpecAdmin(admin.ModelAdmin):
    # Rules are checked by ToolSpec.clean, as for import_config.
    form = ToolSpecForm
    fieldsets = [
        (None, {"fields": ["name", "description", "parameters", "risk_tags", "enabled"]}),
        ("Business rules", {"fields": ["rules"], "description": CONDITION_LANGUAGE_HTML}),
    ]
    list_display = ["name", "risk_tags", "enabled"]
    list_filter = ["enabled"]
    search_fields = ["name", "description"]


class PreviewForm(forms.Form):
    action = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 8, "cols": 80}),
        help_text='A proposed call {"name": ..., "arguments": {...}}, a list of them, '
        "or an action with tool_calls.",
    )
    uncertainty = forms.FloatField(required=False, min_value=0, max_value=1)
    tier = forms.ChoiceField(choices=Tier.choices, initial=Tier.SLM)


@admin.register(RiskPolicy)
class RiskPolicyAdmin(admin.ModelAdmin):
    # The condition is checked by RiskPolicy.clean, as for import_config.
    form = RiskPolicyForm
    fieldsets = [
        (None, {"fields": ["name", "priority", "enabled"]}),
        (
            "Which actions it matches",
            {
                "fields": [
                    "tool_pattern",
                    "match_tags",
                    "condition",
                    "min_uncertainty",
                    "model_tier",
                    "match_pii",
                    "requires_llm",
                ],
                "description": CONDITION_LANGUAGE_HTML,
            },
        ),
        (
            "What happens to them",
            {
                "fields": [
                    "decision",
                    "adjudicator_tier",
                    "on_adjudicator_approve",
                    "on_adjudicator_reject",
                    "required_approvals",
                    "reviewer_group",
                ]
            },
        ),
        (
            "Review timing and paging",
            {"fields": ["sla_seconds", "expiry_seconds", "notify_url", "notify_email"]},
        ),
    ]
    list_display = [
        "priority",
        "name",
        "tool_pattern",
        "match_tags",
        "condition",
        "decision",
        "required_approvals",
        "enabled",
    ]
    list_display_links = ["name"]
    list_filter = ["decision", "enabled"]
    ordering = ["priority"]
    change_list_template = "admin/reviewq/riskpolicy/change_list.html"

    def get_urls(self):  # type: ignore[no-untyped-def]
        preview = path(
            "preview/", self.admin_site.admin_view(self.preview_view), name="reviewq_riskpolicy_preview"
        )
        return [preview, *super().get_urls()]

    def preview_view(self, request: HttpRequest) -> HttpResponse:
        """Paste a proposed action: see which policy matches it, and why each other one does not."""
        form = PreviewForm(request.POST or None)
        result = None
        if request.method == "POST" and form.is_valid():
            try:
                result = preview_policies(
                    form.cleaned_data["action"],
                    uncertainty=form.cleaned_data["uncertainty"],
                    tier=form.cleaned_data["tier"],
                )
            except ApplicationError as exc:
                form.add_error("action", exc.message)
        context = {
            **self.admin_site.each_context(request),
            "form": form,
            "result": result,
            "title": "Preview risk policies",
            "opts": self.model._meta,
        }
        return TemplateResponse(request, "admin/reviewq/riskpolicy/preview.html", context)


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdmin):
    list_display = ["seq", "created_at", "actor", "kind", "request_id", "item_id"]
    list_filter = ["kind"]
    search_fields = ["actor", "request_id"]

    def has_delete_permission(self, request, obj=None) -> bool:  # type: ignore[no-untyped-def]
        return False


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(ReadOnlyAdmin):
    list_display = ["delivery_id", "kind", "event", "url", "status", "attempts", "last_error", "created_at"]
    list_filter = ["kind", "status"]


@admin.register(Adapter)
class AdapterAdmin(admin.ModelAdmin):
    """LoRA adapters of the learning loop (reviewq/services/learning.py): replay figures, and
    promotion (refused when replay found the candidate worse on a cluster) and rollback."""

    list_display = [
        "name",
        "base",
        "status",
        "cluster",
        "dataset_version",
        "rows_used",
        "exact_on_replay",
        "created_at",
    ]
    list_filter = ["status", "base"]
    readonly_fields = [*(field.name for field in Adapter._meta.fields), "shadow_on_live_traffic"]
    actions = ["shadow", "promote", "roll_back"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # adapters are trained (manage.py train_adapter, or a cluster's admin action)

    @admin.display(description="exact on replay (served now → adapter)")
    def exact_on_replay(self, adapter: Adapter) -> str:
        report = adapter.replay_report
        if not report:
            return "not replayed"
        return f"{report['base']['exact']:.0%} → {report['candidate']['exact']:.0%} of {report['rows']}"

    @admin.display(description="shadow: agrees with what was released")
    def shadow_on_live_traffic(self, adapter: Adapter) -> str:
        figures = learning.shadow_agreement(adapter)
        if not figures["compared"]:
            return "no released request answered yet"
        return f"{figures['agreed']} of {figures['compared']} ({figures['rate']:.0%})"

    @admin.action(description="Shadow: answer live requests beside its base, never released")
    def shadow(self, request: HttpRequest, queryset: QuerySet[Adapter]) -> None:
        self._each(request, queryset, learning.shadow, "{adapter} answers beside {base} now")

    @admin.action(description="Promote: serve it over its base model")
    def promote(self, request: HttpRequest, queryset: QuerySet[Adapter]) -> None:
        self._each(request, queryset, learning.promote, "{base} now serves {adapter}")

    def _each(self, request: HttpRequest, queryset: QuerySet[Adapter], step: Any, done: str) -> None:
        """Runs a learning-loop step on each selected adapter, saying what it did or why not."""
        for adapter in queryset:
            try:
                step(adapter, actor=request.user.get_username())
            except ApplicationError as exc:
                self.message_user(request, f"{adapter.name}: {exc.message}", messages.ERROR)
            else:
                self.message_user(request, done.format(adapter=adapter.name, base=adapter.base.name))

    @admin.action(description="Roll back: its base serves no adapter")
    def roll_back(self, request: HttpRequest, queryset: QuerySet[Adapter]) -> None:
        for adapter in queryset.filter(status=Adapter.Status.PROMOTED):
            learning.retire(adapter, actor=request.user.get_username())
            self.message_user(request, f"{adapter.name} is retired: {adapter.base.name} answers without it")
