"""Runs a task later, by name: on a Celery worker, or on a thread pool in this process.

``later("reviewq.tasks.run_pipeline", request_id)`` is deferred with ``on_commit``, which waits
for the surrounding transaction if there is one: a task never runs before the rows it reads are
visible, and work for a rolled-back change is never sent. If the process dies between commit
and publish, the periodic passes (the sweeper, due webhooks) find the work in the database.

Only reviewq/tasks.py names jobs; this module knows none of them, so whatever it runs may use it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from django.conf import settings
from django.db import connections, transaction
from django.utils.module_loading import import_string

from reviewq.celery import app
from reviewq.runtime.redis_connection import redis_failed

logger = logging.getLogger(__name__)
_executor: ThreadPoolExecutor | None = None
_executor_lock = threading.Lock()


def later(task_name: str, *args: Any) -> None:
    """Run the task ``task_name`` (a dotted path in reviewq.tasks) with ``args`` once the current
    transaction commits: Celery's ``send_task`` in the services mode, this process's pool in the
    embedded one. Arguments must be plain JSON values (ids, not rows)."""
    transaction.on_commit(lambda: publish(task_name, *args))


def publish(task_name: str, *args: Any) -> None:
    """Hand the task over now. Never raises: the database is the queue, and the periodic passes
    pick up work whose hand-over failed."""
    if settings.EMBEDDED_WORKER:
        queue = settings.CELERY_TASK_ROUTES.get(task_name, {}).get("queue")
        submit_embedded(import_string(task_name), *args, queue=queue)
        return
    try:
        app.send_task(task_name, args=list(args))
    except Exception:  # noqa: BLE001 - the broker is down: the work waits in the database for the sweeper
        redis_failed("task hand-over")


def _embedded_executor() -> ThreadPoolExecutor:
    global _executor
    with _executor_lock:
        if _executor is None:
            _executor = ThreadPoolExecutor(
                max_workers=settings.EMBEDDED_WORKER_THREADS, thread_name_prefix="reviewq-pipeline"
            )
        return _executor


def submit_embedded(function: Callable[..., Any], *args: Any, queue: str | None = None) -> None:
    """Runs ``function(*args)`` on the embedded worker pool, between connection check-ups; work
    for a ``queue`` of its own (long jobs: training) on that queue's single thread instead."""

    def run() -> None:
        tidy_connections()
        try:
            function(*args)
        except Exception:  # logged; periodic passes retry from the database
            logger.exception("embedded work %s failed", getattr(function, "__name__", function))
        finally:
            tidy_connections()

    (_queue_executor(queue) if queue else _embedded_executor()).submit(run)


_queue_executors: dict[str, ThreadPoolExecutor] = {}


def _queue_executor(queue: str) -> ThreadPoolExecutor:
    with _executor_lock:
        if queue not in _queue_executors:
            _queue_executors[queue] = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"reviewq-{queue}")
        return _queue_executors[queue]


def tidy_connections() -> None:
    """Around each piece of embedded work, as Django does around each web request: connections go
    back to their pool (or are closed), and broken ones are dropped.

    Except a healthy SQLite connection, which the pool's thread keeps: the threads live as long
    as the process, and opening one (a file, its pragmas and functions) costs a noticeable part
    of a routine request.
    """
    for connection in connections.all(initialized_only=True):
        if (
            connection.vendor == "sqlite"
            and connection.connection is not None
            and not connection.in_atomic_block
            and not connection.errors_occurred
        ):
            continue
        connection.close_if_unusable_or_obsolete()


def drain_embedded() -> None:
    """Wait for queued embedded work (tests, shutdown)."""
    global _executor
    with _executor_lock:
        executor, _executor = _executor, None
    if executor is not None:
        executor.shutdown(wait=True)
