"""The final move of a request, and everything that must happen with it.

A request reaches a final state (released, denied, expired, failed) once. The same transaction
announces it to the API calls waiting for it (``wait_ms``) and records the agent's callback, so
a worker killed between the move and the callback can never leave a released request whose
agent is never told. Callers: the pipeline (release, block, adjudicated denial), reviewers'
decisions and expiry.
"""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import nullcontext
from typing import Any

from django.db import transaction

from reviewq.models import FINAL_STATUSES
from reviewq.notify import finality, webhooks
from reviewq.transitions import guarded_update


def finish_request(
    request_id: Any,
    *,
    from_statuses: Iterable[str],
    to_status: str,
    known_callback_url: str | None = None,
    **fields: Any,
) -> bool:
    """Move the request to the final ``to_status`` if it is in one of ``from_statuses``, announce
    it and enqueue its callback. True if it moved.

    ``known_callback_url``: the request's callback URL when the caller has the row already
    (saves looking it up); None when unknown.
    """
    if to_status not in FINAL_STATUSES:
        raise ValueError(f"{to_status!r} is not a final state: use reviewq.transitions.move_request")
    # Without a callback (known to be empty) the UPDATE alone needs no transaction, and saves
    # the round trips of one.
    with transaction.atomic() if known_callback_url != "" else nullcontext():
        moved = guarded_update(request_id, from_statuses=from_statuses, to_status=to_status, **fields)
        if moved:
            finality.announce_on_commit(request_id)
            webhooks.request_finished(request_id, callback_url=known_callback_url)
    return moved
