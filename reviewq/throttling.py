"""The per-agent-key request budget (settings.API_RATE_LIMIT): 429 with Retry-After beyond it."""

from __future__ import annotations

import time

from django.conf import settings
from django.core.cache import cache
from django.http import HttpRequest
from ninja.throttling import BaseThrottle
from redis.exceptions import RedisError

from reviewq.runtime.redis_connection import redis_failed, shared_redis


class AgentKeyThrottle(BaseThrottle):
    """A request budget per agent key (settings.API_RATE_LIMIT), shared by all web processes
    when the cache is Redis. Over budget: 429 with Retry-After.

    A sliding-window counter: one atomic increment of this window's count, plus the previous
    window's count weighted by how much of it still overlaps the last ``duration`` seconds.
    (Storing every request's timestamp, as ninja's throttles do, pickled a growing list through
    the cache on each request.)
    """

    _retry_after = 1.0  # seconds to the end of the current window, set by allow_request

    def allow_request(self, request: HttpRequest) -> bool:
        # Read the budget per request, so a settings change needs no restart of the router.
        limit, duration = parse_rate(settings.API_RATE_LIMIT)
        now = time.time()
        window = int(now // duration)
        key = f"throttle:agent-key:{request.auth.pk}:"  # type: ignore[attr-defined]
        count, previous = _count_request(f"{key}{window}", f"{key}{window - 1}", ttl=2 * duration)
        overlap = 1 - (now - window * duration) / duration
        self._retry_after = duration - (now - window * duration)
        return previous * overlap + count <= limit

    def wait(self) -> float | None:
        return max(1.0, self._retry_after)


def _count_request(current: str, previous: str, *, ttl: int) -> tuple[int, int]:
    """Counts one request in window ``current``; returns (its count, window ``previous``'s).

    With Redis: one round trip on a client kept for the process (Django's cache API builds a new
    client per call and takes three trips: a large share of the web process under load).
    """
    if settings.REDIS_URL:
        try:
            pipe = shared_redis().pipeline(transaction=False)
            pipe.incr(current).expire(current, ttl).get(previous)
            count, _, before = pipe.execute()
        except RedisError:
            redis_failed("throttle")
            return 0, 0  # no shared budget without Redis: accept rather than refuse every agent
        return int(count), int(before or 0)
    try:
        count = cache.incr(current)
    except ValueError:  # the window's first request (or a race with another one)
        count = 1 if cache.add(current, 1, timeout=ttl) else cache.incr(current)
    return count, int(cache.get(previous, 0))


_RATE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_rate(rate: str) -> tuple[int, int]:
    """``"1000/s"`` -> (1000 requests, per 1 second); the unit is s, m, h or d (or a word)."""
    count, _, unit = rate.partition("/")
    return int(count), _RATE_UNITS[unit.strip()[:1].lower()]
