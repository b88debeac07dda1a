from __future__ import annotations

import json
from io import StringIO
from pathlib import Path

import pytest
from django.contrib.auth.models import Group
from django.core.management import CommandError, call_command

from reviewq.models import RiskPolicy, ToolSpec
from router.models import EscalationPolicy, ModelSpec

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("seeded")]


def test_export_then_import_round_trips(tmp_path: Path) -> None:
    RiskPolicy.objects.create(
        name="Big refunds, four eyes",
        priority=3,
        condition="amount > 500",
        decision="human",
        required_approvals=2,
        reviewer_group=Group.objects.create(name="payments"),
    )
    EscalationPolicy.objects.create(task_type="tool_use", uncertainty_threshold=0.4)
    path = tmp_path / "config.json"
    call_command("export_config", str(path), stdout=StringIO())
    exported = json.loads(path.read_text())
    assert {t["name"] for t in exported["tools"]} >= {"cancel_pending_order"}

    RiskPolicy.objects.all().delete()
    EscalationPolicy.objects.all().delete()
    ModelSpec.objects.filter(name="gemma-3-270m").update(enabled=False)
    out = StringIO()
    call_command("import_config", str(path), stdout=out)
    assert "3 policies" in out.getvalue()
    policy = RiskPolicy.objects.get(name="Big refunds, four eyes")
    assert policy.reviewer_group is not None
    assert (policy.condition, policy.required_approvals, policy.reviewer_group.name) == (
        "amount > 500",
        2,
        "payments",
    )
    assert EscalationPolicy.objects.get(task_type="tool_use").uncertainty_threshold == 0.4
    assert ModelSpec.objects.get(name="gemma-3-270m").enabled


def test_an_invalid_file_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    config = {
        "format_version": 1,
        "tools": [{"name": "new_tool", "risk_tags": ["read"]}],
        "policies": [{"name": "evil", "decision": "human", "condition": "open('/etc/passwd')"}],
    }
    path.write_text(json.dumps(config))
    with pytest.raises(CommandError, match="not allowed"):
        call_command("import_config", str(path))
    assert not ToolSpec.objects.filter(name="new_tool").exists()
    path.write_text("{not json")
    with pytest.raises(CommandError, match="cannot read"):
        call_command("import_config", str(path))
