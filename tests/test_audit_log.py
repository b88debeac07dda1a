from __future__ import annotations

from io import StringIO
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command
from django.db import DatabaseError, connection, transaction

from reviewq import audit
from reviewq.models import AuditEvent, ReviewItem
from reviewq.services import decisions, intake
from tests.factories import risky_body

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("seeded", "inline_pipeline")]


@pytest.fixture
def decided(agent: Any, reviewer: User) -> ReviewItem:
    request, _ = intake.request_create(agent_key=agent[0], payload=risky_body())
    item = ReviewItem.objects.get(request=request)
    decisions.review_claim(item_id=item.id, reviewer=reviewer)
    decisions.review_deny(item_id=item.id, reviewer=reviewer, reason="not confirmed")
    return item


def test_every_step_of_a_decision_is_logged_in_a_chain(decided: ReviewItem) -> None:
    events = list(AuditEvent.objects.filter(item_id=decided.id))
    assert [e.kind for e in events] == ["hold", "claim", "decision.deny"]
    assert events[-1].actor == "alice" and events[-1].payload["reason"] == "not confirmed"
    assert [e.prev_hash for e in events[1:]] == [e.hash for e in events[:-1]]
    assert list(audit.verify()) == []
    out = StringIO()
    call_command("verify_audit_log", stdout=out)
    assert "verifies: 3 events" in out.getvalue()


@pytest.mark.parametrize(
    "statement", ["UPDATE reviewq_auditevent SET actor = 'mallory'", "DELETE FROM reviewq_auditevent"]
)
def test_the_database_refuses_changes_to_the_log(decided: ReviewItem, statement: str) -> None:
    with (
        pytest.raises(DatabaseError, match="append-only"),
        transaction.atomic(),
        connection.cursor() as cursor,
    ):
        cursor.execute(statement)
    assert AuditEvent.objects.filter(actor="mallory").count() == 0
    assert AuditEvent.objects.count() == 3


def test_the_orm_cannot_change_it_either(decided: ReviewItem) -> None:
    with pytest.raises(DatabaseError), transaction.atomic():
        AuditEvent.objects.filter(kind="decision.deny").update(payload={"reason": "approved, honest"})


def test_verify_flags_a_row_altered_behind_the_triggers(decided: ReviewItem) -> None:
    # Someone with database superpowers switches the triggers off and edits history.
    with connection.cursor() as cursor:
        cursor.execute("INSERT INTO reviewq_audit_maintenance (enabled) VALUES (1)")
        cursor.execute("UPDATE reviewq_auditevent SET actor = 'mallory' WHERE kind = 'decision.deny'")
        cursor.execute("DELETE FROM reviewq_audit_maintenance")
    problems = list(audit.verify())
    assert len(problems) == 1 and "altered" in problems[0]
    with pytest.raises(CommandError):
        call_command("verify_audit_log", stderr=StringIO())
