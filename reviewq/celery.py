"""The Celery app. In the embedded mode nothing talks to a broker: see reviewq/dispatch.py."""

from __future__ import annotations

import os
from typing import Any

from celery import Celery
from celery.signals import task_prerun, worker_init

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "reviewq.settings")

app = Celery("reviewq")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@worker_init.connect
def keep_database_connections(**kwargs: Any) -> None:
    """A worker process reuses its database connection from task to task.

    Opening a PostgreSQL connection cost about 4 ms of each routine request. A worker is a
    long-lived process whose tasks run one at a time per process or thread, so its persistent
    connections are bounded by its concurrency (the web server pools its connections instead).
    Celery's Django fix-up closes every connection around each task unless CELERY_DB_REUSE_MAX
    is set (settings.py); ``tidy_database_connections`` then closes one that is older than
    WORKER_DB_CONN_MAX_AGE or fails its health check.
    """
    from django.conf import settings

    for database in settings.DATABASES.values():
        if "pool" not in database.get("OPTIONS", {}):
            database["CONN_MAX_AGE"] = settings.WORKER_DB_CONN_MAX_AGE
            database["CONN_HEALTH_CHECKS"] = True


@task_prerun.connect
def tidy_database_connections(**kwargs: Any) -> None:
    """Before each task, as Django does before each web request: drop a stale or broken connection."""
    from django.db import close_old_connections

    close_old_connections()
