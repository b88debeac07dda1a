"""Workers keep their database connection from one task to the next."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from celery.fixups.django import DjangoWorkerFixup
from django.db import connection

from reviewq.celery import app, keep_database_connections, tidy_database_connections
from reviewq.runtime import dispatch


def run_tasks(count: int) -> list[Any]:
    """What happens to the database connection around ``count`` tasks in a worker: Celery's
    Django fix-up and our hook, in their order. Returns the distinct connections they used."""
    fixup = DjangoWorkerFixup(app)
    task = SimpleNamespace(request=SimpleNamespace(is_eager=False))
    used: list[Any] = []  # the objects, not their ids: a closed one's id can be reused
    for _ in range(count):
        fixup.on_task_prerun(sender=task)
        tidy_database_connections()
        connection.ensure_connection()
        if not any(connection.connection is seen for seen in used):
            used.append(connection.connection)
        fixup.on_task_postrun(sender=task)
    return used


@pytest.mark.django_db(transaction=True)
def test_a_worker_reuses_its_database_connection_between_tasks(settings: Any) -> None:
    database = settings.DATABASES["default"]
    saved = {name: database.get(name) for name in ("CONN_MAX_AGE", "CONN_HEALTH_CHECKS")}
    try:
        keep_database_connections()  # Celery's worker_init
        connection.close()
        assert len(run_tasks(5)) == 1

        # A connection that broke between tasks (a database restart) is replaced, not reused.
        connection.errors_occurred = True
        connection.is_usable = lambda: False  # type: ignore[method-assign]
        try:
            broken = connection.connection
            assert not any(broken is used for used in run_tasks(1))
        finally:
            del connection.is_usable
    finally:
        database.update(saved)
        connection.close()


@pytest.mark.django_db(transaction=True)
def test_without_reuse_celery_would_reconnect_for_every_task() -> None:
    saved = app.conf.get("CELERY_DB_REUSE_MAX")
    app.conf["CELERY_DB_REUSE_MAX"] = None
    try:
        connection.close()
        assert len(run_tasks(3)) == 3
    finally:
        app.conf["CELERY_DB_REUSE_MAX"] = saved


@pytest.mark.django_db(transaction=True)
def test_the_embedded_pool_keeps_a_sqlite_connection_and_returns_others(settings: Any) -> None:
    settings.EMBEDDED_WORKER_THREADS = 1
    used: list[Any] = []

    def task() -> None:
        connection.ensure_connection()
        used.append(connection.connection)

    for _ in range(3):
        dispatch.submit_embedded(task)
    dispatch.drain_embedded()
    distinct = [c for i, c in enumerate(used) if not any(c is seen for seen in used[:i])]
    # SQLite: a file per thread, kept. PostgreSQL: back to the pool (or closed) after each task.
    assert len(distinct) == (1 if connection.vendor == "sqlite" else 3)
