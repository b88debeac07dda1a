"""The services mode for real: PostgreSQL, Redis, and a separate Celery worker process."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import redis
from django.conf import settings
from django.test import Client

from reviewq.celery import app as celery_app
from tests.conftest import require_services
from tests.factories import read_body, risky_body
from tests.live import free_port, running_server, subprocess_database_url

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
    from reviewq.services.recovery import sweep_stuck_requests

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


@contextmanager
def private_redis(port: int) -> Iterator[subprocess.Popen[bytes]]:
    """A Redis server of this test's own (the shared one is left alone), keeping nothing on disk."""
    command = [shutil.which("redis-server") or "redis-server", "--port", str(port), "--bind", "127.0.0.1"]
    command += ["--save", "", "--appendonly", "no"]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        client = redis.Redis(port=port)
        assert _wait_for(lambda: _answers(client), timeout=10), "redis-server did not start"
        yield server
    finally:
        server.kill()
        server.wait(timeout=10)


def _answers(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False


SWEEP = (
    "import django; django.setup(); "
    "from reviewq.services.recovery import sweep_stuck_requests as s; print(s())"
)


def test_queued_requests_survive_a_redis_restart(agent: Any) -> None:
    """G2: requests queued as Celery tasks, then ``SHUTDOWN NOSAVE``: the tasks are gone, the
    rows are not. Once their claim window passes the sweeper enqueues them again and all of them finish."""
    require_services()
    from reviewq.models import Request

    if not shutil.which("redis-server"):
        pytest.fail("redis-server is needed to restart a Redis of this test's own")
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    services_env = {
        "REDIS_URL": url,
        "REVIEWQ_EMBEDDED_WORKER": "false",
        "PIPELINE_LEASE_SECONDS": "2",
        "PIPELINE_CLAIM_SECONDS": "2",
    }
    _, key = agent
    with private_redis(port) as first_redis, running_server(services_env) as server_url:
        ids = [_post_over_http(server_url, key, read_body())["id"] for _ in range(5)]
        assert redis.Redis(port=port).llen("celery") == 5  # queued, and no worker has run yet
        redis.Redis(port=port).shutdown(nosave=True)
        first_redis.wait(timeout=10)
    with private_redis(port):
        assert redis.Redis(port=port).llen("celery") == 0  # the queue is gone with the restart
        assert set(Request.objects.filter(id__in=ids).values_list("status", flat=True)) == {"received"}
        time.sleep(2.5)  # the time the web server gave them to be claimed passes
        sweep_env = {**os.environ, "DATABASE_URL": subprocess_database_url(), **services_env}
        sweep = [sys.executable, "-c", SWEEP]
        swept = subprocess.run(sweep, cwd=ROOT, env=sweep_env, capture_output=True, check=True, timeout=60)
        assert swept.stdout.decode().strip().splitlines()[-1] == "5"
        worker = start_worker(REDIS_URL=url)
        try:
            finished = _wait_for(
                lambda: Request.objects.filter(id__in=ids, status="released").count() == 5, timeout=60
            )
        finally:
            stop(worker)
    assert finished, list(Request.objects.filter(id__in=ids).values_list("status", flat=True))
    assert set(Request.objects.filter(id__in=ids).values_list("pipeline_runs", flat=True)) == {1}


def _post_over_http(url: str, key: str, payload: dict[str, Any]) -> Any:
    request = urllib.request.Request(
        f"{url}/api/v1/requests",
        data=json.dumps(payload).encode(),
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def test_a_redelivered_task_releases_once_even_when_a_worker_dies_after_the_release(
    agent: Any, receiver: Any
) -> None:
    """G1: the broker delivers the same task to two workers at once (as a visibility timeout does),
    and the worker that released is killed -9 before its bookkeeping; a third delivery follows.
    One release, one model proposal, one callback delivery id."""
    require_services()
    celery_app.control.purge()
    from reviewq.models import Request, WebhookDelivery
    from reviewq.services import intake
    from reviewq.tasks import run_pipeline
    from telemetry.models import ModelCall

    slow_workers = [start_worker(FAKE_MODEL_DELAY_MS="3000") for _ in range(2)]
    try:
        with mock.patch("reviewq.services.intake.enqueue_pipeline"):  # this test publishes the task itself
            request, _ = intake.request_create(
                agent_key=agent[0], payload=read_body(callback_url=receiver.url)
            )
        for _ in range(2):  # one task, delivered twice
            run_pipeline.delay(str(request.id))
        assert _wait_for(lambda: Request.objects.get(id=request.id).status == "released", timeout=60)
        for worker in slow_workers:
            worker.kill()  # kill -9: whichever released has no chance to acknowledge cleanly
            worker.wait(timeout=10)
    finally:
        for worker in slow_workers:
            stop(worker)
    fresh = start_worker()
    try:
        run_pipeline.delay(str(request.id))  # the broker's redelivery of the unacknowledged task
        assert _wait_for(_queue_empty, timeout=30), "the fresh worker never took the redelivered task"
        time.sleep(1.5)  # and finishes it (a no-op: the request is final)
    finally:
        stop(fresh)
    request = Request.objects.get(id=request.id)
    assert request.status == "released" and request.pipeline_runs == 1
    assert ModelCall.objects.filter(request=request, purpose="propose").count() == 1
    deliveries = WebhookDelivery.objects.filter(request=request, kind="callback")
    assert deliveries.count() == 1


def _queue_empty() -> bool:
    return redis.Redis.from_url(settings.REDIS_URL).llen("celery") == 0
