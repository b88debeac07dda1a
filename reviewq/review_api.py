"""The reviewers' JSON API: the same decisions as the browser, with 403 / 409 / 410 answers.

Session-authenticated (with CSRF), for tools and scripts that act for a logged-in reviewer.
"""

from __future__ import annotations

from typing import Any, cast

from django.contrib.auth.models import User
from django.http import HttpRequest
from ninja import Router, Schema
from ninja.security import SessionAuth
from pydantic import Field

from reviewq import selectors
from reviewq.models import ReviewItem
from reviewq.permissions import is_reviewer
from reviewq.schemas import ErrorOut
from reviewq.selectors import QueueFilter
from reviewq.services import decisions


class ReviewerAuth(SessionAuth):
    def authenticate(self, request: HttpRequest, key: str | None) -> Any:
        user = super().authenticate(request, key)
        return user if user is not None and is_reviewer(user) else None


router = Router(tags=["review"], auth=ReviewerAuth())
_ERRORS = {code: ErrorOut for code in (400, 401, 403, 404, 409, 410, 422)}


class ItemOut(Schema):
    id: int
    request_id: str
    status: str
    hold_reason: str
    risk_tags: list[str]
    action_under_review: dict[str, Any] | None
    approvals: int
    required_approvals: int
    claimed_by: str | None

    @staticmethod
    def of(item: ReviewItem) -> ItemOut:
        return ItemOut(
            id=item.id,
            request_id=str(item.request_id),
            status=item.status,
            hold_reason=item.hold_reason,
            risk_tags=list(item.risk_tags or []),
            action_under_review=item.action_under_review,
            approvals=item.approvals.count(),
            required_approvals=item.required_approvals,
            claimed_by=item.claimed_by.get_username() if item.claimed_by else None,
        )


class DenyIn(Schema):
    reason: str = Field(min_length=1, max_length=2000)


class ToolCallIn(Schema):
    name: str
    arguments: dict[str, Any] = Field(default_factory=dict)


class EditIn(Schema):
    tool_calls: list[ToolCallIn] = Field(min_length=1)


def _reviewer(request: HttpRequest) -> User:
    return cast(User, request.auth)  # type: ignore[attr-defined]


@router.get("/items", response=list[ItemOut])
def list_items(request: HttpRequest, tag: str = "", group: str = "") -> list[ItemOut]:
    """Pending items, most urgent first."""
    return [ItemOut.of(item) for item in selectors.review_items_pending(QueueFilter(tag=tag, group=group))]


@router.post("/items/{item_id}/claim", response={200: ItemOut, **_ERRORS})
def claim(request: HttpRequest, item_id: int) -> ItemOut:
    return ItemOut.of(decisions.review_claim(item_id=item_id, reviewer=_reviewer(request)))


@router.post("/items/{item_id}/approve", response={200: ItemOut, **_ERRORS})
def approve(request: HttpRequest, item_id: int) -> ItemOut:
    return ItemOut.of(decisions.review_approve(item_id=item_id, reviewer=_reviewer(request)))


@router.post("/items/{item_id}/deny", response={200: ItemOut, **_ERRORS})
def deny(request: HttpRequest, item_id: int, body: DenyIn) -> ItemOut:
    return ItemOut.of(decisions.review_deny(item_id=item_id, reviewer=_reviewer(request), reason=body.reason))


@router.post("/items/{item_id}/edit", response={200: ItemOut, **_ERRORS})
def edit(request: HttpRequest, item_id: int, body: EditIn) -> ItemOut:
    calls = [call.model_dump() for call in body.tool_calls]
    return ItemOut.of(decisions.review_edit(item_id=item_id, reviewer=_reviewer(request), tool_calls=calls))
