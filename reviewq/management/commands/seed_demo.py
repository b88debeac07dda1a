"""Seeds demo data: accounts, the model registry, the retail tools and the default policies.

Idempotent: running it again creates only what is missing and never resets a password.
"""

from __future__ import annotations

import os
import secrets

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand
from django.db import transaction

from reviewq.config.demo import seed_policies, seed_retail_tools
from reviewq.permissions import REVIEWERS_GROUP_NAME
from router.defaults import ensure_default_models


class Command(BaseCommand):
    help = "Create demo accounts, the default model registry, the retail tools and policies."

    @transaction.atomic
    def handle(self, *args, **options) -> None:  # type: ignore[no-untyped-def]
        reviewers, _ = Group.objects.get_or_create(name=REVIEWERS_GROUP_NAME)
        self._account("admin", "REVIEWQ_ADMIN_PASSWORD", superuser=True)
        reviewer = self._account("reviewer", "REVIEWQ_REVIEWER_PASSWORD", superuser=False)
        reviewer.groups.add(reviewers)
        models = ensure_default_models()
        tools = seed_retail_tools()
        policies = seed_policies()
        self.stdout.write(
            f"Registry: {', '.join(m.name + ('' if m.enabled else ' (disabled)') for m in models)}; "
            f"{tools} tools and {policies} policies created."
        )

    def _account(self, username: str, password_env: str, *, superuser: bool):  # type: ignore[no-untyped-def]
        User = get_user_model()
        user = User.objects.filter(username=username).first()
        if user is not None:
            if os.getenv(password_env):
                user.set_password(os.environ[password_env])
                user.save(update_fields=["password"])
            return user
        password = os.getenv(password_env) or secrets.token_urlsafe(12)
        if superuser:
            user = User.objects.create_superuser(username=username, password=password, email="")
        else:
            user = User.objects.create_user(username=username, password=password)
        shown = "(from $" + password_env + ")" if os.getenv(password_env) else password
        self.stdout.write(self.style.SUCCESS(f"Created account {username!r} with password {shown}"))
        return user
