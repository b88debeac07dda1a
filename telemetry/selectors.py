"""Reads for the dashboard: what the gateway did over a window of time.

Counts and sums are aggregated in the database. Percentiles use PostgreSQL's
``percentile_cont`` there; elsewhere (SQLite, the embedded mode) they are computed in Python
over the window's most recent values, at most ``PERCENTILE_SAMPLE_CAP`` of them, so a big
window stays a bounded read.

A request belongs to the window in which it was created; its model calls, cost and outcome go
with it, so "spent" and "what the LLM would have cost" always compare the same requests.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from django.db import connection
from django.db.models import (
    Aggregate,
    Case,
    CharField,
    Count,
    DurationField,
    Exists,
    ExpressionWrapper,
    F,
    FloatField,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Sum,
    Value,
    When,
)
from django.db.models.fields.json import KeyTextTransform, KeyTransform
from django.db.models.functions import Cast, Coalesce, TruncHour
from django.utils import timezone

from reviewq.models import DecisionBy, GoldenTrace, Request, RequestStatus, ReviewItem
from router.contracts import Tier
from router.defaults import DEFAULT_MODELS
from router.models import ModelSpec, price
from telemetry.models import ModelCall

# Percentiles outside PostgreSQL are computed over at most this many of the newest values.
PERCENTILE_SAMPLE_CAP = 20_000

# Outcome key, label, in the order the charts stack them.
OUTCOMES: list[tuple[str, str]] = [
    ("auto_released", "Auto-released"),
    ("adjudicated", "Adjudicated"),
    ("approved", "Approved"),
    ("edited", "Edited"),
    ("denied", "Denied by a reviewer"),
    ("blocked", "Blocked by policy"),
    ("expired", "Expired"),
    ("failed", "Failed"),
    ("cancelled", "Withdrawn by the agent"),
    ("pending", "In progress or held"),
]


@dataclass(frozen=True)
class Window:
    """A dashboard time window and the width of its chart buckets."""

    key: str
    span: timedelta
    bucket: timedelta
    bucket_label: str
    label_format: str

    @property
    def buckets(self) -> int:
        return self.span // self.bucket


WINDOWS: dict[str, Window] = {
    "24h": Window("24h", timedelta(hours=24), timedelta(hours=1), "per hour", "%H:00"),
    "7d": Window("7d", timedelta(days=7), timedelta(hours=6), "per 6 hours", "%a %H:00"),
    "30d": Window("30d", timedelta(days=30), timedelta(days=1), "per day", "%b %d"),
}
DEFAULT_WINDOW = "24h"


class UnknownWindow(ValueError):
    """The window parameter names no known window."""


def window_get(key: str | None) -> Window:
    """The window named ``key`` (``None`` or empty: the default); UnknownWindow otherwise."""
    if not key:
        return WINDOWS[DEFAULT_WINDOW]
    try:
        return WINDOWS[key]
    except KeyError:
        raise UnknownWindow(f"window must be one of {', '.join(WINDOWS)}, not {key!r}") from None


@dataclass(frozen=True)
class Percentiles:
    count: int
    p50: float | None
    p95: float | None


@dataclass(frozen=True)
class Spend:
    """Money actually spent on the window's requests, against the all-LLM baseline."""

    actual_usd: Decimal
    baseline_usd: Decimal
    baseline_model: str
    tokens_in: int
    tokens_out: int
    by_tier: dict[str, Decimal]
    # Running totals per bucket, for the chart.
    actual_cumulative: list[float]
    baseline_cumulative: list[float]

    @property
    def saving_factor(self) -> float | None:
        """How many times cheaper than the LLM alone; None when nothing was spent."""
        if self.actual_usd <= 0:
            return None
        return float(self.baseline_usd / self.actual_usd)


@dataclass(frozen=True)
class ValidatorRate:
    validator: str
    failures: int
    rate: float


@dataclass(frozen=True)
class ToolEditShare:
    tool: str
    decisions: int
    edits: int

    @property
    def share(self) -> float:
        return self.edits / self.decisions if self.decisions else 0.0


