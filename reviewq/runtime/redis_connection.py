"""One Redis client per process for reviewq's own use (throttling, finality announcements).

redis-py clients are thread-safe and pool their connections; building one per call, as Django's
cache API does, costs more than the command it sends.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from django.conf import settings


@cache
def shared_redis() -> Any:
    """The client for settings.REDIS_URL (only call it when REDIS_URL is set)."""
    import redis

    return redis.Redis.from_url(settings.REDIS_URL)
