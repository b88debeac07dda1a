"""Guarded state changes. Every move is a conditional UPDATE that names the states it may leave.

If the row is no longer in one of those states, the update touches nothing and the caller learns
it lost the race (a redelivered task, the sweeper, a second reviewer): it must then stop.

A move here has no other effect. A move to a final state goes through
``reviewq.notify.finish.finish_request``, which also tells whoever waits for it.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.utils import timezone

from reviewq.models import FINAL_STATUSES, Request, RequestStatus


def move_request(request_id: Any, *, from_statuses: Iterable[str], to_status: str, **fields: Any) -> bool:
    """Move the request to the working or waiting state ``to_status`` if it is in one of
    ``from_statuses``. True if it moved.

    A final ``to_status`` is refused (see ``finish_request``), as is leaving a final state.
    """
    if to_status in FINAL_STATUSES:
        raise ValueError("a final move goes through reviewq.notify.finish.finish_request")
    return guarded_update(request_id, from_statuses=from_statuses, to_status=to_status, **fields)


def guarded_update(request_id: Any, *, from_statuses: Iterable[str], to_status: str, **fields: Any) -> bool:
    """The conditional UPDATE behind every move, with the lease and timestamps ``to_status`` implies.

    Final states are final: asking to move out of one is a programming error, refused loudly (the
    database refuses it too, by trigger).
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
    elif to_status == RequestStatus.RECEIVED:  # waiting to be claimed, which takes moments
        fields.setdefault("lease_expires_at", now + timedelta(seconds=settings.PIPELINE_CLAIM_SECONDS))
    else:
        fields.setdefault("lease_expires_at", now + timedelta(seconds=settings.PIPELINE_LEASE_SECONDS))
    updated = Request.objects.filter(id=request_id, status__in=from_statuses).update(
        status=to_status, **fields
    )
    return updated == 1
