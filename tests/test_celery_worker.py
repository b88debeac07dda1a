"""The Celery worker's process set-up."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import close_old_connections, connection

from reviewq.celery import keep_database_connections


@pytest.mark.django_db(transaction=True)
def test_a_worker_reuses_its_database_connection_between_tasks(settings: Any) -> None:
    database = settings.DATABASES["default"]
    saved = {name: database.get(name) for name in ("CONN_MAX_AGE", "CONN_HEALTH_CHECKS")}
    try:
        connection.ensure_connection()
        opened = connection.connection
        close_old_connections()  # what Celery's Django fix-up does after each task
        connection.ensure_connection()
        assert connection.connection is not opened  # the web server's setting: one per request

        keep_database_connections()  # celery's worker_init
        close_old_connections()
        connection.ensure_connection()
        opened = connection.connection
        close_old_connections()
        connection.ensure_connection()
        assert connection.connection is opened
    finally:
        database.update(saved)
        connection.close()
