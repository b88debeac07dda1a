"""The Celery app. In the embedded mode nothing talks to a broker: see reviewq/dispatch.py."""

from __future__ import annotations

import os
from typing import Any

from celery import Celery
from celery.signals import worker_init

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "reviewq.settings")

app = Celery("reviewq")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@worker_init.connect
def keep_database_connections(**kwargs: Any) -> None:
    """A worker process reuses its database connection from task to task.

    Opening a PostgreSQL connection cost about 4 ms of each routine request. A worker is a
    long-lived process, and its tasks run one at a time per process or thread, so unlike the
    ASGI web server (a thread per request) its persistent connections are bounded by its
    concurrency. Celery closes a connection between tasks when it is older than
    WORKER_DB_CONN_MAX_AGE or failed its health check.
    """
    from django.conf import settings

    for database in settings.DATABASES.values():
        if "pool" not in database.get("OPTIONS", {}):
            database["CONN_MAX_AGE"] = settings.WORKER_DB_CONN_MAX_AGE
            database["CONN_HEALTH_CHECKS"] = True
