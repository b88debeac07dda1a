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
from django.db import connection
from django.test import Client

from reviewq.celery import app as celery_app
from tests.conftest import require_services
from tests.factories import read_body, risky_body

pytestmark = [
    pytest.mark.services,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("seeded"),
]
ROOT = Path(__file__).resolve().parent.parent


def _test_database_url() -> str:
    db = connection.settings_dict
    auth = db["USER"] + (f":{db['PASSWORD']}" if db.get("PASSWORD") else "")
    return f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


@pytest.fixture
def celery_worker_process() -> Iterator[subprocess.Popen[bytes]]:
    require_services()
    celery_app.control.purge()  # tasks a previous run left behind would only be no-ops, but slow
    env = {
        **os.environ,
        "DATABASE_URL": _test_database_url(),
        "REDIS_URL": settings.REDIS_URL,
        "REVIEWQ_MODEL_BACKEND": "fake",
    }
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "reviewq",
            "worker",
            "--pool=solo",
            "--concurrency=1",
            "--without-gossip",
            "--without-mingle",
            "--loglevel=INFO",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    yield worker
    worker.terminate()
    try:
        worker.wait(timeout=20)
    except subprocess.TimeoutExpired:
        worker.kill()


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
