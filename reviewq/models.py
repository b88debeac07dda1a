"""The gateway's records: agent keys, requests, tools and policies, held items, golden traces.

State changes never go through ``save()`` on a loaded row: a request or a review item moves with a
conditional UPDATE (see reviewq/transitions.py), so a redelivered task or a second reviewer can
never move it twice.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import datetime
from typing import Any

from django.conf import settings
from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import models
from django.db.models import Q

from reviewq.errors import ApplicationError
from router.conditions import check_condition, check_rules
from router.contracts import Tier
from router.models import ConfigModel


class AgentKey(models.Model):
    """A bearer key for the API. Only its SHA-256 is stored.

    An ``agent`` key submits requests and reads its own; an ``ops`` key reads across agents
    (trace export) and cannot submit requests.
    """

    class Scope(models.TextChoices):
        AGENT = "agent"
        OPS = "ops"

    class Mode(models.TextChoices):
        """What ``/v1/chat/completions`` does with this key's calls."""

        GATEWAY = "gateway", "Gateway: reviewq's pipeline answers (small model first, policies, review)"
        OBSERVE = "observe", "Observe: the upstream LLM answers; reviewq logs it and compares its small model"

    name = models.CharField(max_length=100)
    scope = models.CharField(max_length=8, choices=Scope.choices, default=Scope.AGENT)
    mode = models.CharField(max_length=8, choices=Mode.choices, default=Mode.GATEWAY)
    upstream_model = models.ForeignKey(
        "router.ModelSpec",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        help_text="Observe mode: the team's own LLM (an openai_compatible model in the registry) "
        "that answers this key's /v1/chat/completions calls.",
    )
    enforce_policies = models.BooleanField(
        default=False,
        help_text="Observe mode: an upstream tool call that a risk policy would not release is held "
        "for review instead of returned (off: it is only recorded as 'would have held').",
    )
    decision_wait_ms = models.PositiveIntegerField(
        default=10_000,
        help_text="How long /v1/chat/completions waits for a held action's decision before it "
        "answers that the action awaits review (at most MAX_WAIT_MS).",
    )
    # Signs webhooks to this agent's callback_url (HMAC-SHA256); shown once with the key.
    webhook_secret = models.CharField(max_length=64, blank=True)
    prefix = models.CharField(max_length=16, help_text="The first characters, to tell keys apart.")
    key_hash = models.CharField(max_length=64, unique=True)
    # The person who raised requests with this key: they may never decide on them.
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"


class RequestStatus(models.TextChoices):
    RECEIVED = "received"
    ROUTING = "routing"
    PROPOSING = "proposing"
    VALIDATING = "validating"
    ESCALATED = "escalated"
    ADJUDICATING = "adjudicating"
    AWAITING_REVIEW = "awaiting_review"
    RELEASED = "released"
    DENIED = "denied"
    EXPIRED = "expired"
    FAILED = "failed"
    CANCELLED = "cancelled"


# Risk tags whose actions are never released without a human unless ops wrote a bounded policy,
# and whose approval in the browser is a deliberate, confirmed act.
RISKY_TAGS = frozenset({"payment", "pii", "destructive"})

FINAL_STATUSES = frozenset(
    {
        RequestStatus.RELEASED,
        RequestStatus.DENIED,
        RequestStatus.EXPIRED,
        RequestStatus.FAILED,
        RequestStatus.CANCELLED,
    }
)
# States in which a worker owns the request; the sweeper re-enqueues them when the lease passes.
WORKING_STATUSES = frozenset(
    {
        RequestStatus.RECEIVED,
        RequestStatus.ROUTING,
        RequestStatus.PROPOSING,
        RequestStatus.VALIDATING,
        RequestStatus.ESCALATED,
        RequestStatus.ADJUDICATING,
    }
)


class ProposalSource(models.TextChoices):
    """Where a request's proposal came from: reviewq's own models, the agent itself
    (``proposed_action``), or the team's upstream LLM observed through /v1/chat/completions."""

    MODEL = "model"
    AGENT = "agent"
    UPSTREAM = "upstream"


