from __future__ import annotations

import os
import subprocess
import sys
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command

from reviewq.models import AgentKey, RiskPolicy, ToolSpec
from reviewq.services.agent_keys import agent_key_authenticate
from router.models import ModelSpec

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.django_db
def test_seed_demo_is_idempotent(monkeypatch: pytest.MonkeyPatch, settings: Any) -> None:
    monkeypatch.setenv("REVIEWQ_REVIEWER_PASSWORD", "pw-reviewer-1")
    settings.ANTHROPIC_API_KEY = ""
    first = StringIO()
    call_command("seed_demo", stdout=first)
    assert "Created account 'admin' with password" in first.getvalue()
    call_command("seed_demo", stdout=StringIO())
    assert User.objects.count() == 2
    assert User.objects.get(username="reviewer").check_password("pw-reviewer-1")
    assert User.objects.get(username="admin").is_superuser
    assert ToolSpec.objects.count() == 16
    assert RiskPolicy.objects.count() == 2
    assert set(ModelSpec.objects.values_list("name", flat=True)) == {
        "qwen2.5-coder-0.5b-instruct",
        "qwen2.5-coder-1.5b-instruct",
        "smollm2-135m-instruct",
        "gemma-3-270m",
        "claude-sonnet-4-6",
    }
    assert not ModelSpec.objects.get(name="smollm2-135m-instruct").enabled  # measured not competent
    assert not ModelSpec.objects.get(name="claude-sonnet-4-6").enabled  # no ANTHROPIC_API_KEY here
    tags = dict(ToolSpec.objects.values_list("name", "risk_tags"))
    assert tags["get_order_details"] == ["read"]
    assert "payment" in tags["cancel_pending_order"]
    assert "pii" in tags["modify_user_address"]


@pytest.mark.django_db
def test_create_agent_key_prints_a_key_stored_hashed() -> None:
    User.objects.create_user("carol")
    out = StringIO()
    call_command("create_agent_key", "bot", "--owner", "carol", stdout=out)
    raw = out.getvalue().strip()
    key = AgentKey.objects.get()
    assert raw.startswith("rq_") and raw not in key.key_hash
    assert agent_key_authenticate(raw) == key
    assert key.owner is not None and key.owner.username == "carol"


@pytest.mark.django_db
def test_an_agent_key_says_who_is_behind_it() -> None:
    """Separation of duties needs an owner: a key made without saying who raises its requests
    (or, explicitly, that nobody does) is refused, so it cannot end up unowned by accident."""
    with pytest.raises(CommandError, match="--owner USERNAME"):
        call_command("create_agent_key", "bot", stdout=StringIO())
    assert not AgentKey.objects.exists()
    call_command("create_agent_key", "service-bot", "--no-owner", stdout=StringIO())
    assert AgentKey.objects.get().owner is None
    call_command(
        "create_agent_key", "trainer", "--scope", "ops", stdout=StringIO()
    )  # ops keys submit nothing


def test_production_refuses_to_start_without_its_own_secret_key(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "DEBUG": "false",
        "REVIEWQ_PRODUCTION": "true",
        "ALLOWED_HOSTS": "reviewq.example.com",
        "REVIEWQ_DATA_DIR": str(tmp_path),
    }
    env.pop("SECRET_KEY", None)
    result = subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0
    assert "set SECRET_KEY" in result.stderr


def test_check_deploy_is_clean_with_production_settings(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "DEBUG": "false",
        "REVIEWQ_PRODUCTION": "true",
        "SECRET_KEY": "x" * 20 + "a-long-random-production-secret-key-0123456789",
        "ALLOWED_HOSTS": "reviewq.example.com",
        "REVIEWQ_DATA_DIR": str(tmp_path),
    }
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout
