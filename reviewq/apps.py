from __future__ import annotations

from django.apps import AppConfig


class ReviewqConfig(AppConfig):
    name = "reviewq"
    verbose_name = "Review queue"

    def ready(self) -> None:
        from django.db.models.signals import post_delete, post_save

        from reviewq.config.snapshot import connect_signals
        from reviewq.models import AgentKey
        from reviewq.services.agent_keys import agent_keys_forget

        connect_signals()
        post_save.connect(agent_keys_forget, sender=AgentKey, dispatch_uid="reviewq.agent_keys_forget")
        post_delete.connect(agent_keys_forget, sender=AgentKey, dispatch_uid="reviewq.agent_keys_forget")
