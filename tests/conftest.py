"""Shared fixtures: named actors, seeded configuration, and a pipeline that runs inline.

Tests use the deterministic fake model unless marked ``real_model``. Tests marked ``services``
need PostgreSQL and Redis: they are skipped on a laptop without them, and fail in CI.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth.models import Group, User
from django.db import connection
from django.utils.module_loading import import_string

from reviewq.config.demo import seed_policies, seed_retail_tools
from reviewq.models import AgentKey
from reviewq.permissions import REVIEWERS_GROUP_NAME
from reviewq.runtime import dispatch
from reviewq.services.agent_keys import agent_key_create
from router.backends.fake import FakeBackend
from router.backends.registry import reset_backends
from router.defaults import ensure_default_models

IN_CI = os.getenv("CI", "").lower() in ("1", "true")


def require_services() -> None:
    """Skip without PostgreSQL and Redis, except in CI, where their absence is a failure."""
    missing = []
    if settings.DATABASES["default"]["ENGINE"] != "django.db.backends.postgresql":
        missing.append("PostgreSQL (DATABASE_URL)")
    if not settings.REDIS_URL:
        missing.append("Redis (REDIS_URL)")
    if missing:
        message = "needs " + " and ".join(missing)
        if IN_CI:
            pytest.fail(f"{message}: CI must provide these services")
        pytest.skip(message)


@pytest.fixture(autouse=True)
def _fake_models(settings: Any) -> Iterator[None]:
    settings.REVIEWQ_MODEL_BACKEND = "fake"
    reset_backends()
    FakeBackend.scripted_outputs.clear()
    yield
    reset_backends()
    FakeBackend.scripted_outputs.clear()


@pytest.fixture(autouse=True)
def _audit_log_flushable(request: pytest.FixtureRequest) -> Iterator[None]:
    """Transactional tests empty every table afterwards; the audit log's triggers refuse that.

    Switch them off (the maintenance row) just for that flush, and back on before each test.
    """
    if "transactional_db" not in request.fixturenames and not _marked_transactional(request):
        yield
        return
    request.getfixturevalue("transactional_db")
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM reviewq_audit_maintenance")
    yield
    with connection.cursor() as cursor:
        cursor.execute("INSERT INTO reviewq_audit_maintenance (enabled) VALUES (1)")


@contextmanager
def final_states_unlocked() -> Iterator[None]:
    """Lets a test rewrite a final request's trail in SQL to build a fixture (the database
    refuses that otherwise: reviewq/migrations/0004), through the same maintenance row."""
    with connection.cursor() as cursor:
        cursor.execute("INSERT INTO reviewq_audit_maintenance (enabled) VALUES (1)")
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute("DELETE FROM reviewq_audit_maintenance")


def _marked_transactional(request: pytest.FixtureRequest) -> bool:
    marker = request.node.get_closest_marker("django_db")
    return bool(marker and (marker.kwargs.get("transaction") or (marker.args and marker.args[0])))


def run_tasks_inline(monkeypatch: pytest.MonkeyPatch, *task_names: str) -> None:
    """Run the named tasks in the test's thread when their enqueuing transaction commits; hand
    any other task over as usual."""
    handed_over = dispatch.publish

    def publish(task_name: str, *args: Any) -> None:
        if task_name in task_names:
            import_string(task_name)(*args)
        else:
            handed_over(task_name, *args)

    monkeypatch.setattr(dispatch, "publish", publish)


@pytest.fixture
def inline_pipeline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Run the pipeline in the test's thread when the enqueuing transaction commits."""
    run_tasks_inline(monkeypatch, "reviewq.tasks.run_pipeline")


@pytest.fixture
def seeded(db: Any) -> None:
    ensure_default_models()
    seed_retail_tools()
    seed_policies()


@pytest.fixture
def one_small_rung(seeded: None) -> None:
    """Only the small model that serves every shape (no limit on prompt length or tools, plans of
    several calls) proposes tool calls: for tests of the SLM-to-LLM ladder, whose scripted answers
    would otherwise be spread over two small-model rungs (tests/test_rungs.py covers several)."""
    from router.contracts import TaskType, Tier
    from router.models import ModelSpec

    proposers = [
        s for s in ModelSpec.objects.filter(tier=Tier.SLM, enabled=True) if TaskType.TOOL_USE in s.strengths
    ]
    [general] = [
        s for s in proposers if s.max_prompt_tokens is None and s.max_tools is None and s.plans_parallel_calls
    ]
    ModelSpec.objects.filter(id__in=[s.id for s in proposers if s.id != general.id]).update(enabled=False)


@pytest.fixture
def reviewer(db: Any) -> User:
    user = User.objects.create_user("alice", password="pw-alice")
    group, _ = Group.objects.get_or_create(name=REVIEWERS_GROUP_NAME)
    user.groups.add(group)
    return user


@pytest.fixture
def second_reviewer(db: Any) -> User:
    user = User.objects.create_user("bob", password="pw-bob")
    group, _ = Group.objects.get_or_create(name=REVIEWERS_GROUP_NAME)
    user.groups.add(group)
    return user


@pytest.fixture
def outsider(db: Any) -> User:
    """Logged in, but not a reviewer: must be refused."""
    return User.objects.create_user("mallory", password="pw-mallory")


@pytest.fixture
def agent(db: Any) -> tuple[AgentKey, str]:
    """An agent key owned by 'carol', who raises requests and may not review them."""
    owner = User.objects.create_user("carol", password="pw-carol")
    group, _ = Group.objects.get_or_create(name=REVIEWERS_GROUP_NAME)
    owner.groups.add(group)
    return agent_key_create(name="support-bot", owner=owner)
