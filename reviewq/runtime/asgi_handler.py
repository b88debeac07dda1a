"""Django's ASGI handler, with each request's sync work on a pooled thread.

Django runs a request's synchronous parts (the ``request_started`` and ``request_finished``
signals that open and close database connections, and every ``sync_to_async`` call of an async
view) on one thread per request, so that they share that thread's connections. Its handler
starts a new thread for every request and ends it afterwards, building a new database wrapper
in each: under intake load a good share of the web process's samples went to that thread and its
hops (``bench/gateway_overhead.py --modes "" --workers 1 --profile`` shows it; the README has the
figures).

This handler keeps the rule (one thread per request while it runs) but borrows the thread from a
pool of idle ones, as a WSGI server's thread pool does. Django's ``request_finished`` closes or
returns the request's connections before the thread goes back, exactly as under WSGI.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import django
from asgiref.sync import ThreadSensitiveContext
from django.core.handlers.asgi import ASGIHandler

# Threads kept idle between requests; a burst beyond this makes extra threads that then end.
IDLE_THREADS_KEPT = 64


class PooledThreadASGIHandler(ASGIHandler):
    """``ASGIHandler`` whose per-request thread comes from a pool instead of being started."""

    def __init__(self) -> None:
        super().__init__()
        self._idle: list[RequestThread] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            raise ValueError(f"Django can only handle ASGI/HTTP connections, not {scope['type']}.")
        # The event loop is single-threaded, so the idle list needs no lock.
        thread = self._idle.pop() if self._idle else RequestThread()
        try:
            async with ThreadSensitiveContext(executor=thread):
                await self.handle(scope, receive, send)
        finally:
            # Usually every call has finished by now. Not always: when a client's disconnect
            # cancels the view, asgiref stops waiting for its sync call, which runs on (Django's
            # request_finished queues behind it, but a handler that raised, or a server shutting
            # down, need not wait). A thread still busy is never lent: it ends after its calls.
            if thread.unfinished == 0 and len(self._idle) < IDLE_THREADS_KEPT:
                self._idle.append(thread)
            else:
                thread.shutdown(wait=False)


class RequestThread(ThreadPoolExecutor):
    """One thread that runs a request's sync calls in order, counting those not yet finished."""

    def __init__(self) -> None:
        super().__init__(max_workers=1, thread_name_prefix="django-request")
        self.unfinished = 0
        self._count_lock = threading.Lock()

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        with self._count_lock:
            self.unfinished += 1
        try:
            future = super().submit(fn, *args, **kwargs)
        except BaseException:
            self._count_finished()
            raise
        future.add_done_callback(self._count_finished)
        return future

    def _count_finished(self, future: Future[Any] | None = None) -> None:
        with self._count_lock:
            self.unfinished -= 1


def get_asgi_application() -> PooledThreadASGIHandler:
    """As ``django.core.asgi.get_asgi_application``, with the pooled-thread handler."""
    django.setup(set_prefix=False)
    return PooledThreadASGIHandler()
