"""Hands pipeline work to whoever runs it: Celery workers, or a thread pool in this process.

Called once the request's row is written (or reset), and deferred with ``on_commit``, which
waits for the surrounding transaction if there is one: a task never runs before its row is
visible, and a rolled-back request is never enqueued. If the process dies between commit and
publish, the sweeper re-enqueues the request.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from django.conf import settings
from django.db import connections, transaction

from telemetry.logging import request_context

logger = logging.getLogger(__name__)
_executor: ThreadPoolExecutor | None = None
_executor_lock = threading.Lock()


def enqueue_pipeline(request_id: Any) -> None:
    """Run the pipeline for ``request_id`` once the current transaction commits."""
    request_id = str(request_id)
    transaction.on_commit(lambda: _publish(request_id))


def _publish(request_id: str) -> None:
    if settings.EMBEDDED_WORKER:
        submit_embedded(_run_pipeline, request_id)
        return
    from reviewq.tasks import run_pipeline

    try:
        run_pipeline.delay(request_id)
    except Exception:
        logger.exception("could not publish request %s; the sweeper will pick it up", request_id)


def _embedded_executor() -> ThreadPoolExecutor:
    global _executor
    with _executor_lock:
        if _executor is None:
            _executor = ThreadPoolExecutor(
                max_workers=settings.EMBEDDED_WORKER_THREADS, thread_name_prefix="reviewq-pipeline"
            )
        return _executor


def submit_embedded(function: Any, *args: Any) -> None:
    """Runs ``function(*args)`` on the embedded worker pool, between connection check-ups."""

    def run() -> None:
        tidy_connections()
        try:
            function(*args)
        except Exception:  # logged; periodic passes retry from the database
            logger.exception("embedded work %s failed", getattr(function, "__name__", function))
        finally:
            tidy_connections()

    _embedded_executor().submit(run)


def _run_pipeline(request_id: str) -> None:
    from reviewq.pipeline import run_pipeline

    with request_context(request_id):
        try:
            run_pipeline(request_id)
        except Exception:  # the sweeper re-enqueues the request once its lease has passed
            logger.exception("pipeline failed for request %s", request_id)


def tidy_connections() -> None:
    """Around each piece of embedded work, as Django does around each web request: connections go
    back to their pool (or are closed), and broken ones are dropped.

    Except a healthy SQLite connection, which the pool's thread keeps: the threads live as long
    as the process, and opening one (a file, its pragmas and functions) was about 1 ms of each
    routine request.
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