class ToolChoice(models.TextChoices):
    """Whether a tool-use answer must call a tool (``required``) or may reply instead (``auto``)."""

    AUTO = "auto"
    REQUIRED = "required"


class DecisionBy(models.TextChoices):
    """Who or what decided a request, as its decision trail's ``"by"`` says.

    The pipeline when no model produced a valid action (held for a human); a risk policy on a
    validated action (released, denied, adjudicated or held); a reviewer; expiry; the agent that
    withdrew it (cancel).
    """

    PIPELINE = "pipeline"
    POLICY = "policy"
    REVIEWER = "reviewer"
    EXPIRY = "expiry"
    AGENT = "agent"


class Request(models.Model):
    """One agent request: a conversation and tools in, one action out."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    agent_key = models.ForeignKey(AgentKey, on_delete=models.PROTECT, related_name="requests")
    idempotency_key = models.CharField(max_length=255, blank=True)
    body_sha256 = models.CharField(max_length=64)

    messages = models.JSONField()
    tools = models.JSONField(default=list)
    task_type = models.CharField(max_length=32, blank=True)
    response_schema = models.JSONField(null=True, blank=True)
    labels = models.JSONField(null=True, blank=True)
    output_format = models.CharField(max_length=8, default="json", help_text="extraction: json or yaml")
    parallel_tool_calls = models.BooleanField(default=False, help_text="tool_use: may propose a plan")
    tool_choice = models.CharField(
        max_length=8, choices=ToolChoice.choices, default=ToolChoice.REQUIRED, help_text="tool_use: may reply"
    )
    proposed_by = models.CharField(max_length=8, choices=ProposalSource.choices, default=ProposalSource.MODEL)
    callback_url = models.URLField(max_length=500, blank=True)
    metadata = models.JSONField(default=dict, blank=True)

    status = models.CharField(
        max_length=20, choices=RequestStatus.choices, default=RequestStatus.RECEIVED, db_index=True
    )
    route = models.JSONField(default=dict, blank=True, help_text="Chosen model and why.")
    proposal = models.JSONField(null=True, blank=True, help_text="The last validated model proposal.")
    action = models.JSONField(null=True, blank=True, help_text="The released action.")
    decision = models.JSONField(default=dict, blank=True, help_text="Who or what decided, and why.")
    failure_reason = models.TextField(blank=True)

    # A worker owns a request in a working state until this time; then the sweeper takes over.
    lease_expires_at = models.DateTimeField(null=True, blank=True, db_index=True)
    pipeline_runs = models.PositiveSmallIntegerField(default=0)

    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["agent_key", "idempotency_key"],
                condition=~Q(idempotency_key=""),
                name="unique_idempotency_key_per_agent",
            )
        ]

    def __str__(self) -> str:
        return f"{self.id} ({self.status})"

    @property
    def is_final(self) -> bool:
        return self.status in FINAL_STATUSES


class ToolSpec(ConfigModel):
    """A tool ops know about, with the risk tags that policies match on."""

    class RiskTag(models.TextChoices):
        READ = "read"
        PAYMENT = "payment"
        PII = "pii"
        DESTRUCTIVE = "destructive"
        EXTERNAL_COMM = "external_comm"
        WRITE = "write"

    name = models.CharField(max_length=64, unique=True)
    description = models.TextField(blank=True)
    parameters = models.JSONField(default=dict, blank=True, help_text="JSON Schema of the arguments.")
    risk_tags = models.JSONField(default=list, blank=True, help_text='e.g. ["payment", "destructive"]')
    rules = models.JSONField(
        default=list,
        blank=True,
        help_text='Business rules every call must meet, e.g. [{"condition": "amount <= 500", '
        '"message": "refunds above 500 need a manager"}]. See router/conditions.py for the language.',
    )
    enabled = models.BooleanField(default=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        """Business rules must be valid in the condition language (admin and import_config)."""
        problem = check_rules(self.rules or [])
        if problem:
            raise ValidationError({"rules": problem})


class RiskPolicy(ConfigModel):
    """A deterministic rule: which actions it matches, and what happens to them."""

    class Decision(models.TextChoices):
        AUTO = "auto", "Release automatically"
        ADJUDICATE = "adjudicate", "Second-model check"
        HUMAN = "human", "Hold for a human"
        BLOCK = "block", "Block (deny)"

    class AdjudicatorApprove(models.TextChoices):
        RELEASE = "release", "release"
        HUMAN = "human", "hold for a human anyway"

    class AdjudicatorReject(models.TextChoices):
        HUMAN = "human", "hold for a human"
        DENY = "deny", "deny"

    name = models.CharField(max_length=100, unique=True)
    priority = models.IntegerField(default=100, help_text="Lower numbers are checked first.")
    tool_pattern = models.CharField(max_length=100, default="*", help_text="Shell-style, e.g. get_*")
    match_tags = models.JSONField(
        default=list, blank=True, help_text="Matches when the tool has any of these tags; empty: any."
    )
    condition = models.CharField(
        max_length=500,
        blank=True,
        help_text='On the call\'s arguments, e.g. amount > 500 or reason == "ordered by mistake". Empty: any.',  # noqa: E501
    )
    min_uncertainty = models.FloatField(
        null=True, blank=True, help_text="Matches when the proposal's uncertainty score is above this."
    )
    model_tier = models.CharField(
        max_length=4, choices=[("", "any tier"), *Tier.choices], blank=True, default=""
    )
    match_pii = models.BooleanField(default=False, help_text="Matches only when the arguments hold PII.")
    decision = models.CharField(max_length=16, choices=Decision.choices)
    adjudicator_tier = models.CharField(
        max_length=4,
        choices=Tier.choices,
        default=Tier.SLM,
        help_text="Which tier's adjudication model checks proposals under this policy "
        "(the small one is Gemma-3-270M by default).",
    )
    on_adjudicator_approve = models.CharField(
        max_length=8, choices=AdjudicatorApprove.choices, default=AdjudicatorApprove.RELEASE
    )
    on_adjudicator_reject = models.CharField(
        max_length=8, choices=AdjudicatorReject.choices, default=AdjudicatorReject.HUMAN
    )
    required_approvals = models.PositiveSmallIntegerField(default=1, help_text="2 for four-eyes.")
    requires_llm = models.BooleanField(
        default=False,
        help_text="Only an LLM-tier proposal may be decided under this policy; SLM ones escalate.",
    )
    reviewer_group = models.ForeignKey(Group, null=True, blank=True, on_delete=models.SET_NULL)
    sla_seconds = models.PositiveIntegerField(default=900)
    expiry_seconds = models.PositiveIntegerField(default=86400)
    notify_url = models.URLField(
        max_length=500,
        blank=True,
        help_text="Slack-compatible webhook, paged when nobody is on the queue and when an item breaches "
        "its SLA.",
    )
    notify_email = models.CharField(
        max_length=500,
        blank=True,
        help_text="Email addresses (comma-separated) paged as the webhook is, through the mail backend.",
    )
    enabled = models.BooleanField(default=True)

    class Meta:
        ordering = ["priority", "id"]
        verbose_name_plural = "risk policies"

    @property
    def notify_emails(self) -> list[str]:
        """The addresses ``notify_email`` names."""
        return [address.strip() for address in (self.notify_email or "").split(",") if address.strip()]

    def __str__(self) -> str:
        return f"{self.priority}: {self.name} → {self.decision}"

    def clean(self) -> None:
        """The condition must be valid in the condition language (admin and import_config)."""
        self.condition = (self.condition or "").strip()
        problem = check_condition(self.condition) if self.condition else None
        if problem:
            raise ValidationError({"condition": problem})
        for address in self.notify_emails:
            try:
                validate_email(address)
            except ValidationError:
                raise ValidationError({"notify_email": f"{address!r} is not an email address"}) from None


class ReviewItem(models.Model):
    """A held action waiting for a human."""

    class Status(models.TextChoices):
        PENDING = "pending"
        APPROVED = "approved"
        EDITED = "edited"
        DENIED = "denied"
        EXPIRED = "expired"
        WITHDRAWN = "withdrawn", "withdrawn by the agent"

    request = models.OneToOneField(Request, on_delete=models.CASCADE, related_name="review_item")
    policy = models.ForeignKey(RiskPolicy, null=True, blank=True, on_delete=models.SET_NULL)
    hold_reason = models.TextField(help_text="Why the action was held.")
    risk_tags = models.JSONField(default=list, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING, db_index=True)
    reviewer_group = models.ForeignKey(Group, null=True, blank=True, on_delete=models.SET_NULL)
    required_approvals = models.PositiveSmallIntegerField(default=1)
    # The action the approvals are for: the proposal, or a reviewer's edit of it.
    action_under_review = models.JSONField(null=True, blank=True)
    adjudication = models.JSONField(null=True, blank=True, help_text="The second model's verdict, if asked.")
    claimed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    claim_expires_at = models.DateTimeField(null=True, blank=True)
    alerted_at = models.DateTimeField(
        null=True, blank=True, help_text="When on-call was paged because nobody was on the queue."
    )
    sla_paged_at = models.DateTimeField(
        null=True, blank=True, help_text="When on-call was paged because it breached its SLA."
    )
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    sla_due_at = models.DateTimeField()
    expires_at = models.DateTimeField(db_index=True)
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    decided_at = models.DateTimeField(null=True, blank=True)
    decision_reason = models.TextField(blank=True)

    class Meta:
        ordering = ["created_at", "pk"]

    def __str__(self) -> str:
        return f"Review of {self.request_id} ({self.status})"

    @property
    def needs_confirmed_approval(self) -> bool:
        """A payment, a personal-data change or a destructive action: approving it in the browser
        takes a confirm step that names the action."""
        return bool(RISKY_TAGS.intersection(self.risk_tags or []))

    @property
    def action_digest(self) -> str:
        """A short digest of the action under review: an approval names the action it was for."""
        canonical = json.dumps(self.action_under_review, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    @property
    def action_summary(self) -> str:
        """The action under review on one line: each call with its arguments."""
        action = self.action_under_review or {}
        calls = action.get("tool_calls") or []
        if not calls:
            return action.get("type", "no valid proposal") if action else "no valid proposal"
        return "; ".join(
            f"{call['name']}("
            + ", ".join(
                f"{key}={json.dumps(value, ensure_ascii=False)}"
                for key, value in (call.get("arguments") or {}).items()
            )
            + ")"
            for call in calls
        )

    def check_may_decide(self, reviewer: Any, now: datetime) -> None:
        """Raises ApplicationError unless ``reviewer`` may decide this item at ``now``: separation of
        duties, group, expiry, finality and claims, checked in that order."""
        if self.request.agent_key.owner_id is not None and self.request.agent_key.owner_id == reviewer.pk:
            raise ApplicationError(
                "own_request", "you raised this request, so someone else must decide on it", status=403
            )
        if self.reviewer_group_id and not reviewer.is_superuser:
            if not reviewer.groups.filter(id=self.reviewer_group_id).exists():
                raise ApplicationError("wrong_group", "this item is for another reviewer group", status=403)
        if self.status == self.Status.EXPIRED or (
            self.status == self.Status.PENDING and self.expires_at <= now
        ):
            raise ApplicationError("expired", "this item expired before the decision", status=410)
        if self.status == self.Status.WITHDRAWN:
            raise ApplicationError(
                "withdrawn", "the agent withdrew this request: there is nothing to decide", status=410
            )
        if self.status != self.Status.PENDING:
            raise ApplicationError("already_decided", f"this item was already {self.status}", status=409)
        if (
            self.claimed_by_id
            and self.claimed_by_id != reviewer.pk
            and self.claim_expires_at
            and self.claim_expires_at > now
        ):
            raise ApplicationError(
                "claimed",
                f"{self.claimed_by} is working on this item until {self.claim_expires_at:%H:%M:%S}",
                status=409,
            )


class Approval(models.Model):
    """One reviewer's approval of an item's action under review (four-eyes needs two)."""

    item = models.ForeignKey(ReviewItem, on_delete=models.CASCADE, related_name="approvals")
    reviewer = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    action = models.JSONField(help_text="The action this approval is for.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at", "pk"]
        constraints = [models.UniqueConstraint(fields=["item", "reviewer"], name="one_approval_per_reviewer")]

    def __str__(self) -> str:
        return f"{self.reviewer_id} approved item {self.item_id}"


class AuditEvent(models.Model):
    """The append-only, hash-chained record of every decision and state change a human made.

    Rows are only ever inserted (database triggers refuse UPDATE and DELETE); each row's hash
    covers its content and the previous row's hash, so ``verify_audit_log`` finds any change.
    """

    seq = models.BigAutoField(primary_key=True)
    created_at = models.DateTimeField()
    actor = models.CharField(max_length=150, help_text="username, agent key name, or 'system'")
    kind = models.CharField(max_length=32)
    request_id = models.UUIDField(null=True, blank=True, db_index=True)
    item_id = models.BigIntegerField(null=True, blank=True)
    payload = models.JSONField(default=dict)
    prev_hash = models.CharField(max_length=64)
    hash = models.CharField(max_length=64, unique=True)

    class Meta:
        ordering = ["seq"]

    def __str__(self) -> str:
        return f"#{self.seq} {self.kind} by {self.actor}"


class WebhookDelivery(models.Model):
    """One outbound notification (an agent's callback, or an on-call page by webhook or email),
    retried until delivered."""

    class Kind(models.TextChoices):
        CALLBACK = "callback"
        ALERT = "alert"
        EMAIL = "email", "email page (url is mailto:)"

    class Status(models.TextChoices):
        PENDING = "pending"
        DELIVERED = "delivered"
        FAILED = "failed"

    delivery_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    kind = models.CharField(max_length=16, choices=Kind.choices)
    request = models.ForeignKey(
        Request, null=True, blank=True, on_delete=models.CASCADE, related_name="webhooks"
    )
    event = models.CharField(max_length=64, help_text="e.g. request.released; one delivery per event")
    url = models.URLField(max_length=500)
    payload = models.JSONField()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING, db_index=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    next_attempt_at = models.DateTimeField(db_index=True)
    last_error = models.TextField(blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at", "pk"]
        verbose_name_plural = "webhook deliveries"
        constraints = [
            models.UniqueConstraint(fields=["request", "event", "url"], name="one_delivery_per_event"),
        ]

    def __str__(self) -> str:
        return f"{self.event} to {self.url} ({self.status})"


class ReviewerPresence(models.Model):
    """A reviewer's open queue page (one row per WebSocket), for on-call alerting."""

    channel_name = models.CharField(max_length=255, unique=True)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    connected_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"{self.user_id} on {self.channel_name}"


class GoldenTraceQuerySet(models.QuerySet["GoldenTrace"]):
    def trusted(self) -> GoldenTraceQuerySet:
        """Traces no one flagged as a bad decision: what exports, datasets and training read."""
        return self.filter(flagged_bad_at__isnull=True)


class GoldenTrace(models.Model):
    """A human decision on a model proposal: the training signal for the next small model."""

    class Decision(models.TextChoices):
        APPROVE = "approve"
        EDIT = "edit"
        DENY = "deny"

    request = models.ForeignKey(Request, on_delete=models.CASCADE, related_name="golden_traces")
    review_item = models.ForeignKey(ReviewItem, on_delete=models.CASCADE, related_name="golden_traces")
    context = models.JSONField(help_text="messages and tools as the model saw them")
    proposal = models.JSONField(null=True, blank=True)
    proposed_by = models.CharField(max_length=8, choices=ProposalSource.choices, default=ProposalSource.MODEL)
    final_action = models.JSONField(
        null=True, blank=True, help_text="What the human released; null if denied."
    )
    decision = models.CharField(max_length=16, choices=Decision.choices)
    reason = models.TextField(blank=True)
    reviewer = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL)
    time_to_decision_ms = models.PositiveBigIntegerField()
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    # Ops flag a trace whose decision was a mistake: exports, datasets and training skip it.
    flagged_bad_at = models.DateTimeField(null=True, blank=True)
    flagged_bad_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    flagged_bad_reason = models.TextField(blank=True)

    objects = GoldenTraceQuerySet.as_manager()

    class Meta:
        ordering = ["created_at", "pk"]

    def __str__(self) -> str:
        return f"{self.decision} on {self.request_id}"

    @property
    def flagged_bad(self) -> bool:
        return self.flagged_bad_at is not None
