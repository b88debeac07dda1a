from __future__ import annotations

from django.apps import AppConfig


class ReviewqConfig(AppConfig):
    name = "reviewq"
    verbose_name = "Review queue"
