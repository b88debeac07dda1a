"""On-call paging: when an item is held and nobody who could decide it has the queue open."""

from __future__ import annotations

from datetime import timedelta

from django.contrib.auth.models import User
from django.db.models import Q
from django.utils import timezone

from reviewq.models import ReviewerPresence, ReviewItem, WebhookDelivery
from reviewq.notify import webhooks

# A presence row older than this is a socket that vanished without a goodbye (server killed).
PRESENCE_MAX_AGE = timedelta(hours=12)


def reviewers_watching(item: ReviewItem) -> bool:
    """Whether someone who may decide ``item`` has the live queue open right now."""
    fresh = ReviewerPresence.objects.filter(connected_at__gte=timezone.now() - PRESENCE_MAX_AGE)
    eligible = User.objects.filter(is_active=True).exclude(id=item.request.agent_key.owner_id or 0)
    if item.reviewer_group_id:
        eligible = eligible.filter(Q(groups=item.reviewer_group_id) | Q(is_superuser=True))
    return fresh.filter(user__in=eligible).exists()


def slack_message(item: ReviewItem) -> dict[str, object]:
    """A Slack-compatible incoming-webhook body."""
    calls = (item.action_under_review or {}).get("tool_calls") or []
    tools = ", ".join(call["name"] for call in calls) or "an action"
    tags = ", ".join(item.risk_tags) or "untagged"
    text = (
        f":rotating_light: reviewq: {tools} ({tags}) is waiting for review and nobody is on the queue. "
        f"Reason: {item.hold_reason[:300]}. Item {item.id}, SLA {item.sla_due_at:%H:%M:%S} UTC."
    )
    return {"text": text, "item_id": item.id, "request_id": str(item.request_id)}


def page_if_nobody_watching(item_id: int) -> bool:
    """Posts to the policy's notify_url when nobody eligible is watching. True if a page was queued."""
    item = ReviewItem.objects.select_related("policy", "request__agent_key").filter(id=item_id).first()
    if (
        item is None
        or item.status != ReviewItem.Status.PENDING
        or not item.policy
        or not item.policy.notify_url
    ):
        return False
    if reviewers_watching(item):
        return False
    claimed = ReviewItem.objects.filter(id=item.id, alerted_at__isnull=True).update(alerted_at=timezone.now())
    if not claimed:
        return False  # already paged for this item
    webhooks.enqueue(
        kind=WebhookDelivery.Kind.ALERT,
        request=item.request,
        event="review.unattended",
        url=item.policy.notify_url,
        payload=slack_message(item),
    )
    return True
