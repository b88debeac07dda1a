"""The drop-in OpenAI Chat Completions endpoint at /v1 (``OpenAI(base_url=".../v1", api_key=KEY)``).

Errors are in OpenAI's shape (``{"error": {"message", "type", "code"}}``) so that its SDK raises
them as the usual exceptions. The work is in reviewq/services/chat_completions.py.
"""

from __future__ import annotations

import json

from django.http import HttpRequest, HttpResponse, JsonResponse
from ninja import Header, NinjaAPI
from ninja.errors import AuthenticationError, HttpError
from ninja.errors import ValidationError as NinjaValidationError

from reviewq.api import AgentKeyAuth
from reviewq.errors import ApplicationError
from reviewq.models import AgentKey
from reviewq.schemas import ChatCompletionIn
from reviewq.services.chat_completions import (
    CompletionReply,
    gateway_completion,
    observe_completion,
    openai_error,
)
from reviewq.throttling import AgentKeyThrottle
from reviewq.untrusted import JSONParser

openai_api = NinjaAPI(
    title="reviewq: OpenAI-compatible endpoint",
    version="1",
    description="POST /v1/chat/completions with an agent key as the bearer token.",
    urls_namespace="openai",
    docs_url="/docs",
    parser=JSONParser(),
)


def _response(reply: CompletionReply) -> HttpResponse:
    if isinstance(reply.body, bytes):
        response = HttpResponse(reply.body, status=reply.status, content_type="application/json")
    else:
        response = JsonResponse(reply.body, status=reply.status)
    for name, value in reply.headers.items():
        response[name] = value
    return response


@openai_api.post("/chat/completions", auth=AgentKeyAuth(), throttle=AgentKeyThrottle())
async def chat_completions(
    request: HttpRequest, body: ChatCompletionIn, idempotency_key: str = Header("", alias="Idempotency-Key")
) -> HttpResponse:
    """OpenAI Chat Completions. Gateway mode: reviewq's pipeline answers (a held action answers
    that it awaits review). Observe mode: the key's upstream LLM answers, unchanged."""
    agent_key: AgentKey = request.auth  # type: ignore[attr-defined]  # set by AgentKeyAuth
    if agent_key.scope != AgentKey.Scope.AGENT:
        return _response(openai_error(403, "an ops key cannot submit requests", code="forbidden"))
    if body.stream:
        return _response(
            openai_error(400, "stream is not supported: send stream=false (the default)", code="unsupported")
        )
    if body.n not in (None, 1):
        return _response(openai_error(400, "n must be 1: reviewq decides one action", code="unsupported"))
    if agent_key.mode == AgentKey.Mode.OBSERVE:
        # Forward what the agent sent, fields reviewq does not read included.
        raw = json.loads(request.body)
        reply = await observe_completion(agent_key, raw, idempotency_key)
    else:
        reply = await gateway_completion(
            agent_key, body.model_dump(mode="json", exclude_none=True), idempotency_key
        )
    return _response(reply)


@openai_api.exception_handler(ApplicationError)
def on_application_error(request: HttpRequest, exc: ApplicationError) -> HttpResponse:
    return _response(openai_error(exc.status, exc.message, code=exc.code))


@openai_api.exception_handler(NinjaValidationError)
def on_validation_error(request: HttpRequest, exc: NinjaValidationError) -> HttpResponse:
    first = exc.errors[0] if exc.errors else {}
    where = ".".join(str(part) for part in first.get("loc", ()) if part != "body")
    message = (
        f"{where}: {first.get('msg', 'invalid value')}" if where else str(first.get("msg", "invalid request"))
    )
    return _response(openai_error(400, message, code="invalid_request"))


@openai_api.exception_handler(AuthenticationError)
def on_auth_error(request: HttpRequest, exc: AuthenticationError) -> HttpResponse:
    reply = openai_error(401, "send a valid reviewq agent key as the API key", code="invalid_api_key")
    return _response(reply)


@openai_api.exception_handler(HttpError)
def on_http_error(request: HttpRequest, exc: HttpError) -> HttpResponse:
    if isinstance(exc.__cause__, ApplicationError):
        return on_application_error(request, exc.__cause__)
    code = {400: "malformed_json", 429: "rate_limited"}.get(exc.status_code, "http_error")
    return _response(openai_error(exc.status_code, str(exc), code=code))
