"""The reviewers' live queue over WebSocket.

Every (re)connect receives a full snapshot rendered from the database, so a reviewer who was
offline misses nothing; later pushes are HTML fragments that htmx swaps in out of band.
"""

from __future__ import annotations

from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.template.loader import render_to_string

from reviewq import live, selectors
from reviewq.models import ReviewerPresence


def _render_snapshot() -> str:
    return render_to_string("review/_queue_snapshot.html", {"items": list(selectors.review_items_pending())})


class QueueConsumer(AsyncWebsocketConsumer):
    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not await self._is_reviewer(user):
            await self.close(code=4403)
            return
        live.remember_server_loop()
        await self.channel_layer.group_add(live.REVIEWERS_GROUP, self.channel_name)
        await self.accept()
        await self._present(user)
        await self.send(text_data=await database_sync_to_async(_render_snapshot)())

    async def disconnect(self, code: int) -> None:
        await self.channel_layer.group_discard(live.REVIEWERS_GROUP, self.channel_name)
        await self._absent()

    async def queue_html(self, event: dict[str, Any]) -> None:
        await self.send(text_data=event["html"])

    @database_sync_to_async
    def _present(self, user: Any) -> None:
        ReviewerPresence.objects.update_or_create(channel_name=self.channel_name, defaults={"user": user})

    @database_sync_to_async
    def _absent(self) -> None:
        ReviewerPresence.objects.filter(channel_name=self.channel_name).delete()

    @database_sync_to_async
    def _is_reviewer(self, user: Any) -> bool:
        from reviewq.views import is_reviewer

        return is_reviewer(user)
