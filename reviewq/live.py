"""Pushes to reviewers' browsers over the channel layer. A hint only: the database is the truth.

Pushes carry rendered HTML fragments that htmx swaps in out of band. The WebSocket is
at-most-once, so every (re)connect also gets a full snapshot (see consumers.py).

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


def push_html(html: str) -> None:
    """Send an HTML fragment to every connected reviewer. Never raises: pushes are hints."""
    try:
        _group_send(REVIEWERS_GROUP, {"type": "queue.html", "html": html})
    except Exception:
        logger.exception("push to reviewers failed")


def push_item_added(item: Any) -> None:
    push_html(render_to_string("review/_item_added.html", {"item": item}))


def push_item_removed(item: Any) -> None:
    push_html(render_to_string("review/_item_removed.html", {"item": item}))


def push_item_changed(item: Any) -> None:
    """A claim, an approval of a four-eyes item: replace the row in place."""
    push_html(render_to_string("review/_item_changed.html", {"item": item}))
