"""Who is a reviewer: staff, or a member of the reviewers group (the pages, the socket, the dashboard)."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.decorators import user_passes_test

REVIEWERS_GROUP_NAME = "reviewers"


def is_reviewer(user: Any) -> bool:
    return bool(
        user.is_authenticated and (user.is_staff or user.groups.filter(name=REVIEWERS_GROUP_NAME).exists())
    )


reviewer_required = user_passes_test(is_reviewer)
