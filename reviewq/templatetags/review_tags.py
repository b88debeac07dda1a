"""Template filters for the reviewer's pages; the logic lives in reviewq.review_page.

A filter, not a view's context, because a queue row is also rendered for a push with nothing but
its item (reviewq.notify.push).
"""

from __future__ import annotations

from django import template

from reviewq import review_page
from reviewq.models import ReviewItem

register = template.Library()


@register.filter
def action_summary(item: ReviewItem) -> review_page.ActionSummary:
    """The item's action under review on one line (templates/review/_action_line.html)."""
    return review_page.action_summary(item.action_under_review, item.request.tools)
