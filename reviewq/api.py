"""The agent API: submit a request, read it back."""

from __future__ import annotations

import time

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.cache import cache
from django.http import HttpRequest
from ninja import Header, Router, Status
from ninja.security import HttpBearer
from ninja.throttling import BaseThrottle

from reviewq import selectors, services
from reviewq.models import AgentKey, Request
from reviewq.redis_connection import shared_redis
from reviewq.schemas import ErrorOut, RequestIn, RequestOut


class AgentKeyAuth(HttpBearer):
    async def authenticate(self, request: HttpRequest, token: str) -> AgentKey | None:
        # A key this process checked a moment ago needs no query, and no thread hop to make one.
        return services.agent_key_recently_authenticated(token) or await sync_to_async(
            services.agent_key_authenticate
        )(token)


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
        key = f"throttle:agent-key:{_agent_key(request).pk}:"
        count, previous = _count_request(f"{key}{window}", f"{key}{window - 1}", ttl=2 * duration)
        overlap = 1 - (now - window * duration) / duration
        self._retry_after = duration - (now - window * duration)
        return previous * overlap + count <= limit

    def wait(self) -> float | None:
        return max(1.0, self._retry_after)


def _count_request(current: str, previous: str, *, ttl: int) -> tuple[int, int]:
    """Counts one request in window ``current``; returns (its count, window ``previous``'s).

    With Redis: one round trip on a client kept for the process (Django's cache API builds a new
    client per call and takes three trips, which cost 16 % of the web process under load).
    """
    if settings.REDIS_URL:
        pipe = shared_redis().pipeline(transaction=False)
        pipe.incr(current).expire(current, ttl).get(previous)
        count, _, before = pipe.execute()
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


router = Router(tags=["requests"], auth=AgentKeyAuth(), throttle=AgentKeyThrottle())
_ERRORS = {code: ErrorOut for code in (400, 401, 404, 409, 422, 429)}


def _agent_key(request: HttpRequest) -> AgentKey:
    return request.auth  # type: ignore[attr-defined]  # set by AgentKeyAuth


@router.post("/requests", response={201: RequestOut, 202: RequestOut, **_ERRORS})
async def create_request(
    request: HttpRequest, body: RequestIn, idempotency_key: str = Header("", alias="Idempotency-Key")
) -> Status:
    """Submit a conversation and tools. 201 with the answer if it is final within ``wait_ms``, else 202."""
    agent_key = _agent_key(request)
    created, _ = await sync_to_async(services.request_create)(
        agent_key=agent_key, payload=body.payload(), idempotency_key=idempotency_key[:255]
    )
    if not body.wait_ms or created.is_final:
        # Nothing to wait for (or a replay of a finished request): answer from the row in hand.
        return Status(201 if created.is_final else 202, created)
    final = await selectors.request_wait_final(
        agent_key=agent_key, request_id=created.id, wait_ms=body.wait_ms
    )
    return Status(201 if final.is_final else 202, final)


@router.get("/requests/{request_id}", response={200: RequestOut, **_ERRORS})
def get_request(request: HttpRequest, request_id: str) -> Request:
    """The request's status, and once released its action and who released it."""
    return selectors.request_get_for_agent(agent_key=_agent_key(request), request_id=request_id)
