"""The team's own LLM, called the way its agent would call it (observe mode's hot path).

One long-lived async HTTP client per upstream base URL keeps connections open, so forwarding adds
a hop, not a TLS handshake. The body goes out as the agent sent it (only ``model`` is set to the
registry's model id) and the answer comes back unchanged; what reviewq needs from it (the
assistant message, token counts) is read without altering it.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import httpx2
from django.conf import settings

from router.backends.openai_compatible import chat_completions_url
from router.models import ModelSpec

_clients: dict[str, httpx2.AsyncClient] = {}


class UpstreamError(Exception):
    """The upstream LLM could not be reached, timed out, failed (5xx) or answered nonsense."""


@dataclass
class UpstreamAnswer:
    status: int
    body: bytes
    data: dict[str, Any]
    latency_ms: float

    @property
    def message(self) -> dict[str, Any] | None:
        """The first choice's assistant message, if the answer has one."""
        try:
            message = self.data["choices"][0]["message"]
        except (KeyError, IndexError, TypeError):
            return None
        return message if isinstance(message, dict) else None

    def usage(self) -> tuple[int, int]:
        usage = self.data["usage"] if isinstance(self.data.get("usage"), dict) else {}
        return _count(usage.get("prompt_tokens")), _count(usage.get("completion_tokens"))


def _count(value: Any) -> int:
    return int(value) if isinstance(value, int | float) and value >= 0 else 0


def _client(model: ModelSpec) -> httpx2.AsyncClient:
    key = model.base_url
    client = _clients.get(key)
    if client is None:
        headers = {"Authorization": f"Bearer {settings.OPENAI_COMPATIBLE_API_KEY}"}
        client = _clients[key] = httpx2.AsyncClient(
            timeout=settings.LLM_TIMEOUT_S,
            headers=headers if settings.OPENAI_COMPATIBLE_API_KEY else {},
            follow_redirects=False,
        )
    return client


async def forward_chat_completion(model: ModelSpec, body: dict[str, Any]) -> UpstreamAnswer:
    """POSTs ``body`` to ``model``'s chat-completions URL as ``model.model_path``. An answer with
    a 4xx status is the upstream's own (returned to the agent as it is); connection failures,
    timeouts, 5xx and unparsable answers raise UpstreamError."""
    if model.backend != ModelSpec.Backend.OPENAI_COMPATIBLE or not model.base_url:
        raise UpstreamError(
            f"upstream model {model.name!r} is not an OpenAI-compatible model with a base_url"
        )
    url = chat_completions_url(model.base_url)
    started = time.perf_counter()
    try:
        response = await _client(model).post(url, json={**body, "model": model.model_path})
    except httpx2.TimeoutException as exc:
        raise UpstreamError(f"{url} timed out after {settings.LLM_TIMEOUT_S:g} s") from exc
    except httpx2.HTTPError as exc:
        raise UpstreamError(f"could not reach {url}: {exc}") from exc
    latency_ms = (time.perf_counter() - started) * 1000
    if response.status_code >= 500:
        raise UpstreamError(f"{url} returned HTTP {response.status_code}: {response.text[:300]}")
    try:
        data = json.loads(response.content)
    except ValueError as exc:
        raise UpstreamError(f"{url} answered with something that is not JSON: {response.text[:300]}") from exc
    if not isinstance(data, dict):
        raise UpstreamError(f"{url} answered with JSON that is not an object")
    return UpstreamAnswer(
        status=response.status_code, body=response.content, data=data, latency_ms=latency_ms
    )
