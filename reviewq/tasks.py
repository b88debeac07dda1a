"""Celery tasks: thin wrappers that take ids and call one service each."""

from __future__ import annotations

from celery import shared_task

from reviewq import pipeline, services


@shared_task(name="reviewq.tasks.run_pipeline")
def run_pipeline(request_id: str) -> None:
    pipeline.run_pipeline(request_id)


@shared_task(name="reviewq.tasks.sweep_stuck_requests")
def sweep_stuck_requests() -> int:
    return services.sweep_stuck_requests()


@shared_task(name="reviewq.tasks.expire_review_items")
def expire_review_items() -> int:
    return services.expire_review_items()
