"""Leases kept alive while a worker works: only a dead worker's request is ever swept.

A worker owns a request in a working state until its ``lease_expires_at``; the sweeper then
assumes the worker died and runs the pipeline again. A proposal can take longer than a lease
(a long agent conversation on a busy CPU), so while this process works on requests one thread
renews their leases every third of a lease (at least every RENEW_AT_MOST_SECONDS), in one UPDATE
for all of them. A process that dies
stops renewing, and its requests are swept once their lease passes.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import close_old_connections
from django.utils import timezone

from reviewq.models import WORKING_STATUSES, Request, RequestStatus

logger = logging.getLogger(__name__)
# Claimed states: a received request has no worker yet.
_OWNED = sorted(WORKING_STATUSES - {RequestStatus.RECEIVED})
_lock = threading.Lock()
_working: Counter[str] = Counter()
_renewer: threading.Thread | None = None
_started = threading.Event()  # set when a request's work starts: the renewer checks its timing
# Renew at least this often, so a shortened lease (a settings change) is honoured within seconds.
RENEW_AT_MOST_SECONDS = 5.0


@contextmanager
def keeping_lease(request_id: Any) -> Iterator[None]:
    """Renew ``request_id``'s lease while the block runs (from this process's renewer thread)."""
    global _renewer
    key = str(request_id)
    with _lock:
        _working[key] += 1
        if _renewer is None or not _renewer.is_alive():
            _renewer = threading.Thread(target=_renew_forever, name="reviewq-leases", daemon=True)
            _renewer.start()
    _started.set()
    try:
        yield
    finally:
        with _lock:
            _working[key] -= 1
            if _working[key] <= 0:
                del _working[key]


def renew_leases() -> int:
    """Extend the lease of every request this process is working on. Returns how many moved."""
    with _lock:
        ids = list(_working)
    if not ids:
        return 0
    lease = timedelta(seconds=settings.PIPELINE_LEASE_SECONDS)
    return Request.objects.filter(id__in=ids, status__in=_OWNED).update(
        lease_expires_at=timezone.now() + lease
    )


def _interval() -> float:
    return min(settings.PIPELINE_LEASE_SECONDS / 3, RENEW_AT_MOST_SECONDS)


def _renew_forever() -> None:
    due = time.monotonic() + _interval()
    while True:
        _started.wait(max(0.0, due - time.monotonic()))
        _started.clear()
        now = time.monotonic()
        due = min(due, now + _interval())  # a request just started under a shorter lease
        if now < due:
            continue
        try:
            renew_leases()
        except Exception:  # the database is away for a moment: the next pass tries again
            logger.warning("could not renew the leases of the requests in progress", exc_info=True)
        finally:
            close_old_connections()
        due = time.monotonic() + _interval()
