"""Recovery: work a crashed worker or a lost task left behind, and held items nobody decided."""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from reviewq import audit
from reviewq.models import WORKING_STATUSES, DecisionBy, Request, RequestStatus, ReviewItem
from reviewq.notify import push
from reviewq.notify.finish import finish_request
from reviewq.services.intake import enqueue_pipeline
from reviewq.transitions import move_request

logger = logging.getLogger(__name__)


def sweep_stuck_requests() -> int:
    """Re-enqueues requests whose worker lease has passed (crashed worker, lost task); fails those
    the pipeline already ran PIPELINE_MAX_RUNS times for. Returns how many it re-enqueued."""
    now = timezone.now()
    stuck = Request.objects.filter(status__in=list(WORKING_STATUSES), lease_expires_at__lt=now)
    count = 0
    for request_id, status, runs in stuck.values_list("id", "status", "pipeline_runs")[:500]:
        if runs >= settings.PIPELINE_MAX_RUNS:
            _give_up(request_id, status, runs)
            continue
        with transaction.atomic():
            if move_request(request_id, from_statuses=[status], to_status=RequestStatus.RECEIVED):
                enqueue_pipeline(request_id)
                count += 1
    if count:
        logger.warning("re-enqueued %d requests whose lease had passed", count)
    return count


def _give_up(request_id: Any, status: str, runs: int) -> None:
    reason = (
        f"the pipeline ran {runs} times for this request without finishing (it stopped in {status}); "
        "it is not retried again"
    )
    if finish_request(
        request_id,
        from_statuses=[status],
        to_status=RequestStatus.FAILED,
        failure_reason=reason,
        decision={"by": DecisionBy.PIPELINE, "decision": "fail", "reason": reason},
    ):
        logger.error("request %s failed: %s", request_id, reason)


def expire_review_items() -> int:
    """Held items past their expiry are denied: expiry fails closed."""
    count = 0
    overdue = ReviewItem.objects.filter(status=ReviewItem.Status.PENDING, expires_at__lte=timezone.now())
    for item_id in overdue.values_list("id", flat=True)[:500]:
        if _expire_item(item_id):
            count += 1
    return count


def _expire_item(item_id: int) -> bool:
    with transaction.atomic():
        item = ReviewItem.objects.select_for_update().select_related("request").get(id=item_id)
        if item.status != ReviewItem.Status.PENDING:
            return False
        now = timezone.now()
        ReviewItem.objects.filter(id=item.id).update(status=ReviewItem.Status.EXPIRED, decided_at=now)
        finish_request(
            item.request_id,
            from_statuses=[RequestStatus.AWAITING_REVIEW],
            to_status=RequestStatus.EXPIRED,
            decision={
                "by": DecisionBy.EXPIRY,
                "decision": "expire",
                "reason": "nobody decided before it expired",
            },
        )
        audit.record(kind="expire", actor="system", request_id=item.request_id, item_id=item.id)
        transaction.on_commit(lambda: push.push_item_removed(item))
    return True
