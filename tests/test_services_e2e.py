"""The services mode for real: PostgreSQL, Redis, and a separate Celery worker process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.test import Client

from reviewq.celery import app as celery_app
from tests.conftest import require_services
from tests.factories import read_body, risky_body
from tests.live import subprocess_database_url

pytestmark = [
    pytest.mark.services,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("seeded"),
]
ROOT = Path(__file__).resolve().parent.parent


WORKER_COMMAND = [
    sys.executable, "-m", "celery", "-A", "reviewq", "worker", "--pool=solo", "--concurrency=1",
    "--without-gossip", "--without-mingle", "--loglevel=INFO",
]  # fmt: skip


def start_worker(**env: str) -> subprocess.Popen[bytes]:
    """A Celery worker process on the test database, with the fake model."""
    environment = {
        **os.environ,
        "DATABASE_URL": subprocess_database_url(),
        "REDIS_URL": settings.REDIS_URL,
        "REVIEWQ_MODEL_BACKEND": "fake",
        **env,
    }
    return subprocess.Popen(
        WORKER_COMMAND, cwd=ROOT, env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )


def stop(worker: subprocess.Popen[bytes]) -> None:
    worker.terminate()
    try:
        worker.wait(timeout=20)
    except subprocess.TimeoutExpired:
        worker.kill()


@pytest.fixture
def celery_worker_process() -> Iterator[subprocess.Popen[bytes]]:
    require_services()
    celery_app.control.purge()  # tasks a previous run left behind would only be no-ops, but slow
    worker = start_worker()
    yield worker
    stop(worker)


def _post(client: Client, key: str, payload: dict[str, Any]) -> Any:
    return client.post(
        "/api/v1/requests",
        json.dumps(payload),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {key}",
    )


def test_a_celery_worker_process_releases_a_request(
    client: Client, agent: Any, celery_worker_process: subprocess.Popen[bytes]
) -> None:
    assert not settings.EMBEDDED_WORKER
    _, key = agent
    response = _post(client, key, read_body(wait_ms=30_000))
    if response.status_code != 201:
        celery_worker_process.terminate()
        output = celery_worker_process.communicate(timeout=20)[0].decode(errors="replace")
        pytest.fail(f"worker did not finish the request: {response.json()}\n{output[-3000:]}")
    assert response.json()["status"] == "released"

    held = _post(client, key, risky_body(wait_ms=0)).json()
    deadline = time.monotonic() + 30
    status = held["status"]
    while status != "awaiting_review" and time.monotonic() < deadline:
        time.sleep(0.1)
        status = client.get(f"/api/v1/requests/{held['id']}", HTTP_AUTHORIZATION=f"Bearer {key}").json()[
            "status"
        ]
    assert status == "awaiting_review"


def _wait_for(condition: Any, timeout: float = 30) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return False


def test_a_request_survives_a_worker_killed_mid_proposal(client: Client, agent: Any) -> None:
    """G2: kill -9 the worker while the model is thinking; the sweeper and a new worker finish it."""
    require_services()
    celery_app.control.purge()
    from reviewq.models import Request
    from reviewq.services import sweep_stuck_requests

    slow = start_worker(FAKE_MODEL_DELAY_MS="20000", PIPELINE_LEASE_SECONDS="2")
    try:
        _, key = agent
        request_id = _post(client, key, read_body()).json()["id"]
        assert _wait_for(lambda: Request.objects.get(id=request_id).status == "proposing"), "never claimed"
        slow.kill()  # kill -9: no acknowledgement, no cleanup, the row stays in "proposing"
        slow.wait(timeout=10)
    finally:
        stop(slow)
    celery_app.control.purge()  # Celery's own redelivery waits out the visibility timeout; the sweeper won't
    assert _wait_for(lambda: sweep_stuck_requests() == 1, timeout=15), "the sweeper did not take it back"
    fresh = start_worker()
    try:
        assert _wait_for(lambda: Request.objects.get(id=request_id).status == "released"), "not finished"
    finally:
        stop(fresh)
    request = Request.objects.get(id=request_id)
    assert request.pipeline_runs == 2
    assert request.action is not None and request.action["tool_calls"][0]["name"] == "get_order_details"
