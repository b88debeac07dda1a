"""One Redis client per process for reviewq's own use (throttling, finality announcements).

redis-py clients are thread-safe and pool their connections; building one per call, as Django's
cache API does, costs more than the command it sends.

Redis is a hint and a speed-up, never the truth: when it is down, the gateway keeps accepting
requests (the database is the queue; the sweeper hands them over later). Each failure is
counted here (``reviewq_redis_errors_total`` on /metrics, for the process that answers the
scrape) and logged at most once a minute per operation.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from functools import cache
from typing import Any

from django.conf import settings

logger = logging.getLogger(__name__)
LOG_EVERY_SECONDS = 60.0
_errors: Counter[str] = Counter()
_last_logged: dict[str, float] = {}
_errors_lock = threading.Lock()


@cache
def shared_redis() -> Any:
    """The client for settings.REDIS_URL (only call it when REDIS_URL is set). Short timeouts:
    a request never waits long on a Redis that is down."""
    import redis

    return redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=1, socket_timeout=2)


@cache
def listening_redis() -> Any:
    """A client for long-lived subscriptions: no read timeout, since a quiet channel is normal."""
    import redis

    return redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=1)


def redis_failed(operation: str) -> None:
    """Counts a failed Redis operation and logs it (with the exception) at most once a minute."""
    now = time.monotonic()
    with _errors_lock:
        _errors[operation] += 1
        if now - _last_logged.get(operation, -LOG_EVERY_SECONDS) < LOG_EVERY_SECONDS:
            return
        _last_logged[operation] = now
        total = _errors[operation]
    logger.warning(
        "Redis is unavailable for %s (%d failures so far); carrying on without it",
        operation,
        total,
        exc_info=True,
    )


def redis_errors() -> dict[str, int]:
    """Failed Redis operations in this process so far, by operation."""
    with _errors_lock:
        return dict(_errors)
