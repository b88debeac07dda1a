"""The agent API: submit a request, read it back."""

from __future__ import annotations

from asgiref.sync import sync_to_async
from django.conf import settings
from django.http import HttpRequest
from ninja import Header, Router, Status
from ninja.security import HttpBearer
from ninja.throttling import AuthRateThrottle

from reviewq import selectors, services
from reviewq.models import AgentKey, Request
from reviewq.schemas import ErrorOut, RequestIn, RequestOut


class AgentKeyAuth(HttpBearer):
    def authenticate(self, request: HttpRequest, token: str) -> AgentKey | None:
        return services.agent_key_authenticate(token)


class AgentKeyThrottle(AuthRateThrottle):
    """A request budget per agent key (settings.API_RATE_LIMIT), shared by all web processes
    when the cache is Redis. Over budget: 429 with Retry-After."""

    def __init__(self) -> None:
        super().__init__(settings.API_RATE_LIMIT)

    def allow_request(self, request: HttpRequest) -> bool:
        # Read the budget per request, so a settings change needs no restart of the router.
        self.rate = settings.API_RATE_LIMIT
        self.num_requests, self.duration = self.parse_rate(self.rate)
        return super().allow_request(request)

    def get_cache_key(self, request: HttpRequest) -> str:
        return f"throttle_agent_key_{_agent_key(request).pk}"


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
