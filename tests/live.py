"""A real server and a real browser for end-to-end tests.

``live_server_url`` runs the ASGI app under uvicorn in a subprocess against the test database,
with the deterministic fake model and the embedded worker (so no Celery is needed even in CI).
``browser`` is Debian's Chromium driven by Playwright; it never downloads a browser. Without
Chromium the browser tests are skipped, except in CI, where that is a failure.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.db import connection, connections
from django.test import Client

from tests.conftest import IN_CI

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-quic",
    "--no-first-run",
    "--disable-component-update",
    "--disable-sync",
]


def subprocess_database_url() -> str:
    """The URL of the database the tests run on, for processes the tests start."""
    db = connection.settings_dict
    if db["ENGINE"] == "django.db.backends.sqlite3":
        return f"sqlite:///{db['NAME']}"
    auth = db["USER"] + (f":{db['PASSWORD']}" if db.get("PASSWORD") else "")
    return f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def running_server(env: dict[str, str] | None = None, *, workers: int = 1) -> Iterator[str]:
    """uvicorn serving reviewq on a free port against the test database; yields its URL.

    ``env`` overrides the environment (the default: fake model, embedded worker). With
    ``workers`` above 1 the server is ``python -m reviewq.runtime.serve`` with that many processes.
    """
    port = free_port()
    environment = {
        **os.environ,
        "DATABASE_URL": subprocess_database_url(),
        "REVIEWQ_MODEL_BACKEND": "fake",
        "REVIEWQ_EMBEDDED_WORKER": "true",
        "DEBUG": "false",
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "CSRF_TRUSTED_ORIGINS": f"http://127.0.0.1:{port}",
        **(env or {}),
    }
    log = ARTIFACTS / f"live-server-{port}.log"
    ARTIFACTS.mkdir(exist_ok=True)
    if workers > 1:
        command = [sys.executable, "-m", "reviewq.runtime.serve", "--workers", str(workers)]
    else:
        command = [sys.executable, "-m", "uvicorn", "reviewq.asgi:application", "--lifespan", "on"]
    command += ["--host", "127.0.0.1", "--port", str(port)]
    with log.open("wb") as output:
        server = subprocess.Popen(command, cwd=ROOT, env=environment, stdout=output, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"{url}/healthz", timeout=1).read()
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"the live server did not start:\n{log.read_text()[-3000:]}")
                time.sleep(0.2)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()


@pytest.fixture(scope="module")
def live_server_url(django_db_setup: Any, django_db_blocker: Any) -> Iterator[str]:
    with running_server() as url:
        yield url


def chromium_path() -> str:
    path = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(path).exists():
        message = "Chromium is not installed (apt-get install -y chromium)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture
def browser() -> Iterator[Any]:
    executable = chromium_path()
    from playwright.sync_api import sync_playwright

    # Playwright's sync API keeps an event loop in this thread; the ORM calls the test makes
    # between browser steps are still plain synchronous calls.
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with sync_playwright() as playwright:
            instance = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
            try:
                yield instance
            finally:
                # With that loop running, Django keeps this thread's connections per context,
                # not per thread, so its own cleanup never sees the ones opened meanwhile: close
                # them here, or they outlive the test database.
                connections.close_all()
                instance.close()
    finally:
        os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)


def logged_in_page(browser: Any, live_url: str, user: Any) -> Any:
    """A new page whose session is ``user``'s (the session row lives in the shared database)."""
    client = Client()
    client.force_login(user)
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.add_cookies(
        [
            {
                "name": settings.SESSION_COOKIE_NAME,
                "value": client.cookies[settings.SESSION_COOKIE_NAME].value,
                "url": live_url,
            }
        ]
    )
    return context.new_page()
