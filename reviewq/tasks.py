"""Celery tasks: thin wrappers that take ids and call one service each.

The only module that names jobs: the rest of the code hands them over by name with
``reviewq.runtime.dispatch.later("reviewq.tasks.<name>", ...)``.
"""

from __future__ import annotations

from celery import shared_task
from django.conf import settings

from reviewq.notify import alerts, webhooks
from reviewq.pipeline.run import run_pipeline as run_request_pipeline
from reviewq.runtime.dispatch import later
from reviewq.runtime.request_logging import request_context
from reviewq.services import learning, observe, recovery


@shared_task(name="reviewq.tasks.run_pipeline")
def run_pipeline(request_id: str) -> None:
    with request_context(request_id):
        run_request_pipeline(request_id)


@shared_task(name="reviewq.tasks.sweep_stuck_requests")
def sweep_stuck_requests() -> int:
    return recovery.sweep_stuck_requests()


@shared_task(name="reviewq.tasks.deliver_webhook")
def deliver_webhook(delivery_id: int) -> None:
    webhooks.deliver(delivery_id)


@shared_task(name="reviewq.tasks.deliver_due_webhooks")
def deliver_due_webhooks() -> int:
    return webhooks.deliver_due()


@shared_task(name="reviewq.tasks.expire_review_items")
def expire_review_items() -> int:
    return recovery.expire_review_items()


@shared_task(name="reviewq.tasks.page_sla_breaches")
def page_sla_breaches() -> int:
    return alerts.page_sla_breaches()


@shared_task(name="reviewq.tasks.compare_upstream_call")
def compare_upstream_call(call_id: int) -> str:
    return observe.compare_upstream_call(call_id)


# Hours, not the pipeline's seconds: training runs on its own queue (settings.CELERY_TASK_ROUTES).
@shared_task(name="reviewq.tasks.train_adapter", soft_time_limit=6 * 3600, time_limit=6 * 3600 + 60)
def train_adapter(base: str, cluster: str, actor: str) -> str:
    return learning.train_and_replay(base=base, cluster=cluster, actor=actor)


@shared_task(name="reviewq.tasks.learning_cycle")
def learning_cycle() -> str:
    """The scheduled turn of the learning loop: hands the work to the training queue when on."""
    if not settings.LEARNING_CYCLE_ENABLED:
        return "off (LEARNING_CYCLE_ENABLED)"
    later("reviewq.tasks.run_learning_cycle")
    return "queued"


@shared_task(name="reviewq.tasks.run_learning_cycle", soft_time_limit=6 * 3600, time_limit=6 * 3600 + 60)
def run_learning_cycle() -> list[dict[str, object]]:
    return [vars(step) for step in learning.learning_cycle()]


@shared_task(name="reviewq.tasks.shadow_propose")
def shadow_propose(request_id: str, adapter_id: int) -> None:
    learning.shadow_propose(request_id, adapter_id)
