"""G3: a denied, expired or blocked action can never be released, whatever happens in what order.

Hypothesis drives one held request through random sequences of approvals, denials, edits,
expiry, task redelivery and a raw attempt to move it out of a final state, and checks after
every step that the request, its review item and its golden traces agree.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.utils import timezone
from hypothesis import HealthCheck, settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from reviewq.errors import ApplicationError
from reviewq.models import GoldenTrace, Request, RequestStatus, ReviewItem
from reviewq.notify.finish import finish_request
from reviewq.pipeline.run import run_pipeline
from reviewq.services import decisions, intake, recovery
from tests.factories import risky_body

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("seeded", "inline_pipeline")]
FINAL_WITHOUT_ACTION = {RequestStatus.DENIED, RequestStatus.EXPIRED}


def test_no_sequence_of_events_releases_a_denied_or_expired_action(
    agent: Any, reviewer: User, second_reviewer: User
) -> None:
    class Decisions(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            request, _ = intake.request_create(agent_key=agent[0], payload=risky_body())
            self.item = ReviewItem.objects.get(request=request)
            self.request_id = request.id
            self.ended_without_action = False

        def _attempt(self, action: Any) -> None:
            try:
                action()
            except ApplicationError as exc:
                assert exc.status in (400, 403, 409, 410), exc.message

        @rule()
        def approve_alice(self) -> None:
            self._attempt(lambda: decisions.review_approve(item_id=self.item.id, reviewer=reviewer))

        @rule()
        def approve_bob(self) -> None:
            self._attempt(lambda: decisions.review_approve(item_id=self.item.id, reviewer=second_reviewer))

        @rule()
        def deny(self) -> None:
            self._attempt(lambda: decisions.review_deny(item_id=self.item.id, reviewer=reviewer, reason="no"))

        @rule()
        def edit(self) -> None:
            calls = [
                {
                    "name": "cancel_pending_order",
                    "arguments": {"order_id": "#W2378156", "reason": "ordered by mistake"},
                }
            ]
            self._attempt(
                lambda: decisions.review_edit(
                    item_id=self.item.id, reviewer=second_reviewer, tool_calls=calls
                )
            )

        @rule()
        def expire(self) -> None:
            ReviewItem.objects.filter(id=self.item.id).update(
                expires_at=timezone.now() - timedelta(seconds=1)
            )
            recovery.expire_review_items()

        @rule()
        def redeliver_the_task(self) -> None:
            run_pipeline(self.request_id)

        @rule()
        def force_release_from_where_it_is(self) -> None:
            # A buggy caller tries to release the request straight from its current state.
            status = Request.objects.get(id=self.request_id).status
            if status in FINAL_WITHOUT_ACTION | {RequestStatus.RELEASED}:
                with pytest.raises(ValueError, match="never leaves a final state"):
                    finish_request(
                        self.request_id,
                        from_statuses=[status],
                        to_status=RequestStatus.RELEASED,
                        action={"forced": True},
                    )

        @invariant()
        def final_states_hold(self) -> None:
            request = Request.objects.get(id=self.request_id)
            item = ReviewItem.objects.get(id=self.item.id)
            traces = GoldenTrace.objects.filter(request_id=self.request_id).count()
            if self.ended_without_action:
                assert request.status in FINAL_WITHOUT_ACTION and request.action is None
            if request.status in FINAL_WITHOUT_ACTION:
                self.ended_without_action = True
                assert request.action is None
                assert item.status in (ReviewItem.Status.DENIED, ReviewItem.Status.EXPIRED)
            if request.status == RequestStatus.RELEASED and request.action != {"forced": True}:
                assert item.status in (ReviewItem.Status.APPROVED, ReviewItem.Status.EDITED)
                assert traces == 1
            assert traces <= 1

    Decisions.TestCase.settings = settings(
        max_examples=25,
        stateful_step_count=8,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )
    Decisions.TestCase().runTest()


def test_the_database_refuses_to_move_or_rewrite_a_final_request(agent: Any, reviewer: User) -> None:
    """Below the application: a raw SQL UPDATE cannot release a denied request or rewrite its trail."""
    from django.db import DatabaseError, connection, transaction

    request, _ = intake.request_create(agent_key=agent[0], payload=risky_body())
    item = ReviewItem.objects.get(request=request)
    decisions.review_deny(item_id=item.id, reviewer=reviewer, reason="the customer did not confirm")
    table = Request._meta.db_table
    for sql in (
        f"UPDATE {table} SET status = 'released' WHERE id = %s",
        f"UPDATE {table} SET action = '{{\"forced\": true}}' WHERE id = %s",
    ):
        with pytest.raises(DatabaseError, match="final state"), transaction.atomic():
            with connection.cursor() as cursor:
                cursor.execute(sql, [request.id.hex if connection.vendor == "sqlite" else str(request.id)])
    with pytest.raises(DatabaseError, match="final state"), transaction.atomic():
        Request.objects.filter(id=request.id).update(decision={"by": "reviewer", "decision": "approve"})
    denied = Request.objects.get(id=request.id)
    assert (denied.status, denied.action) == (RequestStatus.DENIED, None)
    Request.objects.filter(id=request.id).update(finished_at=denied.finished_at)  # other columns may change
