"""Retention: deleting telemetry older than the cutoff, in batches.

Batches keep each transaction short, so pruning a large backlog never holds long locks on the
tables the pipeline writes to, and an interrupted run simply resumes where it stopped.

What is kept past the cutoff, and why:
- a request that is not final, or whose review is still pending: it is live work (the model
  calls of a pending review too: the reviewer's page shows them);
- a request with a webhook still being delivered: its payload must survive the retries;
- a request with golden traces (unless ``include_traces``): human decisions are training data,
  which is worth more than the disk it takes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Exists, OuterRef, QuerySet
from django.utils import timezone

from reviewq.models import FINAL_STATUSES, GoldenTrace, Request, ReviewItem, WebhookDelivery
from telemetry.models import ModelCall

DEFAULT_BATCH_SIZE = 5000


@dataclass(frozen=True)
class PruneResult:
    cutoff: datetime
    model_calls: int
    requests: int
    dry_run: bool


def prunable_model_calls(cutoff: datetime) -> QuerySet[ModelCall]:
    """Model calls logged before ``cutoff``, except those a reviewer may still be reading."""
    return ModelCall.objects.filter(created_at__lt=cutoff).exclude(
        Exists(ReviewItem.objects.filter(request=OuterRef("request"), status=ReviewItem.Status.PENDING))
    )


def prunable_requests(cutoff: datetime, *, include_traces: bool = False) -> QuerySet[Request]:
    """Finished requests created before ``cutoff`` that nothing still needs."""
    requests = Request.objects.filter(created_at__lt=cutoff, status__in=list(FINAL_STATUSES)).exclude(
        Exists(ReviewItem.objects.filter(request=OuterRef("pk"), status=ReviewItem.Status.PENDING))
    )
    requests = requests.exclude(
        Exists(WebhookDelivery.objects.filter(request=OuterRef("pk"), status=WebhookDelivery.Status.PENDING))
    )
    if not include_traces:
        requests = requests.exclude(Exists(GoldenTrace.objects.filter(request=OuterRef("pk"))))
    return requests


def _delete_in_batches(
    queryset: QuerySet[ModelCall] | QuerySet[Request],
    batch_size: int,
    progress: Callable[[int], None] | None,
) -> int:
    deleted = 0
    while True:
        with transaction.atomic():
            ids = list(queryset.order_by("pk").values_list("pk", flat=True)[:batch_size])
            if not ids:
                return deleted
            # Delete through the ORM, not raw SQL: the cascades (review items, approvals, traces,
            # webhooks, model calls) stay Django's, whatever the database's own FK rules are.
            queryset.model._default_manager.filter(pk__in=ids).delete()
        deleted += len(ids)
        if progress is not None:
            progress(deleted)


def telemetry_prune(
    *,
    days: int | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    dry_run: bool = False,
    include_traces: bool = False,
    now: datetime | None = None,
    progress: Callable[[str, int], None] | None = None,
) -> PruneResult:
    """Deletes model calls and finished requests older than ``days`` (TELEMETRY_RETENTION_DAYS).

    Returns how many rows of each were (or, with ``dry_run``, would be) deleted. Model calls of a
    deleted request go with it and are not counted twice.
    """
    days = settings.TELEMETRY_RETENTION_DAYS if days is None else days
    if days < 0:
        raise ValueError("days must not be negative")
    if batch_size < 1:
        raise ValueError("batch size must be at least 1")
    cutoff = (now or timezone.now()) - timedelta(days=days)
    calls = prunable_model_calls(cutoff)
    requests = prunable_requests(cutoff, include_traces=include_traces)
    if dry_run:
        return PruneResult(cutoff, calls.count(), requests.count(), dry_run=True)

    def report(kind: str) -> Callable[[int], None] | None:
        return (lambda n: progress(kind, n)) if progress is not None else None

    deleted_calls = _delete_in_batches(calls, batch_size, report("model calls"))
    deleted_requests = _delete_in_batches(requests, batch_size, report("requests"))
    return PruneResult(cutoff, deleted_calls, deleted_requests, dry_run=False)
