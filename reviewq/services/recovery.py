"""Recovery: work a crashed worker or a lost task left behind, and held items nobody decided."""

from __future__ import annotations

import logging

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
    """Re-enqueues requests whose worker lease has passed (crashed worker, lost task)."""
    now = timezone.now()
    stuck = Request.objects.filter(status__in=list(WORKING_STATUSES), lease_expires_at__lt=now)
    count = 0
    for request_id, status in stuck.values_list("id", "status")[:500]:
        with transaction.atomic():
            if move_request(request_id, from_statuses=[status], to_status=RequestStatus.RECEIVED):
                enqueue_pipeline(request_id)
                count += 1
    if count:
        logger.warning("re-enqueued %d requests whose lease had passed", count)
    return count


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
