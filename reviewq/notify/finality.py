"""Wakes the API calls waiting (``wait_ms``) for a request to reach a final state (or to be
held for review, for a wait ``until=held``).

The database stays the source of truth: a woken waiter re-reads the row, and every waiter also
re-reads it on a slow timer in case a wake-up is lost. Announcements are sent after commit, so a
woken reader sees the final row.

- In one process (the embedded mode, or a request the web process finished itself): a registry
  of asyncio events per request id, set from any thread with ``call_soon_threadsafe``.
- Across processes (Celery workers finishing requests that a web process waits on): Redis
  pub/sub on one channel. Each web process runs one listener thread, started by its first
  waiter, that wakes its local waiters (a thread, not a task: it outlives any one event loop).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from django.conf import settings
from django.db import transaction

from reviewq.runtime.redis_connection import listening_redis, redis_failed, shared_redis

logger = logging.getLogger(__name__)

CHANNEL = "reviewq:request-final"
RECONNECT_SECONDS = 1.0

_lock = threading.Lock()
_waiters: dict[str, list[tuple[asyncio.AbstractEventLoop, asyncio.Event]]] = {}
_listener: threading.Thread | None = None
# Requests announced lately, so a waiter that registers after the announcement (the pipeline can
# finish before the API call that created the request starts waiting) is woken at once.
_recent: OrderedDict[str, None] = OrderedDict()
RECENT_SIZE = 4096


def announce_on_commit(request_id: Any) -> None:
    """Announce that ``request_id`` is final (or held) once the current transaction commits."""
    request_id = str(request_id)
    transaction.on_commit(lambda: announce(request_id))


def announce(request_id: str) -> None:
    """Wake this process's waiters for ``request_id``; with Redis and none here, tell the others."""
    if _wake_local(request_id) or not settings.REDIS_URL:
        return
    try:
        shared_redis().publish(CHANNEL, request_id)
    except Exception:  # noqa: BLE001 - a hint only: the waiters' slow re-read sees the final state
        redis_failed("finality announcement")


@contextmanager
def waiting_for(request_id: Any) -> Iterator[asyncio.Event]:
    """An event set when ``request_id`` is announced final (already set if it was announced
    lately). Register before reading the row: an announcement between the read and the wait
    then still wakes the waiter."""
    key = str(request_id)
    entry = (asyncio.get_running_loop(), asyncio.Event())
    with _lock:
        _waiters.setdefault(key, []).append(entry)
        if key in _recent:
            entry[1].set()
    if settings.REDIS_URL:
        ensure_listener()
    try:
        yield entry[1]
    finally:
        with _lock:
            entries = _waiters.get(key, [])
            if entry in entries:
                entries.remove(entry)
            if not entries:
                _waiters.pop(key, None)


def ensure_listener() -> None:
    """Start this process's Redis listener unless it is running."""
    global _listener
    with _lock:
        if _listener is None or not _listener.is_alive():
            _listener = threading.Thread(target=_listen, name="reviewq-finality", daemon=True)
            _listener.start()


def _wake_local(request_id: str) -> bool:
    with _lock:
        _recent[request_id] = None
        if len(_recent) > RECENT_SIZE:
            _recent.popitem(last=False)
        entries = list(_waiters.get(request_id, ()))
    for loop, event in entries:
        try:
            loop.call_soon_threadsafe(event.set)
        except RuntimeError:  # that loop has closed: its waiter is gone
            pass
    return bool(entries)


def _listen() -> None:
    while True:
        try:
            with listening_redis().pubsub(ignore_subscribe_messages=True) as pubsub:
                pubsub.subscribe(CHANNEL)
                for message in pubsub.listen():
                    if isinstance(message.get("data"), bytes):
                        _wake_local(message["data"].decode())
        except Exception:  # noqa: BLE001 - reconnects; waiters meanwhile re-read on their slow timer
            redis_failed("finality listener")
        time.sleep(RECONNECT_SECONDS)
