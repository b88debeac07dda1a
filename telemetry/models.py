"""The model-call log: one row per call to any model, successful or not."""

from __future__ import annotations

from django.db import models

from router.contracts import Agreement, Tier, Trigger


class ModelCall(models.Model):
    class Purpose(models.TextChoices):
        PROPOSE = "propose", "Propose an action"
        RETRY = "retry", "Retry with validation errors"
        ESCALATE = "escalate", "Escalated to the LLM"
        ADJUDICATE = "adjudicate", "Adjudicate a proposal"
        ROUTE = "route", "Classify the task type"
        SHADOW = "shadow", "A shadow adapter's answer (never released)"

    request = models.ForeignKey("reviewq.Request", on_delete=models.CASCADE, related_name="model_calls")
    model_spec = models.ForeignKey("router.ModelSpec", null=True, blank=True, on_delete=models.SET_NULL)
    model_name = models.CharField(max_length=100)
    tier = models.CharField(max_length=8, choices=Tier.choices)
    purpose = models.CharField(max_length=16, choices=Purpose.choices, default=Purpose.PROPOSE)
    attempt = models.PositiveSmallIntegerField(default=1)
    prompt = models.TextField(blank=True)
    raw_output = models.TextField(blank=True)
    parsed_output = models.JSONField(null=True, blank=True)
    latency_ms = models.FloatField(default=0)
    tokens_in = models.PositiveIntegerField(default=0)
    tokens_out = models.PositiveIntegerField(default=0)
    cost_usd = models.DecimalField(max_digits=12, decimal_places=8, default=0)
    validation_errors = models.JSONField(default=list, blank=True)
    uncertainty = models.JSONField(null=True, blank=True)
    error = models.TextField(blank=True, help_text="Backend failure, if the call itself failed.")
    escalated = models.BooleanField(default=False)
    trigger = models.CharField(
        max_length=64, blank=True, choices=Trigger.choices, help_text="What caused the next step."
    )
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["created_at", "id"]

    def __str__(self) -> str:
        return f"{self.model_name} {self.purpose} #{self.attempt} ({self.latency_ms:.0f} ms)"

    @property
    def is_valid(self) -> bool:
        return not self.error and not self.validation_errors