@dataclass
class Dashboard:
    window: Window
    start: datetime
    bucket_starts: list[datetime]
    outcomes_per_bucket: dict[str, list[int]]
    outcome_totals: dict[str, int]
    requests_total: int
    escalated_total: int
    escalation_rate_per_bucket: list[float | None]
    escalations_by_trigger: list[tuple[str, int]]
    spend: Spend
    latency_by_tier: dict[str, Percentiles]
    latency_end_to_end: dict[str, Percentiles]
    validated_calls: int
    failed_validation_calls: int
    validator_rates: list[ValidatorRate]
    time_to_decision: Percentiles
    time_to_decision_by_decision: dict[str, Percentiles]
    edit_share_by_tool: list[ToolEditShare]
    pending_reviews: int
    notes: list[str] = field(default_factory=list)

    @property
    def escalation_rate(self) -> float | None:
        return self.escalated_total / self.requests_total if self.requests_total else None

    @property
    def auto_release_rate(self) -> float | None:
        if not self.requests_total:
            return None
        return self.outcome_totals.get("auto_released", 0) / self.requests_total

    @property
    def human_decisions(self) -> int:
        return self.time_to_decision.count


# --- Building blocks, shared with the Prometheus collector ---


def outcome_expression() -> Case:
    """A request's outcome, from its status and who decided (``decision["by"]``).

    The pipeline marks a policy decision the second model settled with ``"decision":
    "adjudicated"`` and the verdict under ``"adjudication"``; a reviewer's later decision
    replaces that trail, so an adjudicated-then-held request counts as the reviewer's.
    """
    adjudicated = Q(decision__by=DecisionBy.POLICY) & (
        Q(decision__decision__in=["adjudicate", "adjudicated"]) | Q(decision__has_key="adjudication")
    )
    released = Q(status=RequestStatus.RELEASED)
    return Case(
        When(
            Q(status__in=[RequestStatus.RELEASED, RequestStatus.DENIED]) & adjudicated,
            then=Value("adjudicated"),
        ),
        When(released & Q(decision__decision="edit"), then=Value("edited")),
        When(released & Q(decision__by=DecisionBy.REVIEWER), then=Value("approved")),
        When(released, then=Value("auto_released")),
        When(status=RequestStatus.DENIED, decision__by=DecisionBy.REVIEWER, then=Value("denied")),
        When(status=RequestStatus.DENIED, then=Value("blocked")),
        When(status=RequestStatus.EXPIRED, then=Value("expired")),
        When(status=RequestStatus.FAILED, then=Value("failed")),
        When(status=RequestStatus.CANCELLED, then=Value("cancelled")),
        default=Value("pending"),
        output_field=CharField(),
    )


def escalated_calls() -> QuerySet[ModelCall]:
    """Calls that show their request climbed the ladder: the SLM call that gave up, or any LLM call."""
    return ModelCall.objects.filter(Q(escalated=True) | Q(purpose=ModelCall.Purpose.ESCALATE))


def end_to_end_expression() -> ExpressionWrapper:
    """A finished request's end-to-end latency: from the agent's POST to the final decision."""
    return ExpressionWrapper(F("finished_at") - F("created_at"), output_field=DurationField())


def baseline_spec(tokens_in: int = 1, tokens_out: int = 1) -> tuple[str, Decimal, Decimal]:
    """The LLM prices the baseline uses: (model name, input price, output price) per million tokens.

    The cheapest enabled LLM-tier model for this token mix; with none enabled (no API key yet),
    the seeded LLM's prices, so the comparison still means "had every request gone to the LLM".
    """
    candidates = list(
        ModelSpec.objects.filter(tier=Tier.LLM, enabled=True).values_list(
            "name", "price_input_per_mtok", "price_output_per_mtok"
        )
    )
    if not candidates:
        seeded = next(spec for spec in DEFAULT_MODELS if spec["tier"] == Tier.LLM)
        # Ops may have corrected the seeded row's prices even while it is disabled.
        row = ModelSpec.objects.filter(name=seeded["name"]).values_list(
            "name", "price_input_per_mtok", "price_output_per_mtok"
        )
        candidates = list(row) or [
            (seeded["name"], seeded["price_input_per_mtok"], seeded["price_output_per_mtok"])
        ]
    return min(candidates, key=lambda c: tokens_in * c[1] + tokens_out * c[2])


