"""Prometheus exposition, computed from the database at scrape time.

Why not counters in process memory: the gateway runs as several web and worker processes, and
a scrape reaches one of them. The database already holds every request, model call and
decision, so each scrape reads totals there with a handful of aggregate queries (histogram
buckets are conditional counts), and every process answers with the same, complete figures.

The counters count rows that exist: ``prune_telemetry`` deleting old rows makes them drop,
which Prometheus's ``rate()`` and ``increase()`` treat as a counter reset.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections import defaultdict
from collections.abc import Iterator, Sequence
from datetime import timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db.models import Count, F, Q, QuerySet, Sum
from django.db.models.fields.json import KeyTextTransform
from django.db.models.functions import Coalesce
from django.http import HttpRequest
from django.utils import timezone
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from reviewq.models import FINAL_STATUSES, GoldenTrace, Request, RequestStatus, ReviewItem
from reviewq.runtime.redis_connection import redis_errors
from telemetry.models import ModelCall
from telemetry.selectors import end_to_end_expression, first_tool_name, outcome_expression

# Upper bounds in seconds. A model call takes milliseconds (a cached SLM prefix) to a minute
# (an LLM under retries); a request's end-to-end time includes any wait for a human.
MODEL_CALL_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
REQUEST_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 14400.0, 86400.0)
DECISION_BUCKETS = (5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 900.0, 3600.0, 14400.0, 86400.0)


def _le(bound: float) -> str:
    return repr(float(bound))


def _histogram_buckets(row: dict[str, Any], bounds: Sequence[float]) -> list[tuple[str, float]]:
    """Cumulative (le, count) pairs from a row holding ``le0``, ``le1``, … and ``count``."""
    return [(_le(bound), row[f"le{i}"] or 0) for i, bound in enumerate(bounds)] + [
        ("+Inf", row["count"] or 0)
    ]


def _bucket_counts(bounds: Sequence[float], condition: Any) -> dict[str, Count]:
    """One conditional COUNT per bucket: rows whose value is at most the bound (cumulative)."""
    return {f"le{i}": Count("pk", filter=condition(bound)) for i, bound in enumerate(bounds)}


def _with_item_labels(items: QuerySet[ReviewItem]) -> QuerySet[ReviewItem]:
    """Held items annotated with the labels ops slice the queue by: reviewer group, agent key,
    and the tool of the action under review (a plan's first call; empty with no valid proposal)."""
    return items.annotate(
        group=F("reviewer_group__name"),
        agent=F("request__agent_key__name"),
        tool=first_tool_name("action_under_review"),
    ).order_by()


class DatabaseCollector(Collector):
    """Reads the gateway's totals from the database on each ``collect()``."""

    def describe(self) -> list[Metric]:
        # Registering must not query the database: declare nothing up front.
        return []

    def collect(self) -> Iterator[Metric]:
        yield from self._requests()
        yield from self._model_calls()
        yield from self._decisions()
        yield from self._latencies()
        yield from self._queue()

    def _queue(self) -> Iterator[Metric]:
        labels = ["group", "agent", "tool"]
        pending = GaugeMetricFamily(
            "reviewq_review_queue_pending",
            "Held actions waiting for a human decision, by reviewer group, agent key and tool.",
            labels=labels,
        )
        overdue = GaugeMetricFamily(
            "reviewq_review_queue_overdue",
            "Held actions past their SLA without a decision, by reviewer group, agent key and tool.",
            labels=labels,
        )
        rows = (
            _with_item_labels(ReviewItem.objects.filter(status=ReviewItem.Status.PENDING))
            .values(*labels)
            .annotate(n=Count("pk"), late=Count("pk", filter=Q(sla_due_at__lt=timezone.now())))
        )
        for row in rows:
            values = [row[label] or "" for label in labels]
            pending.add_metric(values, row["n"])
            overdue.add_metric(values, row["late"])
        yield from (pending, overdue)

        requests = CounterMetricFamily(
            "reviewq_agent_requests",
            "Finished agent requests by agent key, the tool their action called, and outcome.",
            labels=["agent", "tool", "outcome"],
        )
        for row in (
            Request.objects.filter(status__in=list(FINAL_STATUSES))
            .annotate(
                agent=F("agent_key__name"),
                tool=Coalesce(first_tool_name("action"), first_tool_name("proposal")),
                outcome=outcome_expression(),
            )
            .order_by()
            .values("agent", "tool", "outcome")
            .annotate(n=Count("pk"))
        ):
            requests.add_metric([row["agent"], row["tool"] or "", row["outcome"]], row["n"])
        yield requests

    def _requests(self) -> Iterator[Metric]:
        # A request moves between states until it is final: only final states are counters (they
        # never go down); the others are a gauge of open work.
        by_status = dict(Request.objects.order_by().values_list("status").annotate(n=Count("pk")))
        received = CounterMetricFamily("reviewq_requests_received", "Agent requests received.")
        received.add_metric([], sum(by_status.values()))
        finished = CounterMetricFamily(
            "reviewq_requests", "Finished agent requests, by final status.", labels=["status"]
        )
        open_now = GaugeMetricFamily(
            "reviewq_requests_open", "Agent requests not final yet, by current status.", labels=["status"]
        )
        for status in RequestStatus.values:
            (finished if status in FINAL_STATUSES else open_now).add_metric(
                [status], by_status.get(status, 0)
            )
        yield from (received, finished, open_now)

        by_outcome = CounterMetricFamily(
            "reviewq_request_outcomes",
            "Finished agent requests by outcome: auto_released, adjudicated, approved, edited, denied, "
            "blocked, expired, failed.",
            labels=["outcome"],
        )
        rows = (
            Request.objects.filter(status__in=list(FINAL_STATUSES))
            .annotate(outcome=outcome_expression())
            .order_by()
            .values("outcome")
            .annotate(n=Count("pk"))
        )
        for row in rows:
            by_outcome.add_metric([row["outcome"]], row["n"])
        yield by_outcome

    def _model_calls(self) -> Iterator[Metric]:
        calls = CounterMetricFamily(
            "reviewq_model_calls",
            "Model calls, by model, tier and purpose.",
            labels=["model", "tier", "purpose"],
        )
        failures = CounterMetricFamily(
            "reviewq_model_call_failures",
            "Model calls that failed (backend error) or whose answer failed validation.",
            labels=["model", "tier", "kind"],
        )
        tokens = CounterMetricFamily(
            "reviewq_model_call_tokens",
            "Tokens sent to and received from models.",
            labels=["tier", "direction"],
        )
        cost = CounterMetricFamily(
            "reviewq_cost_usd", "Model spend in USD at the registry's prices.", labels=["tier"]
        )
        token_sums: dict[tuple[str, str], int] = defaultdict(int)
        cost_sums: dict[str, Decimal] = defaultdict(Decimal)
        failure_sums: dict[tuple[str, str, str], int] = defaultdict(int)
        rows = (
            ModelCall.objects.order_by()
            .values("model_name", "tier", "purpose")
            .annotate(
                n=Count("pk"),
                errors=Count("pk", filter=~Q(error="")),
                invalid=Count("pk", filter=Q(error="") & ~Q(validation_errors=[])),
                tokens_in=Sum("tokens_in"),
                tokens_out=Sum("tokens_out"),
                cost=Sum("cost_usd"),
            )
        )
        for row in rows:
            calls.add_metric([row["model_name"], row["tier"], row["purpose"]], row["n"])
            failure_sums[(row["model_name"], row["tier"], "backend_error")] += row["errors"]
            failure_sums[(row["model_name"], row["tier"], "validation")] += row["invalid"]
            token_sums[(row["tier"], "in")] += row["tokens_in"] or 0
            token_sums[(row["tier"], "out")] += row["tokens_out"] or 0
            cost_sums[row["tier"]] += row["cost"] or Decimal(0)
        for (model, tier, kind), n in sorted(failure_sums.items()):
            failures.add_metric([model, tier, kind], n)
        for (tier, direction), n in sorted(token_sums.items()):
            tokens.add_metric([tier, direction], n)
        for tier, usd in sorted(cost_sums.items()):
            cost.add_metric([tier], float(usd))
        yield from (calls, failures, tokens, cost)

        escalations = CounterMetricFamily(
            "reviewq_escalations",
            "Times a request climbed the escalation ladder, by trigger.",
            labels=["trigger"],
        )
        for trigger, n in (
            ModelCall.objects.filter(escalated=True).order_by().values_list("trigger").annotate(n=Count("pk"))
        ):
            escalations.add_metric([trigger or "unrecorded"], n)
        yield escalations

    def _decisions(self) -> Iterator[Metric]:
        decisions = CounterMetricFamily(
            "reviewq_decisions",
            "Final decisions on requests: who decided (pipeline, policy, reviewer, expiry) and what.",
            labels=["by", "decision"],
        )
        rows = (
            Request.objects.filter(status__in=list(FINAL_STATUSES))
            .annotate(by=KeyTextTransform("by", "decision"), kind=KeyTextTransform("decision", "decision"))
            .order_by()
            .values("by", "kind")
            .annotate(n=Count("pk"))
        )
        for row in rows:
            decisions.add_metric([row["by"] or "none", row["kind"] or "none"], row["n"])
        yield decisions

    def _latencies(self) -> Iterator[Metric]:
        model_latency = HistogramMetricFamily(
            "reviewq_model_call_latency_seconds", "Latency of answered model calls.", labels=["tier"]
        )
        rows = (
            ModelCall.objects.filter(error="")
            .order_by()
            .values("tier")
            .annotate(
                count=Count("pk"),
                total_ms=Sum("latency_ms"),
                **_bucket_counts(MODEL_CALL_BUCKETS, lambda bound: Q(latency_ms__lte=bound * 1000)),
            )
        )
        for row in rows:
            model_latency.add_metric(
                [row["tier"]], _histogram_buckets(row, MODEL_CALL_BUCKETS), (row["total_ms"] or 0) / 1000
            )
        yield model_latency

        request_latency = HistogramMetricFamily(
            "reviewq_request_latency_seconds",
            "End-to-end latency of finished requests, from the agent's POST to the final decision.",
        )
        finished: QuerySet[Request] = Request.objects.filter(finished_at__isnull=False)
        totals = finished.aggregate(
            count=Count("pk"),
            total=Sum(end_to_end_expression()),
            **_bucket_counts(
                REQUEST_BUCKETS, lambda bound: Q(finished_at__lte=F("created_at") + timedelta(seconds=bound))
            ),
        )
        total = totals["total"]
        request_latency.add_metric(
            [],
            _histogram_buckets(totals, REQUEST_BUCKETS),
            total.total_seconds() if isinstance(total, timedelta) else 0.0,
        )
        yield request_latency

        decision_time = HistogramMetricFamily(
            "reviewq_review_time_to_decision_seconds",
            "Time from holding an action to a human's decision on it, by decision, reviewer group, "
            "agent key and tool.",
            labels=["decision", "group", "agent", "tool"],
        )
        decided = (
            GoldenTrace.objects.annotate(
                group=F("review_item__reviewer_group__name"),
                agent=F("request__agent_key__name"),
                tool=first_tool_name("review_item__action_under_review"),
            )
            .order_by()
            .values("decision", "group", "agent", "tool")
            .annotate(
                count=Count("pk"),
                total_ms=Sum("time_to_decision_ms"),
                **_bucket_counts(DECISION_BUCKETS, lambda bound: Q(time_to_decision_ms__lte=bound * 1000)),
            )
        )
        for row in decided:
            decision_time.add_metric(
                [row["decision"], row["group"] or "", row["agent"] or "", row["tool"] or ""],
                _histogram_buckets(row, DECISION_BUCKETS),
                (row["total_ms"] or 0) / 1000,
            )
        yield decision_time


class ThisProcessCollector(Collector):
    """What only the process answering the scrape knows: the Redis operations it could not do
    (the gateway carries on without Redis; see reviewq.runtime.redis_connection)."""

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        errors = CounterMetricFamily(
            "reviewq_redis_errors",
            "Redis operations that failed in the process answering this scrape, by operation.",
            labels=["operation"],
        )
        for operation, count in sorted(redis_errors().items()):
            errors.add_metric([operation], count)
        yield errors


def exposition() -> bytes:
    """The current metrics in the Prometheus text format."""
    # A registry per scrape: the database's totals (right with any number of processes), and
    # the one process-local counter, named as such.
    registry = CollectorRegistry()
    registry.register(DatabaseCollector())
    registry.register(ThisProcessCollector())
    return generate_latest(registry)


def _is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def scrape_allowed(request: HttpRequest) -> bool:
    """A scraper on this host, a bearer token equal to METRICS_TOKEN, or a logged-in staff user.

    A request that came through a proxy (it carries a forwarding header) is not trusted as local,
    even though the proxy connects from loopback.
    """
    token = settings.METRICS_TOKEN
    authorization = request.headers.get("Authorization", "")
    if token and authorization.startswith("Bearer "):
        if hmac.compare_digest(authorization.removeprefix("Bearer ").strip().encode(), token.encode()):
            return True
    user = getattr(request, "user", None)
    if user is not None and user.is_authenticated and user.is_staff:
        return True
    proxied = any(name in request.headers for name in ("X-Forwarded-For", "X-Real-IP", "Forwarded"))
    return not proxied and _is_loopback(request.META.get("REMOTE_ADDR", ""))
