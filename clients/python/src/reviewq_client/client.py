"""The agent side of reviewq's API: submit a request, read or wait for its outcome, withdraw it.

``ReviewqClient`` is synchronous, ``AsyncReviewqClient`` the same for asyncio; both speak
``/api/v1`` with the agent key as the bearer token.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar, cast

import httpx2

from reviewq_client.errors import ConnectionFailed, RateLimited, ReviewqError, error_from_response
from reviewq_client.outcome import Outcome

if TYPE_CHECKING:
    from reviewq_client.review_gate import OnDeny

F = TypeVar("F", bound=Callable[..., Any])

DEFAULT_URL = "http://127.0.0.1:8000"
# The server refuses a longer wait (its MAX_WAIT_MS, 30 s unless ops changed it).
DEFAULT_MAX_WAIT_MS = 30_000
# When the server answers a long poll at once (one that does not know wait_ms): poll, backing off.
POLL_START_S = 0.25
POLL_MAX_S = 5.0
# Waiting for the pipeline to route a request (policies decide in milliseconds): poll quickly.
ROUTE_POLL_START_S = 0.05
ROUTE_POLL_MAX_S = 1.0


def api_root(base_url: str) -> str:
    """``http://host:8000`` or ``http://host:8000/api/v1`` (either way) as the API's root."""
    root = base_url.rstrip("/")
    return root if root.endswith("/api/v1") else root + "/api/v1"


