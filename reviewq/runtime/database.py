"""How each kind of process holds its database connections (settings.py holds the figures).

- A web process pools them (``settings.WEB_DB_POOL``): under ASGI each request's sync work runs
  on a thread lent from a pool, and a connection kept per thread would stay open on every one.
- A Celery worker keeps its own between tasks (``settings.WORKER_DB_CONN_MAX_AGE``): its tasks
  run one at a time per process, so its connections are bounded by its concurrency.

Both are applied before the process opens its first connection.
"""

from __future__ import annotations

from django.conf import settings


def pool_web_connections() -> None:
    """Use ``settings.WEB_DB_POOL`` for the default database, when set (PostgreSQL only)."""
    if settings.WEB_DB_POOL is None:
        return
    database = settings.DATABASES["default"]
    database["CONN_MAX_AGE"] = 0  # the pool keeps the connections; Django must not keep its own
    database.setdefault("OPTIONS", {})["pool"] = dict(settings.WEB_DB_POOL)


def keep_worker_connections() -> None:
    """Keep a worker's connections between tasks, for at most WORKER_DB_CONN_MAX_AGE seconds,
    health-checked before reuse (Celery's Django fix-up would close them around each task
    unless CELERY_DB_REUSE_MAX is set)."""
    for database in settings.DATABASES.values():
        if "pool" not in database.get("OPTIONS", {}):
            database["CONN_MAX_AGE"] = settings.WORKER_DB_CONN_MAX_AGE
            database["CONN_HEALTH_CHECKS"] = True
