"""A small fake of Anthropic's Messages API, so the real ``anthropic`` client can be tested offline.

The server listens on 127.0.0.1 (a free port) in a daemon thread, records every request and
answers from a queue of scripted responses, or by default with a ``tool_use`` block calling
the tool the request forces (the first tool otherwise) with ``{}``. Use the ``fake_anthropic``
fixture; test modules import it with
``from tests.fake_anthropic import fake_anthropic_fixture  # noqa: F401``.

``ScriptedServer`` is the shared machinery; ``tests/fake_openai.py`` builds on it.
"""

from __future__ import annotations

import itertools
import json
import threading
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

import pytest


@dataclass
class Scripted:
    """One scripted answer: an HTTP status, a JSON body (None: the server's default answer)."""

    status: int = 200
    body: dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0


@dataclass
class Recorded:
    """One request as the server received it (header names lower-cased)."""

    method: str
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # A handler still sleeping through a "slow" answer must not hold up the test's teardown.
    block_on_close = False
    owner: ScriptedServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        # The client gave up on a slow answer and closed the socket: expected, not worth a trace.
        pass


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        self.server.owner._handle(self)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep pytest output clean


class ScriptedServer:
    """An HTTP server on 127.0.0.1 that records requests and replays scripted answers."""

    path = "/"

    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self._queue: deque[Scripted] = deque()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.owner = self
        # A short poll interval: shutdown() waits for the loop to notice, 0.5 s by default.
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.02,), daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> Self:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()  # wakes handlers sleeping through a slow answer
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def script(self, *answers: Scripted) -> None:
        """Queue answers for the next requests, in order; then the default answer resumes."""
        with self._lock:
            self._queue.extend(answers)

    @property
    def last_body(self) -> dict[str, Any]:
        return self.requests[-1].body

    def default_body(self, request: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    def _handle(self, handler: _Handler) -> None:
        length = int(handler.headers.get("content-length") or 0)
        raw = handler.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            body = {"_raw": raw.decode("utf-8", errors="replace")}
        headers = {name.lower(): value for name, value in handler.headers.items()}
        with self._lock:
            self.requests.append(Recorded(handler.command, handler.path, headers, body))
            if handler.path.split("?")[0] != self.path:
                answer = Scripted(
                    status=404, body={"error": {"type": "not_found_error", "message": handler.path}}
                )
            else:
                answer = self._queue.popleft() if self._queue else Scripted()
        if answer.delay_s and self._stopping.wait(answer.delay_s):
            return
        payload = json.dumps(answer.body if answer.body is not None else self.default_body(body)).encode()
        handler.send_response(answer.status)
        handler.send_header("content-type", "application/json")
        handler.send_header("content-length", str(len(payload)))
        for name, value in answer.headers.items():
            handler.send_header(name, value)
        handler.end_headers()
        handler.wfile.write(payload)


# -- the Messages API ----------------------------------------------------------------------------

_ids = itertools.count(1)


def _message(
    content: list[dict[str, Any]], *, stop_reason: str, input_tokens: int, output_tokens: int
) -> dict:
    return {
        "id": f"msg_fake{next(_ids):04d}",
        "type": "message",
        "role": "assistant",
        "model": "fake-claude",
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens},
    }


def tool_use_answer(
    name: str, input: dict[str, Any], *, input_tokens: int = 42, output_tokens: int = 17, delay_s: float = 0.0
) -> Scripted:
    """An answer with one tool_use block calling ``name`` with ``input``."""
    return tool_uses_answer(
        [(name, input)], input_tokens=input_tokens, output_tokens=output_tokens, delay_s=delay_s
    )


def tool_uses_answer(
    calls: list[tuple[str, dict[str, Any]]],
    *,
    input_tokens: int = 42,
    output_tokens: int = 17,
    stop_reason: str = "tool_use",
    delay_s: float = 0.0,
) -> Scripted:
    """An answer with a tool_use block per (name, input), after a short text block as Claude writes."""
    content: list[dict[str, Any]] = [{"type": "text", "text": "Let me do that."}]
    content += [
        {"type": "tool_use", "id": f"toolu_fake{next(_ids):04d}", "name": name, "input": arguments}
        for name, arguments in calls
    ]
    body = _message(content, stop_reason=stop_reason, input_tokens=input_tokens, output_tokens=output_tokens)
    return Scripted(body=body, delay_s=delay_s)


def text_answer(text: str, *, stop_reason: str = "end_turn") -> Scripted:
    """A text-only answer (no tool call)."""
    return Scripted(
        body=_message(
            [{"type": "text", "text": text}], stop_reason=stop_reason, input_tokens=30, output_tokens=5
        )
    )


_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}


def error_answer(
    status: int, *, retry_after: str | None = "0", retry_after_ms: str | None = None
) -> Scripted:
    """An API error in Anthropic's shape; 429 answers carry ``retry-after`` as the real API does."""
    headers = {}
    if retry_after is not None:
        headers["retry-after"] = retry_after
    if retry_after_ms is not None:
        headers["retry-after-ms"] = retry_after_ms
    error = {"type": _ERROR_TYPES.get(status, "api_error"), "message": f"fake error {status}"}
    return Scripted(status=status, body={"type": "error", "error": error}, headers=headers)


def slow_answer(delay_s: float, answer: Scripted | None = None) -> Scripted:
    """``answer`` (the default answer if None) after ``delay_s`` seconds."""
    answer = answer or Scripted()
    return Scripted(status=answer.status, body=answer.body, headers=answer.headers, delay_s=delay_s)


class FakeAnthropic(ScriptedServer):
    """POST /v1/messages, answered from the script or with a call to the forced (or first) tool."""

    path = "/v1/messages"

    def default_body(self, request: dict[str, Any]) -> dict[str, Any]:
        choice = request.get("tool_choice") or {}
        tools = request.get("tools") or []
        name = choice.get("name") if choice.get("type") == "tool" else (tools[0]["name"] if tools else None)
        if name is None:
            return text_answer("Hello from the fake.").body or {}
        return tool_use_answer(name, {}).body or {}


@pytest.fixture(name="fake_anthropic")
def fake_anthropic_fixture() -> Iterator[FakeAnthropic]:
    server = FakeAnthropic().start()
    try:
        yield server
    finally:
        server.stop()
