"""Bench-only settings: reviewq.settings with variants (mostly PostgreSQL), to price a proposed change.

Used as DJANGO_SETTINGS_MODULE=bench.pg_variants by bench/gateway_overhead.py ``--pg-variants``;
the product's settings are untouched. BENCH_PG_VARIANT holds ``+``-joined names:

- ``pool``: in the web process (ASGI), Django 5.1+'s psycopg 3 connection pool
  (``OPTIONS["pool"]``; needs psycopg-pool) instead of a new connection per request (the
  product's DB_CONN_MAX_AGE=0). Under ASGI every request runs its ORM calls in a new thread, so a
  persistent connection (CONN_MAX_AGE>0) is one per request that is never reused: it leaks. In
  the Celery worker (BENCH_PG_ROLE=worker, set by bench/harness.py) ``pool`` means a persistent
  connection (CONN_MAX_AGE=300) plus CELERY_DB_REUSE_MAX, without which Celery's Django fixup
  closes every connection before and after each task — and, in a prefork child, the whole pool,
  which makes a pool slower than no pool there;
- ``async_commit``: ``synchronous_commit=off`` for the session: a commit no longer waits for the
  WAL flush (about 4 ms per commit on this machine's disk). An experiment that prices the
  pipeline's many small commits, not a proposal to run this way globally;
- ``async_chain``: WhiteNoiseMiddleware left out of MIDDLEWARE. It is the one synchronous-only
  middleware, so Django runs the whole chain in a thread (sync_to_async) and calls the async
  views back on the event loop (async_to_sync) for every request. Static files are then not
  served (the API benches do not need them); the product would serve them outside the chain.
"""

from __future__ import annotations

import os

from reviewq.settings import *  # noqa: F403
from reviewq.settings import DATABASES, MIDDLEWARE

_variants = set(os.getenv("BENCH_PG_VARIANT", "").replace(",", "+").split("+")) - {""}
_worker = os.getenv("BENCH_PG_ROLE") == "worker"
_options = dict(DATABASES["default"].get("OPTIONS") or {})
if "pool" in _variants and _worker:
    DATABASES["default"]["CONN_MAX_AGE"] = 300
    CELERY_DB_REUSE_MAX = 100_000
elif "pool" in _variants:
    DATABASES["default"]["CONN_MAX_AGE"] = 0  # required with a pool
    _options["pool"] = {"min_size": 2, "max_size": 16, "timeout": 10}
if "async_commit" in _variants:
    _options["options"] = "-c synchronous_commit=off"
DATABASES["default"]["OPTIONS"] = _options
if "async_chain" in _variants:
    MIDDLEWARE = [m for m in MIDDLEWARE if m != "whitenoise.middleware.WhiteNoiseMiddleware"]
