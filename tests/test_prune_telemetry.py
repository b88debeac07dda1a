"""prune_telemetry: old rows go, in batches; live work and golden traces stay."""

from __future__ import annotations

from datetime import timedelta
from io import StringIO
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command
from django.utils import timezone

from reviewq.models import GoldenTrace, Request, ReviewItem
from reviewq.services import decisions, intake
from telemetry.models import ModelCall
from telemetry.retention import telemetry_prune
from tests.factories import read_body, risky_body

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("seeded", "inline_pipeline")]


def age(request: Request, days: int) -> None:
    """Moves a request and its model calls ``days`` into the past."""
    then = timezone.now() - timedelta(days=days)
    Request.objects.filter(id=request.id).update(created_at=then, finished_at=then)
    ModelCall.objects.filter(request_id=request.id).update(created_at=then)


@pytest.fixture
def history(agent: Any, reviewer: User) -> dict[str, Request]:
    key = agent[0]
    rows: dict[str, Request] = {}
    for name in ("old_a", "old_b", "old_c", "recent"):
        rows[name], _ = intake.request_create(agent_key=key, payload=read_body())
    rows["old_pending"], _ = intake.request_create(agent_key=key, payload=risky_body())
    rows["old_decided"], _ = intake.request_create(agent_key=key, payload=risky_body())
    item = ReviewItem.objects.get(request=rows["old_decided"])
    decisions.review_approve(item_id=item.id, reviewer=reviewer)
    for name in ("old_a", "old_b", "old_c", "old_pending", "old_decided"):
        age(rows[name], days=100)
    age(rows["recent"], days=10)
    return rows


def test_old_rows_are_deleted_in_batches(history: dict[str, Request]) -> None:
    old_calls = ModelCall.objects.filter(created_at__lt=timezone.now() - timedelta(days=90)).count()
    batches: list[tuple[str, int]] = []
    result = telemetry_prune(days=90, batch_size=2, progress=lambda kind, n: batches.append((kind, n)))
    # Every old call but the one a reviewer is still looking at.
    assert result.model_calls == old_calls - 1 == 4
    assert result.requests == 3
    # Batches of two: 2, 4 model calls; 2, 3 requests.
    assert batches == [("model calls", 2), ("model calls", 4), ("requests", 2), ("requests", 3)]
    remaining = set(Request.objects.values_list("id", flat=True))
    assert remaining == {history[name].id for name in ("recent", "old_pending", "old_decided")}
    assert ModelCall.objects.filter(request_id=history["recent"].id).exists()
    assert ModelCall.objects.filter(request_id=history["old_pending"].id).exists()
    assert not ModelCall.objects.filter(request_id=history["old_decided"].id).exists()
    assert ReviewItem.objects.filter(request_id=history["old_pending"].id, status="pending").exists()


def test_golden_traces_are_kept_unless_asked(history: dict[str, Request]) -> None:
    telemetry_prune(days=90)
    assert GoldenTrace.objects.filter(request_id=history["old_decided"].id).exists()
    result = telemetry_prune(days=90, include_traces=True)
    assert (result.model_calls, result.requests) == (0, 1)
    assert not Request.objects.filter(id=history["old_decided"].id).exists()
    assert not GoldenTrace.objects.exists()


def test_the_command_dry_run_counts_and_deletes_nothing(history: dict[str, Request]) -> None:
    before = (Request.objects.count(), ModelCall.objects.count())
    out = StringIO()
    call_command("prune_telemetry", "--days", "90", "--dry-run", stdout=out)
    assert "would delete 4 model calls and 3 requests" in out.getvalue()
    assert (Request.objects.count(), ModelCall.objects.count()) == before


def test_the_command_uses_the_retention_setting(history: dict[str, Request], settings: Any) -> None:
    settings.TELEMETRY_RETENTION_DAYS = 5
    out = StringIO()
    call_command("prune_telemetry", "--batch-size", "1000", stdout=out)
    # Ten days is past a five-day retention: the recent request goes too.
    assert "deleted 5 model calls and 4 requests" in out.getvalue()
    assert not Request.objects.filter(id=history["recent"].id).exists()


def test_the_command_validates_its_arguments(db: Any) -> None:
    with pytest.raises(CommandError):
        call_command("prune_telemetry", "--batch-size", "0")
    with pytest.raises(CommandError):
        call_command("prune_telemetry", "--days", "-1")
