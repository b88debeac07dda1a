"""Celery tasks: thin wrappers that take ids and call one service each."""

from __future__ import annotations

from celery import shared_task

from reviewq import pipeline, services, webhooks
from telemetry.logging import request_context


@shared_task(name="reviewq.tasks.run_pipeline")
def run_pipeline(request_id: str) -> None:
    with request_context(request_id):
        pipeline.run_pipeline(request_id)


@shared_task(name="reviewq.tasks.sweep_stuck_requests")
def sweep_stuck_requests() -> int:
    return services.sweep_stuck_requests()


@shared_task(name="reviewq.tasks.deliver_webhook")
def deliver_webhook(delivery_id: int) -> None:
    webhooks.deliver(delivery_id)


@shared_task(name="reviewq.tasks.deliver_due_webhooks")
def deliver_due_webhooks() -> int:
    return webhooks.deliver_due()


@shared_task(name="reviewq.tasks.expire_review_items")
def expire_review_items() -> int:
    return services.expire_review_items()
