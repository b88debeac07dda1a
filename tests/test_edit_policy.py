"""A reviewer's edit goes through the same risk policies as a model's proposal (the stricter wins)."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import Group, User

from reviewq.errors import ApplicationError
from reviewq.models import Request, RequestStatus, ReviewItem, RiskPolicy, ToolSpec
from reviewq.services import decisions, intake
from router.backends.fake import FakeBackend

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("seeded", "inline_pipeline")]

REFUND: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "issue_refund",
        "description": "Refund part of an order to the customer.",
        "parameters": {
            "type": "object",
            "properties": {"order_id": {"type": "string"}, "amount": {"type": "number"}},
            "required": ["order_id", "amount"],
        },
    },
}


@pytest.fixture
def refund_policies() -> None:
    ToolSpec.objects.create(
        name="issue_refund",
        description=REFUND["function"]["description"],
        parameters=REFUND["function"]["parameters"],
        risk_tags=["payment"],
    )
    RiskPolicy.objects.create(
        name="Refunds above 500 need two approvals",
        priority=5,
        tool_pattern="issue_refund",
        condition="amount > 500",
        decision=RiskPolicy.Decision.HUMAN,
        required_approvals=2,
    )
    RiskPolicy.objects.create(
        name="Refunds above 5000 are never made",
        priority=1,
        tool_pattern="issue_refund",
        condition="amount > 5000",
        decision=RiskPolicy.Decision.BLOCK,
    )


def held_for_a_model_failure(agent: Any) -> ReviewItem:
    """An item with no valid proposal (the model answered garbage twice): no policy, one approval."""
    FakeBackend.scripted_outputs.extend(["not json", "still not json"])
    payload = {
        "messages": [{"role": "user", "content": "Please refund order #W2378156: $899.00, it never came."}],
        "tools": [REFUND],
    }
    request, _ = intake.request_create(agent_key=agent[0], payload=payload)
    item = ReviewItem.objects.get(request=request)
    assert (item.action_under_review, item.policy, item.required_approvals) == (None, None, 1)
    return item


def refund(amount: float) -> list[dict[str, Any]]:
    return [{"name": "issue_refund", "arguments": {"order_id": "#W2378156", "amount": amount}}]


def test_an_edit_above_a_policy_threshold_needs_the_policys_approvals(
    refund_policies: None, agent: Any, reviewer: User, second_reviewer: User
) -> None:
    item = held_for_a_model_failure(agent)
    edited = decisions.review_edit(item_id=item.id, reviewer=reviewer, tool_calls=refund(899))
    # One approval (the editor's) of the two the policy asks for: not released yet.
    assert edited.status == ReviewItem.Status.PENDING
    assert edited.required_approvals == 2
    assert edited.policy is not None and edited.policy.name == "Refunds above 500 need two approvals"
    assert "payment" in edited.risk_tags
    assert Request.objects.get(id=item.request_id).status == RequestStatus.AWAITING_REVIEW
    done = decisions.review_approve(item_id=item.id, reviewer=second_reviewer)
    assert done.status == ReviewItem.Status.EDITED
    released = Request.objects.get(id=item.request_id)
    assert released.status == RequestStatus.RELEASED
    assert released.action is not None
    assert released.action["tool_calls"][0]["arguments"]["amount"] == 899
    assert sorted(released.decision["approvers"]) == ["alice", "bob"]


def test_an_edit_below_the_threshold_is_released_by_its_editor(
    refund_policies: None, agent: Any, reviewer: User
) -> None:
    item = held_for_a_model_failure(agent)
    assert decisions.review_edit(item_id=item.id, reviewer=reviewer, tool_calls=refund(89)).status == "edited"


def test_an_edit_a_policy_blocks_is_refused(refund_policies: None, agent: Any, reviewer: User) -> None:
    item = held_for_a_model_failure(agent)
    with pytest.raises(ApplicationError) as exc:
        decisions.review_edit(item_id=item.id, reviewer=reviewer, tool_calls=refund(9000))
    assert (exc.value.code, exc.value.status) == ("blocked_by_policy", 403)
    assert ReviewItem.objects.get(id=item.id).action_under_review is None  # nothing was kept


def test_an_edit_moves_the_item_to_the_policys_group(
    refund_policies: None, agent: Any, reviewer: User, second_reviewer: User
) -> None:
    """The editor is not in the group the edited action's policy names: the edit stands, and
    someone of that group must approve it."""
    finance = Group.objects.create(name="finance")
    second_reviewer.groups.add(finance)
    RiskPolicy.objects.filter(name="Refunds above 500 need two approvals").update(
        required_approvals=1, reviewer_group=finance
    )
    item = held_for_a_model_failure(agent)
    edited = decisions.review_edit(item_id=item.id, reviewer=reviewer, tool_calls=refund(899))
    assert (edited.status, edited.reviewer_group_id, edited.approvals.count()) == ("pending", finance.id, 0)
    with pytest.raises(ApplicationError) as exc:
        decisions.review_approve(item_id=item.id, reviewer=reviewer)
    assert exc.value.code == "wrong_group"
    assert decisions.review_approve(item_id=item.id, reviewer=second_reviewer).status == "edited"
