"""The reviewers' live queue over WebSocket.

Every (re)connect receives a full snapshot rendered from the database, so a reviewer who was
offline misses nothing; later pushes are HTML fragments that htmx swaps in out of band. Both
serve the reviewer's filtered view of the queue (``?tag=&group=`` on the socket's URL, as on the
page): an item outside it is never sent.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.template.loader import render_to_string

from reviewq import selectors
from reviewq.models import ReviewerPresence
from reviewq.notify import push
from reviewq.permissions import is_reviewer
from reviewq.selectors import QueueFilter
from reviewq.untrusted import UntrustedInputError


def _render_snapshot(queue_filter: QueueFilter) -> str:
    items = list(selectors.review_items_pending(queue_filter))
    return render_to_string("review/_queue_snapshot.html", {"items": items})


class QueueConsumer(AsyncWebsocketConsumer):
    queue_filter = QueueFilter()

    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not await database_sync_to_async(is_reviewer)(user):
            await self.close(code=4403)
            return
        query = self.scope.get("query_string", b"").decode("utf-8", errors="replace")
        try:
            self.queue_filter = QueueFilter.from_query(dict(parse_qsl(query)))
        except UntrustedInputError:
            await self.close(code=4400)
            return
        push.remember_server_loop()
        await self.channel_layer.group_add(push.REVIEWERS_GROUP, self.channel_name)
        await self.accept()
        await self._present(user)
        await self.send(text_data=await database_sync_to_async(_render_snapshot)(self.queue_filter))

    async def disconnect(self, code: int) -> None:
        await self.channel_layer.group_discard(push.REVIEWERS_GROUP, self.channel_name)
        await self._absent()

    async def queue_item(self, event: dict[str, Any]) -> None:
        """A pushed row (see reviewq.notify.push): sent on only when it is in this reviewer's view.
        A removal carries no tags and always goes (removing a row that is not there is no error)."""
        if "risk_tags" in event and not self.queue_filter.matches(event["risk_tags"], event["group"]):
            return
        await self.send(text_data=event["html"])

    @database_sync_to_async
    def _present(self, user: Any) -> None:
        ReviewerPresence.objects.update_or_create(channel_name=self.channel_name, defaults={"user": user})

    @database_sync_to_async
    def _absent(self) -> None:
        ReviewerPresence.objects.filter(channel_name=self.channel_name).delete()
