"""The reviewers' pages. Short functions: the decisions themselves live in reviewq.services.decisions."""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.contrib.auth.models import Group, User
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from reviewq import review_page, selectors
from reviewq.edit_forms import parse_call_forms, parse_raw_calls
from reviewq.errors import ApplicationError
from reviewq.models import ReviewItem, ToolSpec
from reviewq.permissions import reviewer_required
from reviewq.selectors import QueueFilter
from reviewq.services import decisions


def _user(request: HttpRequest) -> User:
    """The logged-in user of a view behind login_required."""
    return cast(User, request.user)


@login_required
@reviewer_required
def queue(request: HttpRequest) -> HttpResponse:
    queue_filter = QueueFilter.from_query(request.GET)
    query = queue_filter.as_query()
    context = {
        "items": selectors.review_items_pending(queue_filter),
        "tag": queue_filter.tag,
        "group": queue_filter.group,
        # The socket serves the same filtered view: its snapshot and its pushes.
        "ws_url": "/ws/review/" + (f"?{query}" if query else ""),
        "tags": [choice.value for choice in ToolSpec.RiskTag],
        "groups": Group.objects.order_by("name").values_list("name", flat=True),
    }
    return render(request, "review/queue.html", context)


@login_required
@reviewer_required
def item_detail(
    request: HttpRequest, item_id: int, *, failure: review_page.EditFailure | None = None
) -> HttpResponse:
    item = get_object_or_404(
        ReviewItem.objects.select_related("request__agent_key", "policy", "decided_by", "claimed_by"),
        id=item_id,
    )
    # A refused edit re-renders the page with the error and what was typed, as a form view does.
    return render(
        request, "review/item.html", review_page.item_context(item, viewer=request.user, failure=failure)
    )


def _decision_response(request: HttpRequest, item_id: int, decide: Callable[[], ReviewItem]) -> HttpResponse:
    try:
        item = decide()
    except ApplicationError as exc:
        messages.error(request, exc.message)
        return redirect("review_item", item_id=item_id)
    if item.status == ReviewItem.Status.PENDING:
        messages.success(
            request, f"Recorded. {item.approvals.count()} of {item.required_approvals} approvals."
        )
        return redirect("review_item", item_id=item_id)
    messages.success(request, f"Request {item.request_id} {item.status}.")
    following = selectors.review_items_pending().exclude(id=item.id).first()
    return redirect("review_item", item_id=following.id) if following else redirect("review_queue")


@require_POST
@login_required
@reviewer_required
def item_claim(request: HttpRequest, item_id: int) -> HttpResponse:
    try:
        decisions.review_claim(item_id=item_id, reviewer=_user(request))
    except ApplicationError as exc:
        messages.error(request, exc.message)
    return redirect("review_item", item_id=item_id)


@require_POST
@login_required
@reviewer_required
def item_approve(request: HttpRequest, item_id: int) -> HttpResponse:
    """An approval names the action the reviewer saw (its digest); a risky one carries the digest
    the confirm dialog named (see ``ReviewItem.needs_confirmed_approval``)."""
    return _decision_response(
        request,
        item_id,
        lambda: decisions.review_approve(
            item_id=item_id,
            reviewer=_user(request),
            seen_digest=request.POST.get("action_digest", ""),
            confirmed_digest=request.POST.get("confirmed", ""),
        ),
    )


@require_POST
@login_required
@reviewer_required
def item_deny(request: HttpRequest, item_id: int) -> HttpResponse:
    reason = request.POST.get("reason", "")
    return _decision_response(
        request,
        item_id,
        lambda: decisions.review_deny(item_id=item_id, reviewer=_user(request), reason=reason),
    )


@require_POST
@login_required
@reviewer_required
def item_edit(request: HttpRequest, item_id: int) -> HttpResponse:
    """Edit through the schema form, or the raw JSON editor when ``mode=json``."""
    item = get_object_or_404(ReviewItem.objects.select_related("request"), id=item_id)
    mode = "json" if request.POST.get("mode") == "json" else "form"
    try:
        if mode == "json":
            calls = parse_raw_calls(request.POST.get("raw_json", ""))
        else:
            # The form was built from the item's draft (its action, or the model's best attempt).
            calls = parse_call_forms(request.POST, review_page.draft_for(item).calls, item.request.tools)
        updated = decisions.review_edit(item_id=item_id, reviewer=_user(request), tool_calls=calls)
    except ApplicationError as exc:
        # Re-render with the error and what was typed: nothing the reviewer entered is lost.
        failure = review_page.EditFailure(error=exc, mode=mode, typed=request.POST)
        return item_detail(request, item_id, failure=failure)
    if updated.status == ReviewItem.Status.PENDING:
        messages.success(
            request, f"Edit recorded. {updated.approvals.count()} of {updated.required_approvals} approvals."
        )
        return redirect("review_item", item_id=item_id)
    messages.success(request, f"Request {updated.request_id} released with your edit.")
    return redirect("review_queue")


def healthz(request: HttpRequest) -> JsonResponse:
    connection.ensure_connection()
    return JsonResponse({"status": "ok"})
