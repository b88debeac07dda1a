"""Reads: agents' requests, waiting for a final state, and the reviewers' queue."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from django.db.models import QuerySet

from reviewq import untrusted
from reviewq.errors import ApplicationError
from reviewq.models import FINAL_STATUSES, AgentKey, Request, RequestStatus, ReviewItem
from reviewq.notify import finality

# How often a waiter re-reads its request without an announcement (one lost in transit).
WAIT_REREAD_SECONDS = 0.5


def request_get_for_agent(*, agent_key: AgentKey, request_id: str) -> Request:
    try:
        uuid.UUID(str(request_id))
    except ValueError:
        raise ApplicationError("not_found", f"{request_id!r} is not a request id", status=404) from None
    request = Request.objects.filter(id=request_id, agent_key=agent_key).first()
    if request is None:
        raise ApplicationError("not_found", f"no request {request_id} for this key", status=404)
    return request


async def request_wait_final(
    *, agent_key: AgentKey, request_id: Any, wait_ms: int, until_held: bool = False
) -> Request:
    """The request once it is final (with ``until_held``: or awaiting review), or as it stands
    after ``wait_ms``.

    Waits for the announcement that the request is final (reviewq.notify.finality), then reads the
    row, the source of truth; a slow re-read covers an announcement that never arrives. Called
    right after the request was created, so it waits before its first read.
    """
    deadline = time.monotonic() + wait_ms / 1000
    with finality.waiting_for(request_id) as announced:
        while True:
            remaining = deadline - time.monotonic()
            try:
                await asyncio.wait_for(announced.wait(), timeout=max(0, min(remaining, WAIT_REREAD_SECONDS)))
            except TimeoutError:
                pass
            announced.clear()  # before the read: an announcement after it still wakes the wait
            request = await Request.objects.filter(id=request_id, agent_key=agent_key).afirst()
            if request is None:
                raise ApplicationError("not_found", f"no request {request_id} for this key", status=404)
            if request.status in FINAL_STATUSES or time.monotonic() >= deadline:
                return request
            if until_held and request.status == RequestStatus.AWAITING_REVIEW:
                return request


@dataclass(frozen=True)
class QueueFilter:
    """A reviewer's view of the queue: items with a risk tag, items for a reviewer group, or all.

    The queue page, the review API, the socket's snapshot and its live pushes all use this one
    filter, so a filtered page never shows an item outside it.
    """

    tag: str = ""
    group: str = ""

    @classmethod
    def from_query(cls, query: Mapping[str, str]) -> QueueFilter:
        """The filter a page's or socket's query asks for (raises UntrustedInputError on a NUL)."""
        tag, group = str(query.get("tag", "")).strip(), str(query.get("group", "")).strip()
        untrusted.check_text(tag, "tag")
        untrusted.check_text(group, "group")
        return cls(tag=tag, group=group)

    def matches(self, risk_tags: list[str], group: str) -> bool:
        """Whether an item with these risk tags, for this reviewer group's name, is in view."""
        return (not self.tag or self.tag in risk_tags) and (not self.group or self.group == group)

    def as_query(self) -> str:
        """The filter as a query string ("" when it shows everything)."""
        return urlencode({key: value for key, value in (("tag", self.tag), ("group", self.group)) if value})


def review_items_pending(queue_filter: QueueFilter | None = None) -> QuerySet[ReviewItem]:
    """Pending items, most urgent first; only those in ``queue_filter``'s view when given."""
    items = (
        ReviewItem.objects.filter(status=ReviewItem.Status.PENDING)
        .select_related("request", "request__agent_key", "policy", "claimed_by", "reviewer_group")
        .order_by("sla_due_at", "created_at")
    )
    if queue_filter is None:
        return items
    if queue_filter.group:
        items = items.filter(reviewer_group__name=queue_filter.group)
    if queue_filter.tag:
        # Risk tags are a short JSON list; filter in Python so SQLite and PostgreSQL agree.
        ids = [
            item_id
            for item_id, tags in items.values_list("id", "risk_tags")
            if queue_filter.matches(tags or [], queue_filter.group)
        ]
        items = items.filter(id__in=ids)
    return items


def review_item_neighbours(item: ReviewItem) -> dict[str, int | None]:
    """The pending items before and after ``item`` in queue order, for j / k."""
    ids = list(review_items_pending().values_list("id", flat=True))
    if item.id not in ids:
        return {"previous": None, "next": ids[0] if ids else None}
    index = ids.index(item.id)
    return {
        "previous": ids[index - 1] if index > 0 else None,
        "next": ids[index + 1] if index + 1 < len(ids) else None,
    }
