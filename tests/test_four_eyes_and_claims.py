from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import Group, User
from django.db import close_old_connections
from django.utils import timezone

from reviewq.errors import ApplicationError
from reviewq.models import GoldenTrace, Request, RequestStatus, ReviewItem, RiskPolicy
from reviewq.services import decisions, intake, recovery
from tests.factories import risky_body

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("seeded", "inline_pipeline")]


def hold(agent: Any) -> ReviewItem:
    request, _ = intake.request_create(agent_key=agent[0], payload=risky_body())
    return ReviewItem.objects.get(request=request)


@pytest.fixture
def four_eyes() -> None:
    RiskPolicy.objects.filter(decision="human").update(required_approvals=2)


def test_four_eyes_needs_two_different_reviewers(
    four_eyes: None, agent: Any, reviewer: User, second_reviewer: User
) -> None:
    item = hold(agent)
    assert item.required_approvals == 2
    first = decisions.review_approve(item_id=item.id, reviewer=reviewer)
    assert first.status == ReviewItem.Status.PENDING
    assert Request.objects.get(id=item.request_id).status == RequestStatus.AWAITING_REVIEW
    with pytest.raises(ApplicationError) as exc:
        decisions.review_approve(item_id=item.id, reviewer=reviewer)
    assert exc.value.code == "already_approved"
    final = decisions.review_approve(item_id=item.id, reviewer=second_reviewer)
    assert final.status == ReviewItem.Status.APPROVED
    request = Request.objects.get(id=item.request_id)
    assert request.status == RequestStatus.RELEASED
    assert request.decision["approvers"] == ["alice", "bob"]


def test_an_edit_resets_earlier_approvals(
    four_eyes: None, agent: Any, reviewer: User, second_reviewer: User
) -> None:
    item = hold(agent)
    decisions.review_approve(item_id=item.id, reviewer=reviewer)
    edited = [
        {
            "name": "cancel_pending_order",
            "arguments": {"order_id": "#W2378156", "reason": "ordered by mistake"},
        }
    ]
    after_edit = decisions.review_edit(item_id=item.id, reviewer=second_reviewer, tool_calls=edited)
    # Alice approved the old action; only Bob's edit counts for the new one.
    assert after_edit.status == ReviewItem.Status.PENDING
    assert [a.reviewer.username for a in after_edit.approvals.all()] == ["bob"]
    final = decisions.review_approve(item_id=item.id, reviewer=reviewer)
    assert final.status == ReviewItem.Status.EDITED
    request = Request.objects.get(id=item.request_id)
    assert request.action is not None
    assert request.action["tool_calls"][0]["arguments"]["reason"] == "ordered by mistake"
    assert GoldenTrace.objects.get(request=request).decision == "edit"


def test_a_claim_keeps_others_off_until_it_lapses(agent: Any, reviewer: User, second_reviewer: User) -> None:
    item = hold(agent)
    decisions.review_claim(item_id=item.id, reviewer=reviewer)
    with pytest.raises(ApplicationError) as exc:
        decisions.review_approve(item_id=item.id, reviewer=second_reviewer)
    assert (exc.value.code, exc.value.status) == ("claimed", 409)
    ReviewItem.objects.filter(id=item.id).update(claim_expires_at=timezone.now() - timedelta(seconds=1))
    assert (
        decisions.review_approve(item_id=item.id, reviewer=second_reviewer).status
        == ReviewItem.Status.APPROVED
    )


def test_a_reviewer_group_restricts_who_decides(agent: Any, reviewer: User, second_reviewer: User) -> None:
    payments = Group.objects.create(name="payments")
    second_reviewer.groups.add(payments)
    RiskPolicy.objects.filter(decision="human").update(reviewer_group=payments)
    item = hold(agent)
    with pytest.raises(ApplicationError) as exc:
        decisions.review_approve(item_id=item.id, reviewer=reviewer)
    assert exc.value.status == 403
    assert (
        decisions.review_approve(item_id=item.id, reviewer=second_reviewer).status
        == ReviewItem.Status.APPROVED
    )


def _race(*actions: Any) -> list[Any]:
    """Runs ``actions`` at the same moment in threads; returns each one's result or exception."""
    barrier = threading.Barrier(len(actions))
    results: list[Any] = [None] * len(actions)

    def run(index: int, action: Any) -> None:
        barrier.wait()
        try:
            results[index] = action()
        except Exception as exc:  # noqa: BLE001 - collected for the assertions
            results[index] = exc
        finally:
            close_old_connections()

    threads = [threading.Thread(target=run, args=(i, a)) for i, a in enumerate(actions)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def test_approve_racing_deny_has_one_winner(agent: Any, reviewer: User, second_reviewer: User) -> None:
    for _ in range(25):
        item = hold(agent)
        results = _race(
            lambda item=item: decisions.review_approve(item_id=item.id, reviewer=reviewer),
            lambda item=item: decisions.review_deny(item_id=item.id, reviewer=second_reviewer, reason="no"),
        )
        errors = [r for r in results if isinstance(r, Exception)]
        assert len(errors) == 1, results
        assert isinstance(errors[0], ApplicationError) and errors[0].status == 409
        assert GoldenTrace.objects.filter(request_id=item.request_id).count() == 1
        status = Request.objects.get(id=item.request_id).status
        assert status in (RequestStatus.RELEASED, RequestStatus.DENIED)


def test_a_decision_racing_expiry_leaves_one_consistent_state(agent: Any, reviewer: User) -> None:
    for _ in range(15):
        item = hold(agent)
        ReviewItem.objects.filter(id=item.id).update(expires_at=timezone.now() + timedelta(milliseconds=30))
        results = _race(
            lambda item=item: decisions.review_approve(item_id=item.id, reviewer=reviewer),
            lambda: (threading.Event().wait(0.03), recovery.expire_review_items())[1],
        )
        item.refresh_from_db()
        request = Request.objects.get(id=item.request_id)
        if item.status == ReviewItem.Status.APPROVED:
            assert request.status == RequestStatus.RELEASED and request.action is not None
        else:
            assert item.status == ReviewItem.Status.EXPIRED
            assert request.status == RequestStatus.EXPIRED and request.action is None
            assert isinstance(results[0], ApplicationError) and results[0].status == 410
