"""One ASGI application for HTTP and WebSocket."""

from __future__ import annotations

import os
from typing import Any

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "reviewq.settings")

from django.apps import apps

from reviewq.runtime.database import pool_web_connections

if not apps.ready:
    # This module sets Django up: the process is a web server, so it pools its connections. A
    # process that set Django up before importing this (a test run) keeps its connections as
    # they are.
    pool_web_connections()

from reviewq.runtime.asgi_handler import get_asgi_application

django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.conf import settings  # noqa: E402
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler  # noqa: E402

from reviewq.notify.finality import ensure_listener  # noqa: E402
from reviewq.routing import websocket_urlpatterns  # noqa: E402
from reviewq.runtime.embedded import start_scheduler  # noqa: E402
from reviewq.runtime.origins import SameOriginValidator  # noqa: E402

protocol_router = ProtocolTypeRouter(
    {
        # Static files (the review UI's CSS and JS, the admin's) are served here, outside
        # Django's middleware: a sync-only static middleware would put every API call through a
        # thread hop. Everything not under STATIC_URL goes straight to Django.
        "http": ASGIStaticFilesHandler(django_asgi_app),
        "websocket": SameOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns))),
    }
)


async def application(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The protocol router, plus the server's lifespan: the embedded mode starts its scheduler, and
    with Redis the listener for final-state announcements starts."""
    if scope["type"] != "lifespan":
        await protocol_router(scope, receive, send)
        return
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            if settings.REDIS_URL:
                ensure_listener()  # subscribed before the first wait_ms caller arrives
            if settings.EMBEDDED_WORKER:
                start_scheduler()
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
