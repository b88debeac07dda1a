from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.utils import timezone
from django.utils.html import escape

from reviewq.errors import ApplicationError
from reviewq.models import GoldenTrace, Request, RequestStatus, ReviewItem
from reviewq.services import decisions, intake, recovery
from tests.factories import risky_body

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("seeded", "inline_pipeline")]


@pytest.fixture
def held(agent: Any) -> ReviewItem:
    request, _ = intake.request_create(agent_key=agent[0], payload=risky_body())
    return ReviewItem.objects.get(request=request)


def test_approve_releases_the_proposal_and_keeps_a_golden_trace(held: ReviewItem, reviewer: User) -> None:
    decisions.review_approve(item_id=held.id, reviewer=reviewer)
    request = Request.objects.get(id=held.request_id)
    assert request.status == RequestStatus.RELEASED
    assert request.action == request.proposal
    assert request.decision["by"] == "reviewer"
    assert request.decision["reviewer"] == "alice"
    trace = GoldenTrace.objects.get(request=request)
    assert trace.decision == "approve"
    assert trace.final_action == request.proposal
    assert trace.proposal == request.proposal
    assert trace.context["messages"] == request.messages
    assert trace.reviewer == reviewer
    assert trace.time_to_decision_ms >= 0


def test_deny_needs_a_reason(held: ReviewItem, reviewer: User) -> None:
    with pytest.raises(ApplicationError) as exc:
        decisions.review_deny(item_id=held.id, reviewer=reviewer, reason="  ")
    assert exc.value.code == "reason_required"
    decisions.review_deny(item_id=held.id, reviewer=reviewer, reason="customer did not confirm")
    request = Request.objects.get(id=held.request_id)
    assert request.status == RequestStatus.DENIED
    assert request.action is None
    trace = GoldenTrace.objects.get(request=request)
    assert (trace.decision, trace.reason, trace.final_action) == ("deny", "customer did not confirm", None)


def test_edit_is_revalidated_and_released(held: ReviewItem, reviewer: User) -> None:
    with pytest.raises(ApplicationError) as exc:
        decisions.review_edit(
            item_id=held.id,
            reviewer=reviewer,
            tool_calls=[{"name": "cancel_pending_order", "arguments": {"order_id": "#W1", "reason": "whim"}}],
        )
    assert exc.value.code == "invalid_edit"
    assert ReviewItem.objects.get(id=held.id).status == ReviewItem.Status.PENDING
    decisions.review_edit(
        item_id=held.id,
        reviewer=reviewer,
        tool_calls=[
            {"name": "cancel_pending_order", "arguments": {"order_id": "#W1", "reason": "ordered by mistake"}}
        ],
    )
    request = Request.objects.get(id=held.request_id)
    assert request.action is not None
    assert request.action["tool_calls"][0]["arguments"]["reason"] == "ordered by mistake"
    assert GoldenTrace.objects.get(request=request).decision == "edit"


def test_a_second_decision_is_a_conflict(held: ReviewItem, reviewer: User, second_reviewer: User) -> None:
    decisions.review_approve(item_id=held.id, reviewer=reviewer)
    with pytest.raises(ApplicationError) as exc:
        decisions.review_deny(item_id=held.id, reviewer=second_reviewer, reason="too late")
    assert (exc.value.code, exc.value.status) == ("already_decided", 409)
    assert GoldenTrace.objects.count() == 1
    assert Request.objects.get(id=held.request_id).status == RequestStatus.RELEASED


def test_nobody_decides_on_their_own_request(held: ReviewItem) -> None:
    owner = User.objects.get(username="carol")
    with pytest.raises(ApplicationError) as exc:
        decisions.review_approve(item_id=held.id, reviewer=owner)
    assert exc.value.status == 403
    assert ReviewItem.objects.get(id=held.id).status == ReviewItem.Status.PENDING


def test_a_late_decision_is_refused_and_expiry_fails_closed(held: ReviewItem, reviewer: User) -> None:
    ReviewItem.objects.filter(id=held.id).update(expires_at=timezone.now() - timedelta(seconds=1))
    with pytest.raises(ApplicationError) as exc:
        decisions.review_approve(item_id=held.id, reviewer=reviewer)
    assert exc.value.status == 410
    assert recovery.expire_review_items() == 1
    request = Request.objects.get(id=held.request_id)
    assert request.status == RequestStatus.EXPIRED
    assert request.action is None
    assert recovery.expire_review_items() == 0


def test_the_queue_page_requires_a_reviewer(client: Client, held: ReviewItem, outsider: User) -> None:
    assert client.get("/review/").status_code == 302
    client.force_login(outsider)
    assert client.get("/review/").status_code == 302
    assert client.get(f"/review/{held.id}/").status_code == 302
    assert client.post(f"/review/{held.id}/approve").status_code == 302
    assert ReviewItem.objects.get(id=held.id).status == ReviewItem.Status.PENDING


def test_the_reviewer_sees_and_approves_an_item(client: Client, held: ReviewItem, reviewer: User) -> None:
    client.force_login(reviewer)
    queue = client.get("/review/")
    assert f'id="item-{held.id}"' in queue.content.decode()
    page = client.get(f"/review/{held.id}/").content.decode()
    assert "cancel_pending_order" in page
    assert "Please cancel pending order" in page
    assert "Hold money, personal data and destructive changes" in page
    # A cancellation is destructive: the page asks to confirm it by name, and a post that did not
    # (one key press, say) releases nothing.
    assert 'id="confirm-approve"' in page and escape(held.action_summary) in page
    client.post(f"/review/{held.id}/approve", {"action_digest": held.action_digest})
    assert Request.objects.get(id=held.request_id).status == RequestStatus.AWAITING_REVIEW
    response = client.post(
        f"/review/{held.id}/approve", {"action_digest": held.action_digest, "confirmed": held.action_digest}
    )
    assert response.status_code == 302
    assert Request.objects.get(id=held.request_id).status == RequestStatus.RELEASED


def test_a_denial_without_reason_in_the_browser_is_explained(
    client: Client, held: ReviewItem, reviewer: User
) -> None:
    client.force_login(reviewer)
    response = client.post(f"/review/{held.id}/deny", {"reason": ""}, follow=True)
    assert "a denial needs a reason" in response.content.decode()
    assert ReviewItem.objects.get(id=held.id).status == ReviewItem.Status.PENDING
