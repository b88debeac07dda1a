"""On-call paging: when an item is held and nobody who could decide it has the queue open, and
again when an item breaches its SLA whoever is watching.

A page goes to each channel the item's policy names: a Slack-compatible webhook (``notify_url``)
and email addresses (``notify_email``, sent through Django's mail backend). Both are deliveries
in ``reviewq.notify.webhooks``, retried with backoff and sent once per item and event.
"""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.contrib.auth.models import User
from django.db.models import Q
from django.urls import reverse
from django.utils import timezone

from reviewq.action_facts import action_facts
from reviewq.models import ReviewerPresence, ReviewItem, WebhookDelivery
from reviewq.notify import webhooks

# A presence row older than this is a socket that vanished without a goodbye (server killed).
PRESENCE_MAX_AGE = timedelta(hours=12)
UNATTENDED = "review.unattended"
SLA_BREACHED = "review.sla_breached"
_HEADLINES = {
    UNATTENDED: "is waiting for review and nobody is on the queue",
    SLA_BREACHED: "breached its review SLA",
}


def reviewers_watching(item: ReviewItem) -> bool:
    """Whether someone who may decide ``item`` has the live queue open right now."""
    fresh = ReviewerPresence.objects.filter(connected_at__gte=timezone.now() - PRESENCE_MAX_AGE)
    eligible = User.objects.filter(is_active=True).exclude(id=item.request.agent_key.owner_id or 0)
    if item.reviewer_group_id:
        eligible = eligible.filter(Q(groups=item.reviewer_group_id) | Q(is_superuser=True))
    return fresh.filter(user__in=eligible).exists()


def item_url(item: ReviewItem) -> str:
    """The item's page, absolute (PUBLIC_URL), for a page read outside the browser."""
    return settings.PUBLIC_URL.rstrip("/") + reverse("review_item", args=[item.id])


def _slack_escape(text: str) -> str:
    """Agent-supplied values stay text: no ``<!channel>`` mention or disguised link from them."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def page_message(item: ReviewItem, event: str) -> dict[str, object]:
    """A page's content: a Slack-compatible incoming-webhook body (``text``, mrkdwn) with the
    decision facts a reviewer needs before opening it, and the same facts as fields."""
    calls = (item.action_under_review or {}).get("tool_calls") or []
    tools = ", ".join(call["name"] for call in calls) or "an action with no valid proposal"
    facts = action_facts(item.action_under_review)
    tags = ", ".join(item.risk_tags) or "untagged"
    policy = item.policy.name if item.policy else "none"
    url = item_url(item)
    headline = f"reviewq: {tools} ({tags}) {_HEADLINES.get(event, event)}"
    details = [
        line
        for line in (
            f"Arguments: {facts.text}" if facts.text else "",
            f"Amount: {facts.amount}" if facts.amount else "",
            f"Policy: {policy}. Reason: {item.hold_reason[:300]}",
            f"SLA {item.sla_due_at:%H:%M:%S} UTC, item {item.id}",
        )
        if line
    ]
    return {
        "text": "\n".join(
            [
                f":rotating_light: {_slack_escape(headline)}.",
                *map(_slack_escape, details),
                f"<{url}|Open item {item.id}>",
            ]
        ),
        "headline": headline,
        "details": details,
        "event": event,
        "item_id": item.id,
        "item_url": url,
        "request_id": str(item.request_id),
        "tool": tools,
        "arguments": facts.arguments,
        "amount": facts.amount,
        "policy": policy,
        "risk_tags": list(item.risk_tags or []),
        "sla_due_at": item.sla_due_at.isoformat(),
    }


def _page(item: ReviewItem, event: str) -> int:
    """Queues the page on every channel of the item's policy. Returns how many were queued."""
    policy = item.policy
    if policy is None:
        return 0
    message = page_message(item, event)
    channels = 0
    if policy.notify_url:
        webhooks.enqueue(
            kind=WebhookDelivery.Kind.ALERT,
            request=item.request,
            event=event,
            url=policy.notify_url,
            payload=message,
        )
        channels += 1
    for address in policy.notify_emails:
        webhooks.enqueue(
            kind=WebhookDelivery.Kind.EMAIL,
            request=item.request,
            event=event,
            url=f"mailto:{address}",
            payload=message,
        )
        channels += 1
    return channels


def _pageable(item: ReviewItem | None) -> bool:
    return (
        item is not None
        and item.status == ReviewItem.Status.PENDING
        and item.policy is not None
        and bool(item.policy.notify_url or item.policy.notify_email)
    )


def page_if_nobody_watching(item_id: int) -> bool:
    """Pages the policy's channels when nobody eligible is watching. True if a page was queued."""
    item = ReviewItem.objects.select_related("policy", "request__agent_key").filter(id=item_id).first()
    if item is None or not _pageable(item) or reviewers_watching(item):
        return False
    claimed = ReviewItem.objects.filter(id=item.id, alerted_at__isnull=True).update(alerted_at=timezone.now())
    if not claimed:
        return False  # already paged for this item
    return _page(item, UNATTENDED) > 0


def page_sla_breaches() -> int:
    """Pages once for each pending item past its SLA, whether or not someone has the queue open
    (an open tab is not a reviewer at work). Returns how many items were paged."""
    now = timezone.now()
    overdue = ReviewItem.objects.filter(
        status=ReviewItem.Status.PENDING, sla_due_at__lte=now, sla_paged_at__isnull=True
    ).select_related("policy", "request__agent_key")
    paged = 0
    for item in overdue[:200]:
        # Claimed first, so a second scheduler pass or process never pages the same breach twice.
        if not ReviewItem.objects.filter(id=item.id, sla_paged_at__isnull=True).update(sla_paged_at=now):
            continue
        if _pageable(item) and _page(item, SLA_BREACHED):
            paged += 1
    return paged