class PercentileCont(Aggregate):
    """PostgreSQL's ordered-set aggregate ``percentile_cont(f) WITHIN GROUP (ORDER BY x)``."""

    function = "PERCENTILE_CONT"
    template = "%(function)s(%(fraction)s) WITHIN GROUP (ORDER BY %(expressions)s)"

    def __init__(self, expression: Any, fraction: float, **extra: Any) -> None:
        # A float we produce, never user input, is interpolated into the SQL.
        super().__init__(expression, fraction=repr(float(fraction)), **extra)


def percentile(sorted_values: Sequence[float], fraction: float) -> float | None:
    """Linear interpolation between closest ranks, as ``percentile_cont`` does."""
    if not sorted_values:
        return None
    position = (len(sorted_values) - 1) * fraction
    low, high = math.floor(position), math.ceil(position)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (position - low)


def _as_ms(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, timedelta):
        return value.total_seconds() * 1000
    return float(value)


def percentiles_by(
    queryset: QuerySet[Any], value: Any, *, group: str | None = None, duration: bool = False
) -> dict[str, Percentiles]:
    """p50 and p95 of ``value`` over ``queryset``, per distinct ``group`` (or under "all").

    ``value`` is a field name or an expression; ``duration`` says it is a DurationField (the
    result is then in milliseconds, like the other latencies).
    """
    expression = F(value) if isinstance(value, str) else value
    queryset = queryset.annotate(measured=expression).filter(measured__isnull=False).order_by()
    group_field = group or "everything"
    if group is None:
        queryset = queryset.annotate(everything=Value("all", output_field=CharField()))
    counts = dict(queryset.values_list(group_field).annotate(n=Count("pk")).values_list(group_field, "n"))
    if connection.vendor == "postgresql":
        output: DurationField | FloatField = DurationField() if duration else FloatField()
        source = F("measured") if duration else Cast("measured", FloatField())
        rows = queryset.values(group_field).annotate(
            p50=PercentileCont(source, 0.5, output_field=output),
            p95=PercentileCont(source, 0.95, output_field=output),
        )
        return {
            str(row[group_field]): Percentiles(
                counts[row[group_field]], _as_ms(row["p50"]), _as_ms(row["p95"])
            )
            for row in rows
        }
    samples: dict[str, list[float]] = defaultdict(list)
    newest_first = queryset.order_by("-pk").values_list(group_field, "measured")[:PERCENTILE_SAMPLE_CAP]
    for key, raw in newest_first:
        measured = _as_ms(raw)
        if measured is not None:
            samples[str(key)].append(measured)
    result = {}
    for key, values in samples.items():
        values.sort()
        result[key] = Percentiles(
            counts.get(key, len(values)), percentile(values, 0.5), percentile(values, 0.95)
        )
    return result


# --- The dashboard ---