def request_body(
    messages: list[dict[str, Any]],
    tools: list[dict[str, Any]] | None = None,
    *,
    proposed_action: dict[str, Any] | None = None,
    task_type: str | None = None,
    tool_choice: str | None = None,
    parallel_tool_calls: bool | None = None,
    wait_ms: int = 0,
    callback_url: str | None = None,
    metadata: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The JSON body of ``POST /requests``; fields left as None are left out (the server's default)."""
    body: dict[str, Any] = {"messages": messages, "tools": tools or [], **(extra or {})}
    optional = {
        "proposed_action": proposed_action,
        "task_type": task_type,
        "tool_choice": tool_choice,
        "parallel_tool_calls": parallel_tool_calls,
        "callback_url": callback_url,
        "metadata": metadata,
    }
    body.update({key: value for key, value in optional.items() if value is not None})
    if wait_ms:
        body["wait_ms"] = wait_ms
    return body


class _Base:
    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float = 30.0,
        max_wait_ms: int = DEFAULT_MAX_WAIT_MS,
        headers: dict[str, str] | None = None,
    ) -> None:
        if not api_key:
            raise ValueError("an agent key is needed (manage.py create_agent_key prints one)")
        self.base_url = api_root(base_url)
        self.timeout = timeout
        self.max_wait_ms = max_wait_ms
        self._headers = {
            "Authorization": f"Bearer {api_key}",
            "User-Agent": "reviewq-client",
            **(headers or {}),
        }

    def _long_poll_timeout(self, wait_ms: int) -> httpx2.Timeout:
        # The read may take the whole wait: the client's timeout comes on top of it.
        return httpx2.Timeout(self.timeout + wait_ms / 1000)

    @staticmethod
    def _outcome(response: httpx2.Response) -> Outcome:
        try:
            body: Any = response.json()
        except ValueError:
            body = response.text
        if response.status_code >= 400 or not isinstance(body, dict):
            raise error_from_response(response.status_code, body, response.headers)
        return Outcome.from_json(body)

    @staticmethod
    def _submit_headers(idempotency_key: str | None) -> dict[str, str]:
        return {"Idempotency-Key": idempotency_key} if idempotency_key else {}

    def _next_wait_ms(self, deadline: float | None) -> int:
        if deadline is None:
            return self.max_wait_ms
        return max(0, min(self.max_wait_ms, int((deadline - time.monotonic()) * 1000)))

    def require_review(
        self,
        fn: F | None = None,
        *,
        tool: dict[str, Any] | None = None,
        name: str | None = None,
        description: str | None = None,
        on_deny: OnDeny = "raise",
        timeout_s: float | None = 300.0,
        messages: Any = None,
        metadata: dict[str, Any] | None = None,
    ) -> Any:
        """``@client.require_review(...)`` (an ``async def`` tool with the async client): see
        ``reviewq_client.require_review``."""
        from reviewq_client.review_gate import require_review

        client = cast("ReviewqClient | AsyncReviewqClient", self)
        return require_review(
            client,
            fn,
            tool=tool,
            name=name,
            description=description,
            on_deny=on_deny,
            timeout_s=timeout_s,
            messages=messages,
            metadata=metadata,
        )


class _WaitState:
    """One wait's bookkeeping: the backoff for servers that do not long-poll, the last error."""

    def __init__(self, timeout_s: float | None) -> None:
        self.deadline = None if timeout_s is None else time.monotonic() + timeout_s
        self.delay = POLL_START_S
        self.last_error: ReviewqError | None = None

    def remaining(self) -> float:
        return float("inf") if self.deadline is None else self.deadline - time.monotonic()

    def pause_after(self, outcome: Outcome | None, asked_ms: int, took_s: float) -> float:
        """How long to sleep before asking again (0: at once)."""
        if outcome is not None and took_s >= asked_ms / 2000:
            self.delay = POLL_START_S
            return 0.0  # the server held the answer: it long-polls, so ask again at once
        pause = min(self.delay, max(0.0, self.remaining()))
        self.delay = min(self.delay * 2, POLL_MAX_S)
        return pause

    def on_error(self, error: ReviewqError) -> float:
        """The pause after a transient error (a 429, a dropped connection); raises any other."""
        if not isinstance(error, (RateLimited, ConnectionFailed)):
            raise error
        self.last_error = error
        pause = error.retry_after if isinstance(error, RateLimited) else self.delay
        self.delay = min(self.delay * 2, POLL_MAX_S)
        return min(pause, max(0.0, self.remaining()))


class ReviewqClient(_Base):
    """reviewq's agent API, synchronous.

    >>> client = ReviewqClient("http://127.0.0.1:8000", api_key="rq_...")
    >>> outcome = client.submit(messages, tools, proposed_action=propose_tool_call("refund", {...}))
    >>> outcome = client.wait(outcome.id, timeout_s=300)
    """

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        api_key: str = "",
        *,
        timeout: float = 30.0,
        max_wait_ms: int = DEFAULT_MAX_WAIT_MS,
        headers: dict[str, str] | None = None,
        http_client: httpx2.Client | None = None,
    ) -> None:
        super().__init__(base_url, api_key, timeout=timeout, max_wait_ms=max_wait_ms, headers=headers)
        self._http = http_client or httpx2.Client(timeout=timeout)

    @classmethod
    def from_env(cls, **kwargs: Any) -> ReviewqClient:
        """From REVIEWQ_URL (default http://127.0.0.1:8000) and REVIEWQ_API_KEY."""
        return cls(os.getenv("REVIEWQ_URL", DEFAULT_URL), os.getenv("REVIEWQ_API_KEY", ""), **kwargs)

    def __enter__(self) -> ReviewqClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _send(self, method: str, path: str, **kwargs: Any) -> Outcome:
        headers = {**self._headers, **kwargs.pop("headers", {})}
        try:
            response = self._http.request(method, self.base_url + path, headers=headers, **kwargs)
        except httpx2.TransportError as exc:
            raise ConnectionFailed(f"{method} {path}: {exc}", code="connection_failed") from exc
        return self._outcome(response)

    def submit(
        self,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]] | None = None,
        *,
        proposed_action: dict[str, Any] | None = None,
        task_type: str | None = None,
        tool_choice: str | None = None,
        parallel_tool_calls: bool | None = None,
        wait_ms: int = 0,
        callback_url: str | None = None,
        metadata: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> Outcome:
        """``POST /requests``: the conversation and tools (OpenAI format), and optionally the call
        your own LLM proposed. Waits up to ``wait_ms`` for a final answer; ``extra`` holds other
        fields of the API (``response_schema``, ``labels``, ...)."""
        body = request_body(
            messages,
            tools,
            proposed_action=proposed_action,
            task_type=task_type,
            tool_choice=tool_choice,
            parallel_tool_calls=parallel_tool_calls,
            wait_ms=wait_ms,
            callback_url=callback_url,
            metadata=metadata,
            extra=extra,
        )
        return self._send(
            "POST",
            "/requests",
            json=body,
            headers=self._submit_headers(idempotency_key),
            timeout=self._long_poll_timeout(wait_ms),
        )

    def get(self, request_id: str, *, wait_ms: int = 0, until: str = "final") -> Outcome:
        """``GET /requests/{id}``; with ``wait_ms``, answered once final (``until="held"``: or
        awaiting a reviewer) or after that long."""
        params: dict[str, Any] | None = {"wait_ms": wait_ms, "until": until} if wait_ms else None
        return self._send(
            "GET", f"/requests/{request_id}", params=params, timeout=self._long_poll_timeout(wait_ms)
        )

    def wait(self, request_id: str, timeout_s: float | None = 60.0) -> Outcome:
        """The outcome once final, or as it stands after ``timeout_s`` (None: no limit).

        Long-polls, asking for at most ``max_wait_ms`` at a time; polls with backoff where the
        server answers at once. Rides out 429s and dropped connections until the time is up.
        """
        state = _WaitState(timeout_s)
        outcome: Outcome | None = None
        while True:
            asked_ms = self._next_wait_ms(state.deadline)
            started = time.monotonic()
            try:
                outcome = self.get(request_id, wait_ms=asked_ms)
            except ReviewqError as error:
                pause = state.on_error(error)
            else:
                if outcome.final:
                    return outcome
                pause = state.pause_after(outcome, asked_ms, time.monotonic() - started)
            if state.remaining() <= 0:
                if outcome is None:
                    raise state.last_error or ConnectionFailed("no answer", code="connection_failed")
                return outcome
            time.sleep(pause)

    def wait_routed(self, request_id: str, timeout_s: float = 10.0) -> Outcome:
        """The outcome once reviewq has routed the request: final, or awaiting a reviewer
        (long-polls ``until=held``). As it stands after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        pause = ROUTE_POLL_START_S
        while True:
            asked_ms = self._next_wait_ms(deadline)
            started = time.monotonic()
            outcome = self.get(request_id, wait_ms=asked_ms, until="held")
            if outcome.routed or time.monotonic() + pause > deadline:
                return outcome
            if time.monotonic() - started < asked_ms / 2000:  # a server that does not long-poll
                time.sleep(pause)
                pause = min(pause * 2, ROUTE_POLL_MAX_S)

    def cancel(self, request_id: str, reason: str = "") -> Outcome:
        """``POST /requests/{id}/cancel``: withdraw it (AlreadyFinal if it was decided first)."""
        return self._send("POST", f"/requests/{request_id}/cancel", json={"reason": reason} if reason else {})


class AsyncReviewqClient(_Base):
    """reviewq's agent API for asyncio; the same methods as ``ReviewqClient``, awaited."""

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        api_key: str = "",
        *,
        timeout: float = 30.0,
        max_wait_ms: int = DEFAULT_MAX_WAIT_MS,
        headers: dict[str, str] | None = None,
        http_client: httpx2.AsyncClient | None = None,
    ) -> None:
        super().__init__(base_url, api_key, timeout=timeout, max_wait_ms=max_wait_ms, headers=headers)
        self._http = http_client or httpx2.AsyncClient(timeout=timeout)

    @classmethod
    def from_env(cls, **kwargs: Any) -> AsyncReviewqClient:
        """From REVIEWQ_URL (default http://127.0.0.1:8000) and REVIEWQ_API_KEY."""
        return cls(os.getenv("REVIEWQ_URL", DEFAULT_URL), os.getenv("REVIEWQ_API_KEY", ""), **kwargs)

    async def __aenter__(self) -> AsyncReviewqClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _send(self, method: str, path: str, **kwargs: Any) -> Outcome:
        headers = {**self._headers, **kwargs.pop("headers", {})}
        try:
            response = await self._http.request(method, self.base_url + path, headers=headers, **kwargs)
        except httpx2.TransportError as exc:
            raise ConnectionFailed(f"{method} {path}: {exc}", code="connection_failed") from exc
        return self._outcome(response)

    async def submit(
        self,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]] | None = None,
        *,
        proposed_action: dict[str, Any] | None = None,
        task_type: str | None = None,
        tool_choice: str | None = None,
        parallel_tool_calls: bool | None = None,
        wait_ms: int = 0,
        callback_url: str | None = None,
        metadata: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> Outcome:
        """See ``ReviewqClient.submit``."""
        body = request_body(
            messages,
            tools,
            proposed_action=proposed_action,
            task_type=task_type,
            tool_choice=tool_choice,
            parallel_tool_calls=parallel_tool_calls,
            wait_ms=wait_ms,
            callback_url=callback_url,
            metadata=metadata,
            extra=extra,
        )
        return await self._send(
            "POST",
            "/requests",
            json=body,
            headers=self._submit_headers(idempotency_key),
            timeout=self._long_poll_timeout(wait_ms),
        )

    async def get(self, request_id: str, *, wait_ms: int = 0, until: str = "final") -> Outcome:
        """See ``ReviewqClient.get``."""
        params: dict[str, Any] | None = {"wait_ms": wait_ms, "until": until} if wait_ms else None
        return await self._send(
            "GET", f"/requests/{request_id}", params=params, timeout=self._long_poll_timeout(wait_ms)
        )

    async def wait(self, request_id: str, timeout_s: float | None = 60.0) -> Outcome:
        """See ``ReviewqClient.wait``."""
        state = _WaitState(timeout_s)
        outcome: Outcome | None = None
        while True:
            asked_ms = self._next_wait_ms(state.deadline)
            started = time.monotonic()
            try:
                outcome = await self.get(request_id, wait_ms=asked_ms)
            except ReviewqError as error:
                pause = state.on_error(error)
            else:
                if outcome.final:
                    return outcome
                pause = state.pause_after(outcome, asked_ms, time.monotonic() - started)
            if state.remaining() <= 0:
                if outcome is None:
                    raise state.last_error or ConnectionFailed("no answer", code="connection_failed")
                return outcome
            await asyncio.sleep(pause)

    async def wait_routed(self, request_id: str, timeout_s: float = 10.0) -> Outcome:
        """See ``ReviewqClient.wait_routed``."""
        deadline = time.monotonic() + timeout_s
        pause = ROUTE_POLL_START_S
        while True:
            asked_ms = self._next_wait_ms(deadline)
            started = time.monotonic()
            outcome = await self.get(request_id, wait_ms=asked_ms, until="held")
            if outcome.routed or time.monotonic() + pause > deadline:
                return outcome
            if time.monotonic() - started < asked_ms / 2000:  # a server that does not long-poll
                await asyncio.sleep(pause)
                pause = min(pause * 2, ROUTE_POLL_MAX_S)

    async def cancel(self, request_id: str, reason: str = "") -> Outcome:
        """See ``ReviewqClient.cancel``."""
        return await self._send(
            "POST", f"/requests/{request_id}/cancel", json={"reason": reason} if reason else {}
        )
