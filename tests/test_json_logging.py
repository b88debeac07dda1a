"""Structured logs: JSON lines that carry the id of the request being worked on."""

from __future__ import annotations

import asyncio
import inspect
import io
import json
import logging
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.http import HttpRequest, HttpResponse, HttpResponseBase
from django.test import Client, RequestFactory

from reviewq import tasks
from reviewq.runtime import dispatch
from reviewq.runtime.middleware import RequestIdMiddleware
from reviewq.runtime.request_logging import (
    JsonFormatter,
    RequestIdFilter,
    current_request_id,
    request_context,
)


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    """The root logger's records, formatted as the LOG_FORMAT=json configuration does."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RequestIdFilter())
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    yield stream
    root.removeHandler(handler)
    root.setLevel(level)


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_a_line_inside_request_context_carries_the_request_id(json_log: io.StringIO) -> None:
    logger = logging.getLogger("reviewq.test")
    with request_context("req-123"):
        logger.info("held for review: %s", "payment", extra={"tool": "cancel_pending_order", "amount": 12})
    logger.warning("outside")
    inside, outside = lines(json_log)
    assert inside["request_id"] == "req-123"
    assert inside["message"] == "held for review: payment"
    assert (inside["level"], inside["logger"]) == ("INFO", "reviewq.test")
    assert (inside["tool"], inside["amount"]) == ("cancel_pending_order", 12)
    assert inside["ts"].endswith("+00:00")
    assert outside["request_id"] is None


def test_contexts_nest_and_restore() -> None:
    with request_context(uuid.UUID(int=1)):
        assert current_request_id() == str(uuid.UUID(int=1))
        with request_context("inner"):
            assert current_request_id() == "inner"
        assert current_request_id() == str(uuid.UUID(int=1))
    assert current_request_id() is None


def test_exceptions_and_odd_extras_are_serialised(json_log: io.StringIO) -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("reviewq.test").exception("failed", extra={"request_uuid": uuid.UUID(int=2)})
    [entry] = lines(json_log)
    assert "ValueError: boom" in entry["exc"]
    assert entry["request_uuid"] == str(uuid.UUID(int=2))


def test_pipeline_workers_log_under_the_request_id(
    json_log: io.StringIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The embedded pool thread and the Celery worker both start with no id bound.
    seen: list[str | None] = []

    def spy(request_id: str) -> None:
        seen.append(current_request_id())
        logging.getLogger("reviewq.pipeline").info("pipeline ran")

    monkeypatch.setattr(tasks, "run_request_pipeline", spy)
    dispatch.submit_embedded(tasks.run_pipeline, "embedded-1")
    dispatch.drain_embedded()
    tasks.run_pipeline.run("celery-1")
    assert seen == ["embedded-1", "celery-1"]
    assert [entry["request_id"] for entry in lines(json_log)] == ["embedded-1", "celery-1"]
    assert current_request_id() is None


def test_the_middleware_binds_and_echoes_x_request_id(json_log: io.StringIO) -> None:
    def view(request: HttpRequest) -> HttpResponse:
        logging.getLogger("reviewq.api").info("answered")
        return HttpResponse("ok")

    response = RequestIdMiddleware(view)(RequestFactory().get("/", HTTP_X_REQUEST_ID="trace-abc.1"))
    assert isinstance(response, HttpResponse)
    assert response["X-Request-ID"] == "trace-abc.1"
    assert lines(json_log)[-1]["request_id"] == "trace-abc.1"


def test_the_middleware_makes_up_an_id_and_refuses_odd_ones(client: Client, db: Any) -> None:
    generated = client.get("/healthz")["X-Request-ID"]
    assert len(generated) == 32
    forged = client.get("/healthz", HTTP_X_REQUEST_ID='x"}\n{"level":"CRITICAL')["X-Request-ID"]
    assert forged != 'x"}\n{"level":"CRITICAL' and len(forged) == 32


def test_the_middleware_works_under_asgi(json_log: io.StringIO) -> None:
    async def view(request: HttpRequest) -> HttpResponse:
        logging.getLogger("reviewq.api").info("answered")
        return HttpResponse("ok")

    pending = RequestIdMiddleware(view)(RequestFactory().get("/", HTTP_X_REQUEST_ID="async-7"))
    assert inspect.isawaitable(pending)  # an async view makes the middleware async

    async def run() -> HttpResponseBase:
        return await pending

    response = asyncio.run(run())
    assert response["X-Request-ID"] == "async-7"
    assert lines(json_log)[-1]["request_id"] == "async-7"


def test_log_format_json_switches_the_settings() -> None:
    script = (
        "import django, logging; django.setup()\n"
        "from reviewq.runtime.request_logging import request_context\n"
        "with request_context('from-settings'): logging.getLogger('reviewq').warning('hello')"
    )
    env = {**os.environ, "LOG_FORMAT": "json", "DJANGO_SETTINGS_MODULE": "reviewq.settings"}
    root = Path(__file__).resolve().parent.parent
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=root, env=env, capture_output=True, text=True, check=True
    )
    entry = json.loads(done.stderr.strip().splitlines()[-1])
    assert (entry["message"], entry["request_id"], entry["level"]) == ("hello", "from-settings", "WARNING")
