"""The agent API: submit a request, read it back (or wait for it), withdraw it."""

from __future__ import annotations

from asgiref.sync import sync_to_async
from django.http import HttpRequest
from ninja import Header, Query, Router, Status
from ninja.security import HttpBearer

from reviewq import selectors
from reviewq.models import AgentKey, Request, RequestStatus
from reviewq.schemas import CancelIn, ErrorOut, RequestIn, RequestOut, WaitQuery
from reviewq.services.agent_keys import agent_key_authenticate, agent_key_recently_authenticated
from reviewq.services.cancellation import request_cancel
from reviewq.services.intake import request_create
from reviewq.throttling import AgentKeyThrottle


class AgentKeyAuth(HttpBearer):
    async def authenticate(self, request: HttpRequest, token: str) -> AgentKey | None:
        # A key this process checked a moment ago needs no query, and no thread hop to make one.
        return agent_key_recently_authenticated(token) or await sync_to_async(agent_key_authenticate)(token)


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
    created, _ = await sync_to_async(request_create)(
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
async def get_request(request: HttpRequest, request_id: str, query: Query[WaitQuery]) -> Request:
    """The request's status, and once released its action and who released it.

    With ``wait_ms`` the answer comes once the request is final (``until=held``: or awaits a
    reviewer), or after ``wait_ms`` as it stands (a long poll)."""
    agent_key = _agent_key(request)
    current = await sync_to_async(selectors.request_get_for_agent)(agent_key=agent_key, request_id=request_id)
    until_held = query.until == "held"
    held = until_held and current.status == RequestStatus.AWAITING_REVIEW
    if not query.wait_ms or current.is_final or held:
        return current
    return await selectors.request_wait_final(
        agent_key=agent_key, request_id=current.id, wait_ms=query.wait_ms, until_held=until_held
    )


@router.post("/requests/{request_id}/cancel", response={200: RequestOut, **_ERRORS})
def cancel_request(request: HttpRequest, request_id: str, body: CancelIn | None = None) -> Request:
    """Withdraw the request: it becomes ``cancelled`` and its held item leaves the queue. A request
    already final is left as it is (409 ``already_final``)."""
    return request_cancel(
        agent_key=_agent_key(request), request_id=request_id, reason=body.reason if body else ""
    )
