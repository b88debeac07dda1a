"""The reviewers' pages. Short functions: the decisions themselves live in services."""

from __future__ import annotations

import json
from typing import Any, cast

from django.contrib import messages
from django.contrib.auth.decorators import login_required, user_passes_test
from django.contrib.auth.models import User
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from reviewq import selectors, services
from reviewq.errors import ApplicationError
from reviewq.models import ReviewItem

REVIEWERS_GROUP_NAME = "reviewers"


def is_reviewer(user: Any) -> bool:
    return bool(
        user.is_authenticated and (user.is_staff or user.groups.filter(name=REVIEWERS_GROUP_NAME).exists())
    )


reviewer_required = user_passes_test(is_reviewer)


def _user(request: HttpRequest) -> User:
    """The logged-in user of a view behind login_required."""
    return cast(User, request.user)


@login_required
@reviewer_required
def queue(request: HttpRequest) -> HttpResponse:
    return render(request, "review/queue.html", {"items": selectors.review_items_pending()})


@login_required
@reviewer_required
def item_detail(request: HttpRequest, item_id: int) -> HttpResponse:
    item = get_object_or_404(
        ReviewItem.objects.select_related("request", "policy", "decided_by", "request__agent_key"), id=item_id
    )
    context = {
        "item": item,
        "req": item.request,
        "model_calls": item.request.model_calls.all(),
        "proposal_json": json.dumps(item.request.proposal, indent=2) if item.request.proposal else "",
        "own_request": item.request.agent_key.owner_id == request.user.pk,
    }
    return render(request, "review/item.html", context)


def _decision_response(request: HttpRequest, item_id: int, decide: Any) -> HttpResponse:
    try:
        item = decide()
    except ApplicationError as exc:
        messages.error(request, exc.message)
        return redirect("review_item", item_id=item_id)
    messages.success(request, f"Request {item.request_id} {item.status}.")
    return redirect("review_queue")


@require_POST
@login_required
@reviewer_required
def item_approve(request: HttpRequest, item_id: int) -> HttpResponse:
    return _decision_response(
        request, item_id, lambda: services.review_approve(item_id=item_id, reviewer=_user(request))
    )


@require_POST
@login_required
@reviewer_required
def item_deny(request: HttpRequest, item_id: int) -> HttpResponse:
    reason = request.POST.get("reason", "")
    return _decision_response(
        request,
        item_id,
        lambda: services.review_deny(item_id=item_id, reviewer=_user(request), reason=reason),
    )


def healthz(request: HttpRequest) -> JsonResponse:
    connection.ensure_connection()
    return JsonResponse({"status": "ok"})
