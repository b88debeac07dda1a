"""Guarded state changes. Every move is a conditional UPDATE that names the states it may leave.

If the row is no longer in one of those states, the update touches nothing and the caller learns
it lost the race (a redelivered task, the sweeper, a second reviewer): it must then stop.
"""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import nullcontext
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from reviewq.models import FINAL_STATUSES, Request, RequestStatus


def move_request(
    request_id: Any,
    *,
    from_statuses: Iterable[str],
    to_status: str,
    known_callback_url: str | None = None,
    **fields: Any,
) -> bool:
    """Move the request to ``to_status`` if it is in one of ``from_statuses``. True if it moved.

    Final states are final: asking to move out of one is a programming error, refused loudly.
    ``known_callback_url``: the request's callback URL when the caller has the row already
    (saves looking it up on a final move); None when unknown.
    """
    from_statuses = list(from_statuses)
    leaving_final = FINAL_STATUSES.intersection(from_statuses)
    if leaving_final:
        raise ValueError(f"a request never leaves a final state ({', '.join(sorted(leaving_final))})")
    now = timezone.now()
    fields.setdefault("updated_at", now)
    if to_status in FINAL_STATUSES:
        fields.setdefault("finished_at", now)
        fields.setdefault("lease_expires_at", None)
    elif to_status == RequestStatus.AWAITING_REVIEW:
        fields.setdefault("lease_expires_at", None)
    else:
        fields.setdefault("lease_expires_at", now + timedelta(seconds=settings.PIPELINE_LEASE_SECONDS))
    final = to_status in FINAL_STATUSES
    # A final move and its callback delivery commit together: a worker killed between the two
    # must not leave a released request whose agent is never told. Without a callback (known
    # to be empty) the UPDATE alone needs no transaction, and saves the round trip of one.
    with transaction.atomic() if final and known_callback_url != "" else nullcontext():
        updated = Request.objects.filter(id=request_id, status__in=from_statuses).update(
            status=to_status, **fields
        )
        if updated and final:
            from reviewq import finality, webhooks

            finality.announce_on_commit(request_id)
            webhooks.request_finished(request_id, callback_url=known_callback_url)
    return updated == 1
