"""The embedded mode's stand-in for Celery beat: a daemon thread in the web process.

It runs the same jobs beat runs in the services mode (the sweeper and expiry), and loads
the local models once at start so the first request does not pay for it.
"""

from __future__ import annotations

import logging
import threading
import time

from django.db import close_old_connections

from reviewq.notify import alerts, webhooks
from reviewq.services import recovery
from router.backends.registry import get_backend
from router.contracts import TaskType, Tier
from router.models import ModelSpec

logger = logging.getLogger(__name__)
_started = threading.Event()
SWEEP_EVERY_SECONDS = 15.0
TICK_SECONDS = 1.0


def start_scheduler() -> None:
    if _started.is_set():
        return
    _started.set()
    threading.Thread(target=_loop, name="reviewq-scheduler", daemon=True).start()


def _warm_models() -> None:
    for spec in ModelSpec.objects.filter(enabled=True, tier=Tier.SLM):
        if TaskType.TOOL_USE not in (spec.strengths or []):
            continue
        started = time.perf_counter()
        get_backend(spec)
        logger.info("loaded %s in %.1f s", spec.name, time.perf_counter() - started)


def _loop() -> None:
    try:
        _warm_models()
    except Exception:
        logger.exception("could not preload the local models")
    last_sweep = last_sla_check = 0.0
    while True:
        try:
            now = time.monotonic()
            if now - last_sweep >= SWEEP_EVERY_SECONDS:
                # The first pass also recovers requests a previous run left half done.
                recovery.sweep_stuck_requests()
                last_sweep = now
            recovery.expire_review_items()
            if now - last_sla_check >= SWEEP_EVERY_SECONDS:
                alerts.page_sla_breaches()
                last_sla_check = now
            webhooks.deliver_due()
        except Exception:
            logger.exception("scheduled maintenance failed")
        finally:
            close_old_connections()
        time.sleep(TICK_SECONDS)
