"""Pushes to reviewers' browsers over the channel layer. A hint only: the database is the truth.

Pushes carry rendered HTML fragments that htmx swaps in out of band, with what a consumer needs
to send each reviewer only the rows of their filtered queue. The WebSocket is at-most-once, so
every (re)connect also gets a full snapshot of that queue (see consumers.py).

In the embedded mode the channel layer lives in the web server's event loop, while the
pipeline runs in a worker thread; a push from such a thread is handed to that loop.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.template.loader import render_to_string

from reviewq.models import ReviewItem

REVIEWERS_GROUP = "reviewers"
logger = logging.getLogger(__name__)

# Set by the first consumer to connect: the loop that owns an in-memory channel layer.
_server_loop: asyncio.AbstractEventLoop | None = None


def remember_server_loop() -> None:
    global _server_loop
    _server_loop = asyncio.get_running_loop()


def _group_send(group: str, message: dict[str, Any]) -> None:
    layer = get_channel_layer()
    if layer is None:
        return
    loop = _server_loop
    in_memory = type(layer).__name__ == "InMemoryChannelLayer"
    if in_memory and loop is not None and loop.is_running():
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is not loop:
            asyncio.run_coroutine_threadsafe(layer.group_send(group, message), loop).result(timeout=5)
            return
    async_to_sync(layer.group_send)(group, message)


def _push(message: dict[str, Any]) -> None:
    """Send ``message`` to every connected reviewer's consumer. Never raises: pushes are hints."""
    try:
        _group_send(REVIEWERS_GROUP, message)
    except Exception:
        logger.exception("push to reviewers failed")


def push_item_upserted(item: ReviewItem) -> None:
    """A new held item, or a change to one (a claim, a first approval of a four-eyes item): its
    row, added or replaced in place. Each consumer sends it only to a reviewer whose queue
    filter the item matches (``QueueConsumer.queue_item``)."""
    _push(
        {
            "type": "queue.item",
            "html": render_to_string("review/_item_upserted.html", {"item": item}),
            "risk_tags": list(item.risk_tags or []),
            "group": item.reviewer_group.name if item.reviewer_group_id and item.reviewer_group else "",
        }
    )


def push_item_removed(item: ReviewItem) -> None:
    """A decided or expired item: its row leaves every queue."""
    _push({"type": "queue.item", "html": render_to_string("review/_item_removed.html", {"item": item})})
