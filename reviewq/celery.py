"""The Celery app. In the embedded mode nothing talks to a broker: see reviewq/runtime/dispatch.py."""

from __future__ import annotations

import os
from typing import Any

from celery import Celery
from celery.signals import task_prerun, worker_init
from django.db import close_old_connections

from reviewq.runtime.database import keep_worker_connections

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "reviewq.settings")

app = Celery("reviewq")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@worker_init.connect
def keep_database_connections(**kwargs: Any) -> None:
    """A worker process reuses its database connection from task to task (see
    reviewq.runtime.database): opening a PostgreSQL connection per task cost a routine request
    more than the rest of its database work."""
    keep_worker_connections()


@task_prerun.connect
def tidy_database_connections(**kwargs: Any) -> None:
    """Before each task, as Django does before each web request: drop a stale or broken connection."""
    close_old_connections()
