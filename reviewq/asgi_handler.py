"""Django's ASGI handler, with each request's sync work on a pooled thread.

Django runs a request's synchronous parts (the ``request_started`` and ``request_finished``
signals that open and close database connections, and every ``sync_to_async`` call of an async
view) on one thread per request, so that they share that thread's connections. Its handler
starts a new thread for every request and ends it afterwards: under intake load that was about
1 ms of the web process's CPU per request, with a new database wrapper built in each thread.

This handler keeps the rule (one thread per request while it runs) but borrows the thread from a
pool of idle ones, as a WSGI server's thread pool does. Django's ``request_finished`` closes or
returns the request's connections before the thread goes back, exactly as under WSGI.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
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
        self._idle: list[ThreadPoolExecutor] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            raise ValueError(f"Django can only handle ASGI/HTTP connections, not {scope['type']}.")
        # One worker per executor: the request's sync calls run in order on one thread, which is
        # what thread-sensitive mode promises. The event loop is single-threaded, so the list
        # needs no lock.
        executor = self._idle.pop() if self._idle else _request_thread()
        try:
            async with ThreadSensitiveContext(executor=executor):
                await self.handle(scope, receive, send)
        finally:
            # The thread is idle now: even when a client's disconnect cancels the view, asgiref
            # waits for the sync call already running, and calls made after the context exits
            # are refused (tests/test_asgi_handler.py checks the first).
            if len(self._idle) < IDLE_THREADS_KEPT:
                self._idle.append(executor)
            else:
                executor.shutdown(wait=False)


def _request_thread() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="django-request")


def get_asgi_application() -> PooledThreadASGIHandler:
    """As ``django.core.asgi.get_asgi_application``, with the pooled-thread handler."""
    django.setup(set_prefix=False)
    return PooledThreadASGIHandler()
