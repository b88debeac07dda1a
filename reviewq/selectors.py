"""Reads."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

from django.db.models import QuerySet

from reviewq.errors import ApplicationError
from reviewq.models import FINAL_STATUSES, AgentKey, Request, ReviewItem


def request_get_for_agent(*, agent_key: AgentKey, request_id: str) -> Request:
    try:
        uuid.UUID(str(request_id))
    except ValueError:
        raise ApplicationError("not_found", f"{request_id!r} is not a request id", status=404) from None
    request = Request.objects.filter(id=request_id, agent_key=agent_key).first()
    if request is None:
        raise ApplicationError("not_found", f"no request {request_id} for this key", status=404)
    return request


async def request_wait_final(*, agent_key: AgentKey, request_id: Any, wait_ms: int) -> Request:
    """The request once it is final, or as it stands after ``wait_ms``.

    Polls the database, the source of truth, with a short backoff: the first checks are a few
    milliseconds apart so a fast auto-release answers quickly.
    """
    deadline = time.monotonic() + wait_ms / 1000
    delay = 0.003
    while True:
        request = await Request.objects.filter(id=request_id, agent_key=agent_key).afirst()
        if request is None:
            raise ApplicationError("not_found", f"no request {request_id} for this key", status=404)
        remaining = deadline - time.monotonic()
        if request.status in FINAL_STATUSES or remaining <= 0:
            return request
        await asyncio.sleep(min(delay, remaining))
        delay = min(delay * 1.5, 0.1)


def review_items_pending() -> QuerySet[ReviewItem]:
    return (
        ReviewItem.objects.filter(status=ReviewItem.Status.PENDING)
        .select_related("request", "request__agent_key", "policy")
        .order_by("sla_due_at", "created_at")
    )
