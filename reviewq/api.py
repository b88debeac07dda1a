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
from reviewq.schemas import ErrorOut, RequestIn, RequestOut


class AgentKeyAuth(HttpBearer):
    def authenticate(self, request: HttpRequest, token: str) -> AgentKey | None:
        return services.agent_key_authenticate(token)


class AgentKeyThrottle(BaseThrottle):
    """A request budget per agent key (settings.API_RATE_LIMIT), shared by all web processes
    when the cache is Redis. Over budget: 429 with Retry-After.

    A sliding-window counter: one atomic increment of this window's count, plus the previous
    window's count weighted by how much of it still overlaps the last ``duration`` seconds.
    (Storing every request's timestamp, as ninja's throttles do, pickled a growing list through
    the cache on each request.)
    """

    def allow_request(self, request: HttpRequest) -> bool:
        # Read the budget per request, so a settings change needs no restart of the router.
        limit, duration = parse_rate(settings.API_RATE_LIMIT)
        now = time.time()
        window = int(now // duration)
        key = f"throttle:agent-key:{_agent_key(request).pk}:"
        try:
            count = cache.incr(f"{key}{window}")
        except ValueError:  # the window's first request (or a race with another one)
            added = cache.add(f"{key}{window}", 1, timeout=2 * duration)
            count = 1 if added else cache.incr(f"{key}{window}")
        overlap = 1 - (now - window * duration) / duration
        previous = cache.get(f"{key}{window - 1}", 0)
        self._retry_after = duration - (now - window * duration)
        return previous * overlap + count <= limit

    def wait(self) -> float | None:
        return max(1.0, getattr(self, "_retry_after", 1.0))


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
    if not body.wait_ms:
        # Nothing to wait for: answer from the row just written (no extra read, no thread hop).
        return Status(201 if created.is_final else 202, created)
    final = await selectors.request_wait_final(
        agent_key=agent_key, request_id=created.id, wait_ms=body.wait_ms
    )
    return Status(201 if final.is_final else 202, final)


@router.get("/requests/{request_id}", response={200: RequestOut, **_ERRORS})
def get_request(request: HttpRequest, request_id: str) -> Request:
    """The request's status, and once released its action and who released it."""
    return selectors.request_get_for_agent(agent_key=_agent_key(request), request_id=request_id)
