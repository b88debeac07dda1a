"""Waiting for a final answer (``wait_ms``): woken by an announcement, never only by polling.

The pipeline announces a final state after commit; a waiter in the same process is woken
directly, one in another process through Redis pub/sub. The database stays the truth: a lost
announcement only delays the answer until the waiter's slow re-read.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import connection, connections

from reviewq import selectors
from reviewq.models import Request, RequestStatus
from reviewq.notify import finality
from tests.conftest import require_services


def test_an_announcement_from_another_thread_wakes_the_waiter() -> None:
    async def scenario() -> None:
        with finality.waiting_for("request-1") as announced:
            threading.Thread(target=finality.announce, args=("request-1",)).start()
            await asyncio.wait_for(announced.wait(), timeout=5)

    asyncio.run(scenario())


def test_an_announcement_for_another_request_does_not_wake_the_waiter() -> None:
    async def scenario() -> bool:
        with finality.waiting_for("request-2") as announced:
            finality.announce("request-3")
            await asyncio.sleep(0.05)
            return announced.is_set()

    assert asyncio.run(scenario()) is False
    assert "request-2" not in finality._waiters  # the registry forgets waiters that left


@pytest.mark.django_db(transaction=True)
def test_a_lost_announcement_is_covered_by_the_reread(agent: Any, monkeypatch: Any) -> None:
    monkeypatch.setattr(selectors, "WAIT_REREAD_SECONDS", 0.05)
    key, _ = agent
    request = Request.objects.create(
        agent_key=key, body_sha256="x", messages=[], status=RequestStatus.PROPOSING
    )

    def finish_without_announcing() -> None:
        time.sleep(0.2)
        try:
            Request.objects.filter(id=request.id).update(status=RequestStatus.RELEASED)
        finally:
            connection.close()

    async def wait() -> Request:
        try:
            return await selectors.request_wait_final(agent_key=key, request_id=request.id, wait_ms=10_000)
        finally:
            await sync_to_async(connections.close_all)()  # the reads ran in asgiref's thread

    threading.Thread(target=finish_without_announcing).start()
    assert asyncio.run(wait()).status == RequestStatus.RELEASED


def test_a_worker_process_announcement_reaches_a_waiting_web_process() -> None:
    """A Celery worker has no waiters of its own: it publishes, and the web process's listener
    wakes its waiter."""
    require_services()
    import redis

    client = redis.Redis.from_url(settings.REDIS_URL)
    worker = (
        "import django; django.setup(); from reviewq.notify import finality; "
        "finality.announce('request-from-a-worker')"
    )

    async def scenario() -> None:
        with finality.waiting_for("request-from-a-worker") as announced:
            deadline = time.monotonic() + 10
            while not client.pubsub_numsub(finality.CHANNEL)[0][1] and time.monotonic() < deadline:
                await asyncio.sleep(0.01)  # the listener thread is subscribing
            env = {
                **os.environ,
                "DJANGO_SETTINGS_MODULE": "reviewq.settings",
                "REDIS_URL": settings.REDIS_URL,
            }
            subprocess.run([sys.executable, "-c", worker], env=env, check=True, timeout=60)
            await asyncio.wait_for(announced.wait(), timeout=10)

    asyncio.run(scenario())