class UpstreamCall(models.Model):
    """One call a team's own LLM answered: observed through /v1/chat/completions, or imported
    from the team's logs. What the small model would have answered is recorded beside it, so
    the dashboard can say where it already agrees and what moving that share would save."""

    class Source(models.TextChoices):
        OBSERVED = "observed", "Observed through /v1/chat/completions"
        IMPORTED = "imported", "Imported from logs"

    source = models.CharField(max_length=8, choices=Source.choices)
    agent_key = models.ForeignKey(
        "reviewq.AgentKey", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # SHA-256 of the canonical messages, tools and answer: an imported line is stored once.
    content_sha256 = models.CharField(max_length=64, db_index=True)
    model_name = models.CharField(max_length=200, blank=True, help_text="The upstream model.")
    messages = models.JSONField(default=list)
    tools = models.JSONField(default=list, blank=True)
    answer = models.JSONField(
        null=True, blank=True, help_text="The upstream LLM's assistant message (null if the call failed)."
    )
    tool_name = models.CharField(max_length=64, blank=True, help_text="Its first tool call; empty: a reply.")
    task_type = models.CharField(max_length=32, blank=True)
    latency_ms = models.FloatField(default=0)
    tokens_in = models.PositiveIntegerField(default=0)
    tokens_out = models.PositiveIntegerField(default=0)
    cost_usd = models.DecimalField(max_digits=12, decimal_places=8, default=0)
    error = models.TextField(blank=True, help_text="Why the upstream call failed, if it did.")
    # The risk policies' decision on the upstream answer, and whether it was enforced.
    policy_decision = models.CharField(max_length=16, blank=True)
    policy_name = models.CharField(max_length=100, blank=True)
    would_hold = models.BooleanField(null=True, blank=True, help_text="A policy would not have released it.")
    held_request = models.ForeignKey(
        "reviewq.Request", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # The small model's answer on the same input, proposed off the hot path.
    slm_model = models.CharField(max_length=100, blank=True)
    slm_answer = models.JSONField(null=True, blank=True)
    slm_issues = models.JSONField(default=list, blank=True)
    slm_latency_ms = models.FloatField(null=True, blank=True)
    slm_cost_usd = models.DecimalField(max_digits=12, decimal_places=8, null=True, blank=True)
    agreement = models.CharField(max_length=16, choices=Agreement.choices, blank=True, db_index=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["created_at", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["content_sha256"],
                condition=models.Q(source="imported"),
                name="one_imported_call_per_content",
            )
        ]

    def __str__(self) -> str:
        return f"{self.source} {self.model_name} {self.tool_name or 'reply'}"


class TaskCluster(models.Model):
    """A task the traffic keeps asking for: one tool set, one final tool (or task type), and
    requests whose text is alike. Rebuilt by ``manage.py build_clusters`` (telemetry/clusters.py)."""

    key = models.CharField(max_length=64, unique=True, help_text="Stable across rebuilds of the same data.")
    tool_set = models.JSONField(default=list, help_text="The names of the tools the requests offered.")
    final = models.CharField(max_length=100, help_text="The tool the final action called, or the task type.")
    label = models.CharField(max_length=200, help_text="The request text closest to the cluster's centre.")
    traces = models.PositiveIntegerField(default=0)
    share = models.FloatField(default=0, help_text="Of all clustered traces.")
    cost_usd = models.DecimalField(max_digits=14, decimal_places=8, default=0)
    first_proposal_accuracy = models.FloatField(
        null=True, blank=True, help_text="The small model's first proposal against the final action."
    )
    escalation_rate = models.FloatField(null=True, blank=True)
    human_edit_rate = models.FloatField(null=True, blank=True, help_text="Of the human decisions.")
    risky = models.BooleanField(default=False, help_text="Its final tool moves money, PII or deletes.")
    candidate = models.BooleanField(default=False, help_text="Worth a specialist adapter.")
    candidate_reason = models.CharField(max_length=300, blank=True)
    built_at = models.DateTimeField()

    class Meta:
        ordering = ["-traces", "key"]

    def __str__(self) -> str:
        return f"{self.final}: {self.label[:60]} ({self.traces})"


class ClusterMember(models.Model):
    """One trace of a cluster: a finished request, or an upstream LLM call."""

    cluster = models.ForeignKey(TaskCluster, on_delete=models.CASCADE, related_name="members")
    request = models.ForeignKey(
        "reviewq.Request", null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    upstream_call = models.ForeignKey(
        UpstreamCall, null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )

    def __str__(self) -> str:
        return f"{self.cluster_id}: {self.request_id or self.upstream_call_id}"


class Dataset(models.Model):
    """A stored, versioned training set: train and replay rows (and DPO negatives) as JSONL files
    under DATA_DIR/datasets/, with the filters that reproduce it (telemetry/datasets.py)."""

    version = models.PositiveIntegerField(unique=True)
    filters = models.JSONField(default=dict)
    sha256 = models.CharField(
        max_length=64, help_text="Of the rows, in order: the same data and filters give the same hash."
    )
    train_rows = models.PositiveIntegerField(default=0)
    replay_rows = models.PositiveIntegerField(default=0)
    negative_rows = models.PositiveIntegerField(default=0)
    counts = models.JSONField(
        default=dict, help_text="Rows per split, source and cluster; what was skipped and why."
    )
    path = models.CharField(max_length=500)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-version"]

    def __str__(self) -> str:
        return f"dataset v{self.version} ({self.train_rows} train, {self.replay_rows} replay)"


class ReplayTrace(models.Model):
    """A trace held out for replay evaluation: no dataset ever puts it in its train split."""

    trace = models.CharField(max_length=64, unique=True, help_text="request:<id> or upstream:<id>")
    dataset = models.ForeignKey(
        Dataset, on_delete=models.PROTECT, related_name="+", help_text="The first to hold it out."
    )

    def __str__(self) -> str:
        return self.trace
