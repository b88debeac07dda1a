"""The web process's ASGI handler borrows each request's thread from a pool.

Django's rule stays: one request's synchronous work runs on one thread, and no other request
runs on that thread meanwhile. What changes is that the thread outlives the request.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from django.core.signals import request_finished, request_started
from django.http import HttpRequest, HttpResponse
from django.urls import path

from reviewq.runtime.asgi_handler import PooledThreadASGIHandler

# Views for the test that uses this module as its URLconf.
_view_threads: list[threading.Thread] = []
_view_gate = threading.Event()


def _slow_view(request: HttpRequest) -> HttpResponse:
    _view_threads.append(threading.current_thread())
    _view_gate.wait(timeout=10)
    return HttpResponse("slow")


def _quick_view(request: HttpRequest) -> HttpResponse:
    _view_threads.append(threading.current_thread())
    return HttpResponse("quick")


urlpatterns = [path("slow", _slow_view), path("quick", _quick_view)]


async def _get(handler: PooledThreadASGIHandler, path: str, *, disconnect: Any = None) -> int | None:
    """One GET through the handler; returns the response status (None if there was none).

    With ``disconnect`` (an awaitable), the client hangs up once it completes.
    """
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"testserver")],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }
    delivered = asyncio.Event()
    messages: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        if not delivered.is_set():
            delivered.set()
            return {"type": "http.request", "body": b"", "more_body": False}
        if disconnect is not None:
            await disconnect
            return {"type": "http.disconnect"}
        await asyncio.Event().wait()  # the client stays connected
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        messages.append(message)

    await handler(scope, receive, send)
    return next((m["status"] for m in messages if m["type"] == "http.response.start"), None)


@pytest.fixture
def request_threads() -> Any:
    """The thread each request's ``request_started`` receiver ran on, in order, and a gate that
    holds the first request there until it is set."""
    seen: list[threading.Thread] = []
    gate = threading.Event()
    gate.set()

    def record(**kwargs: Any) -> None:
        seen.append(threading.current_thread())
        if len(seen) == 1:
            gate.wait(timeout=10)

    request_started.connect(record, weak=False)
    yield seen, gate
    request_started.disconnect(record)


@pytest.mark.django_db
def test_requests_one_after_another_reuse_one_pooled_thread(request_threads: Any) -> None:
    seen, _ = request_threads
    handler = PooledThreadASGIHandler()

    async def scenario() -> list[int | None]:
        return [await _get(handler, "/healthz") for _ in range(3)]

    assert asyncio.run(scenario()) == [200, 200, 200]
    assert len(seen) == 3
    assert seen[0] is seen[1] is seen[2]
    assert seen[0] is not threading.main_thread()
    assert seen[0].name.startswith("django-request")


@pytest.mark.django_db
def test_a_request_never_shares_its_thread_with_one_in_flight(request_threads: Any) -> None:
    seen, gate = request_threads
    gate.clear()  # the first request holds its thread until the second has finished
    handler = PooledThreadASGIHandler()

    async def scenario() -> tuple[int | None, int | None]:
        first = asyncio.ensure_future(_get(handler, "/healthz"))
        while not seen:
            await asyncio.sleep(0.01)
        second = await asyncio.wait_for(_get(handler, "/healthz"), timeout=5)
        gate.set()
        return await first, second

    assert asyncio.run(scenario()) == (200, 200)
    assert seen[0] is not seen[1]


def _slow_request_cancelled(handler: PooledThreadASGIHandler) -> Any:
    """A GET of the slow view whose client hangs up while the view runs; the view ends 0.3 s
    after it started. Returns the response status (None: no response)."""

    async def view_started() -> None:
        while not _view_threads:
            await asyncio.sleep(0.01)
        threading.Timer(0.3, _view_gate.set).start()

    return asyncio.wait_for(_get(handler, "/slow", disconnect=view_started()), timeout=5)


@pytest.mark.django_db
@pytest.mark.urls("tests.test_asgi_handler")
def test_a_cancelled_request_gives_its_thread_back_once_its_view_has_finished() -> None:
    """A disconnect cancels the view, but its sync call runs on: Django's request_finished
    queues behind it on the same thread, so the handler returns once the view is done, and the
    thread is lent again."""
    _view_threads.clear()
    _view_gate.clear()
    finished: list[bool] = []
    handler = PooledThreadASGIHandler()

    async def scenario() -> tuple[int | None, int | None]:
        cancelled = await _slow_request_cancelled(handler)
        finished.append(_view_gate.is_set())
        quick = await asyncio.wait_for(_get(handler, "/quick"), timeout=5)
        return cancelled, quick

    try:
        cancelled, quick = asyncio.run(scenario())
    finally:
        _view_gate.set()
    assert cancelled is None  # no response: the client had gone
    assert finished == [True]
    assert quick == 200
    assert len(_view_threads) == 2 and _view_threads[0] is _view_threads[1]  # the same thread, lent again


@pytest.mark.django_db
@pytest.mark.urls("tests.test_asgi_handler")
def test_a_thread_still_running_a_cancelled_call_is_never_lent(monkeypatch: Any) -> None:
    """Without request_finished receivers nothing queues behind the cancelled view, so the handler
    returns while the view still runs on its thread: the next request must get another thread,
    and must not wait for the slow view."""
    monkeypatch.setattr(request_finished, "receivers", [])
    monkeypatch.setattr(request_finished, "sender_receivers_cache", {})
    _view_threads.clear()
    _view_gate.clear()
    still_running: list[bool] = []
    handler = PooledThreadASGIHandler()

    async def scenario() -> int | None:
        await _slow_request_cancelled(handler)
        still_running.append(not _view_gate.is_set())
        return await asyncio.wait_for(_get(handler, "/quick"), timeout=5)

    try:
        quick = asyncio.run(scenario())
        quick_finished_first = not _view_gate.is_set()
    finally:
        _view_gate.set()
    assert still_running == [True]  # the case under test: the handler did not wait
    assert quick == 200 and quick_finished_first
    assert len(_view_threads) == 2 and _view_threads[0] is not _view_threads[1]
