from __future__ import annotations

from django.apps import AppConfig


class ReviewqConfig(AppConfig):
    name = "reviewq"
    verbose_name = "Review queue"

    def ready(self) -> None:
        from reviewq.configuration import connect_signals

        connect_signals()
