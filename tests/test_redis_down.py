"""Redis is a hint: with it down the gateway keeps accepting requests, and says so."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone
from kombu.exceptions import OperationalError

from reviewq.models import Request, RequestStatus
from reviewq.runtime import dispatch
from reviewq.runtime.redis_connection import listening_redis, redis_errors, shared_redis
from reviewq.services import intake
from telemetry.metrics import exposition
from tests.factories import read_body

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("seeded")]


@pytest.fixture
def redis_down(settings: Any) -> Iterator[None]:
    """REDIS_URL names a port nobody listens on."""
    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    shared_redis.cache_clear()
    listening_redis.cache_clear()
    yield
    shared_redis.cache_clear()
    listening_redis.cache_clear()


def test_requests_are_accepted_while_redis_is_down(
    client: Client, agent: Any, redis_down: None, inline_pipeline: None
) -> None:
    before = redis_errors().get("throttle", 0)
    response = client.post(
        "/api/v1/requests",
        json.dumps(read_body(wait_ms=2000)),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {agent[1]}",
    )
    assert response.status_code == 201, response.content  # the throttle let it through
    assert response.json()["status"] == "released"
    assert redis_errors()["throttle"] > before
    assert 'reviewq_redis_errors_total{operation="throttle"}' in exposition().decode()


def test_a_lost_hand_over_waits_in_the_database_for_the_sweeper(
    agent: Any, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings.EMBEDDED_WORKER = False

    def broker_down(*args: Any, **kwargs: Any) -> None:
        raise OperationalError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    monkeypatch.setattr(dispatch.app, "send_task", broker_down)
    before = redis_errors().get("task hand-over", 0)
    request, _ = intake.request_create(agent_key=agent[0], payload=read_body())  # no exception
    stored = Request.objects.get(id=request.id)
    assert stored.status == RequestStatus.RECEIVED
    assert redis_errors()["task hand-over"] == before + 1
    # Unclaimed past the claim window, the sweeper hands it over again (not after a full lease).
    assert stored.lease_expires_at is not None
    assert stored.lease_expires_at <= timezone.now() + timedelta(seconds=settings.PIPELINE_CLAIM_SECONDS)