def _floor(moment: datetime, bucket: timedelta) -> datetime:
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    return epoch + ((moment - epoch) // bucket) * bucket


def window_buckets(window: Window, now: datetime | None = None) -> list[datetime]:
    """The starts of the window's buckets, oldest first; the last one holds ``now``."""
    last = _floor(now or timezone.now(), window.bucket)
    return [last - window.bucket * (window.buckets - 1 - index) for index in range(window.buckets)]


def _bucket_index(moment: datetime, buckets: list[datetime], width: timedelta) -> int | None:
    index = (moment - buckets[0]) // width
    return index if 0 <= index < len(buckets) else None


def dashboard_get(*, window: Window, now: datetime | None = None) -> Dashboard:
    """Everything the dashboard shows for ``window``, ending now."""
    buckets = window_buckets(window, now)
    start = buckets[0]
    requests = Request.objects.filter(created_at__gte=start)
    # A shadow adapter's answers serve nobody: they are the adapter's evaluation, not the traffic's.
    calls = ModelCall.objects.filter(request__created_at__gte=start).exclude(purpose=ModelCall.Purpose.SHADOW)

    outcomes, totals, escalated_per_bucket, requests_per_bucket = _outcomes(requests, buckets, window)
    requests_total = sum(totals.values())
    escalated_total = sum(escalated_per_bucket)
    validated, failed, rates = _validator_rates(calls)
    decisions = GoldenTrace.objects.filter(created_at__gte=start)
    return Dashboard(
        window=window,
        start=start,
        bucket_starts=buckets,
        outcomes_per_bucket=outcomes,
        outcome_totals=totals,
        requests_total=requests_total,
        escalated_total=escalated_total,
        escalation_rate_per_bucket=[
            escalated / total if total else None
            for escalated, total in zip(escalated_per_bucket, requests_per_bucket, strict=True)
        ],
        escalations_by_trigger=_escalations_by_trigger(requests),
        spend=_spend(calls, buckets, window),
        latency_by_tier=percentiles_by(calls.filter(error=""), "latency_ms", group="tier"),
        latency_end_to_end=_end_to_end(requests),
        validated_calls=validated,
        failed_validation_calls=failed,
        validator_rates=rates,
        time_to_decision=percentiles_by(decisions, "time_to_decision_ms").get(
            "all", Percentiles(0, None, None)
        ),
        time_to_decision_by_decision=percentiles_by(decisions, "time_to_decision_ms", group="decision"),
        edit_share_by_tool=_edit_share_by_tool(decisions),
        pending_reviews=ReviewItem.objects.filter(status=ReviewItem.Status.PENDING).count(),
    )


def _outcomes(
    requests: QuerySet[Request], buckets: list[datetime], window: Window
) -> tuple[dict[str, list[int]], dict[str, int], list[int], list[int]]:
    """Requests per bucket by outcome, and per bucket how many escalated, in one grouped query."""
    rows = (
        requests.annotate(
            hour=TruncHour("created_at"),
            outcome=outcome_expression(),
            climbed=Exists(escalated_calls().filter(request=OuterRef("pk"))),
        )
        .order_by()
        .values("hour", "outcome", "climbed")
        .annotate(n=Count("pk"))
    )
    per_bucket = {key: [0] * len(buckets) for key, _ in OUTCOMES}
    totals: Counter[str] = Counter()
    escalated = [0] * len(buckets)
    for row in rows:
        index = _bucket_index(row["hour"], buckets, window.bucket)
        if index is None:
            continue
        per_bucket[row["outcome"]][index] += row["n"]
        totals[row["outcome"]] += row["n"]
        if row["climbed"]:
            escalated[index] += row["n"]
    per_bucket_total = [sum(series[i] for series in per_bucket.values()) for i in range(len(buckets))]
    return per_bucket, {key: totals[key] for key, _ in OUTCOMES}, escalated, per_bucket_total


def _escalations_by_trigger(requests: QuerySet[Request]) -> list[tuple[str, int]]:
    """Escalated requests per trigger: the first trigger that made the request climb."""
    first_trigger = (
        ModelCall.objects.filter(request=OuterRef("pk"), escalated=True)
        .exclude(trigger="")
        .order_by("created_at", "id")
        .values("trigger")[:1]
    )
    rows = (
        requests.filter(Exists(escalated_calls().filter(request=OuterRef("pk"))))
        .annotate(
            why=Coalesce(
                Subquery(first_trigger, output_field=CharField()),
                # Routed straight to the LLM (no SLM fits): only the policy's trail records why.
                KeyTextTransform("escalation_trigger", "decision"),
                Value("unrecorded"),
                output_field=CharField(),
            )
        )
        .order_by()
        .values("why")
        .annotate(n=Count("pk"))
    )
    return sorted(((row["why"], row["n"]) for row in rows), key=lambda pair: (-pair[1], pair[0]))


def _spend(calls: QuerySet[ModelCall], buckets: list[datetime], window: Window) -> Spend:
    per_hour = (
        calls.annotate(hour=TruncHour("request__created_at"))
        .order_by()
        .values("hour")
        .annotate(spent=Sum("cost_usd"), tokens_in=Sum("tokens_in"), tokens_out=Sum("tokens_out"))
    )
    spent = [Decimal(0)] * len(buckets)
    tokens = [[0, 0] for _ in buckets]
    for row in per_hour:
        index = _bucket_index(row["hour"], buckets, window.bucket)
        if index is None:
            continue
        spent[index] += row["spent"] or Decimal(0)
        tokens[index][0] += row["tokens_in"] or 0
        tokens[index][1] += row["tokens_out"] or 0
    tokens_in = sum(pair[0] for pair in tokens)
    tokens_out = sum(pair[1] for pair in tokens)
    name, price_in, price_out = baseline_spec(tokens_in, tokens_out)
    # Sums are linear, so the baseline of the whole window is the baseline of its tokens.
    baseline = [price(pair[0], pair[1], price_in, price_out) for pair in tokens]
    by_tier = {
        row["tier"]: row["spent"] or Decimal(0)
        for row in calls.order_by().values("tier").annotate(spent=Sum("cost_usd"))
    }
    return Spend(
        actual_usd=sum(spent, Decimal(0)),
        baseline_usd=price(tokens_in, tokens_out, price_in, price_out),
        baseline_model=name,
        tokens_in=tokens_in,
        tokens_out=tokens_out,
        by_tier=by_tier,
        actual_cumulative=_running(spent),
        baseline_cumulative=_running(baseline),
    )


def _running(values: Iterable[Decimal]) -> list[float]:
    total, running = Decimal(0), []
    for value in values:
        total += value
        running.append(float(total))
    return running


def _end_to_end(requests: QuerySet[Request]) -> dict[str, Percentiles]:
    """End-to-end latency overall, and split by whether a human was in the loop."""
    finished = requests.filter(finished_at__isnull=False)
    result = {}
    overall = percentiles_by(finished, end_to_end_expression(), duration=True)
    result["all"] = overall.get("all", Percentiles(0, None, None))
    by_path = percentiles_by(
        finished.annotate(
            path=Case(
                When(review_item__isnull=True, then=Value("automated")),
                default=Value("human"),
                output_field=CharField(),
            )
        ),
        end_to_end_expression(),
        group="path",
        duration=True,
    )
    for path in ("automated", "human"):
        result[path] = by_path.get(path, Percentiles(0, None, None))
    return result


def _validator_rates(calls: QuerySet[ModelCall]) -> tuple[int, int, list[ValidatorRate]]:
    """Per validator: the share of validated calls it failed (a call counts once per validator).

    The errors are a JSON list per call, which SQL cannot unnest portably: the failing calls'
    lists are read (newest first, capped) and counted here; the denominators come from SQL.
    """
    validated = calls.filter(error="").exclude(purpose=ModelCall.Purpose.ROUTE)
    totals = validated.aggregate(
        n=Count("pk"),
        failed=Count("pk", filter=~Q(validation_errors=[]) & Q(validation_errors__isnull=False)),
    )
    n, failed = totals["n"] or 0, totals["failed"] or 0
    failures: Counter[str] = Counter()
    lists = (
        validated.exclude(validation_errors=[])
        .order_by("-pk")
        .values_list("validation_errors", flat=True)[:PERCENTILE_SAMPLE_CAP]
    )
    for errors in lists:
        names = {str(error.get("validator", "unknown")) for error in errors or [] if isinstance(error, dict)}
        failures.update(names)
    rates = [
        ValidatorRate(validator=name, failures=count, rate=count / n if n else 0.0)
        for name, count in sorted(failures.items(), key=lambda pair: (-pair[1], pair[0]))
    ]
    return n, failed, rates


def first_tool_name(field_name: str) -> KeyTextTransform:
    """``field["tool_calls"][0]["name"]`` as text (one JSON path on SQLite and PostgreSQL alike).

    Built from transforms rather than ``KT("…__tool_calls__0__name")``, which reads NULL once the
    path crosses a relation (``review_item__action_under_review``)."""
    return KeyTextTransform("name", KeyTransform("0", KeyTransform("tool_calls", field_name)))


def _edit_share_by_tool(decisions: QuerySet[GoldenTrace]) -> list[ToolEditShare]:
    """Per tool the model proposed, how many human decisions were edits: where the models are weakest."""
    rows = (
        decisions.annotate(
            tool=Coalesce(
                first_tool_name("proposal"),
                # No valid proposal: the reviewer wrote the action; count it under their tool.
                first_tool_name("final_action"),
                KeyTextTransform("type", "proposal"),
                Value("(no proposal)"),
                output_field=CharField(),
            )
        )
        .order_by()
        .values("tool")
        .annotate(n=Count("pk"), edits=Count("pk", filter=Q(decision=GoldenTrace.Decision.EDIT)))
    )
    shares = [ToolEditShare(tool=row["tool"], decisions=row["n"], edits=row["edits"]) for row in rows]
    return sorted(shares, key=lambda share: (-share.share, -share.decisions, share.tool))
