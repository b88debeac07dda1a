"""One ASGI application for HTTP and WebSocket."""

from __future__ import annotations

import os
from typing import Any

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "reviewq.settings")
# The web server pools its PostgreSQL connections (see DB_POOL in settings).
os.environ.setdefault("DB_POOL", "true")

from reviewq.asgi_handler import get_asgi_application

django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402
from django.conf import settings  # noqa: E402
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler  # noqa: E402

from reviewq.routing import websocket_urlpatterns  # noqa: E402

protocol_router = ProtocolTypeRouter(
    {
        # Static files (the review UI's CSS and JS, the admin's) are served here, outside
        # Django's middleware: a sync-only static middleware would put every API call through a
        # thread hop. Everything not under STATIC_URL goes straight to Django.
        "http": ASGIStaticFilesHandler(django_asgi_app),
        "websocket": AllowedHostsOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns))),
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
                from reviewq.finality import ensure_listener

                ensure_listener()  # subscribed before the first wait_ms caller arrives
            if settings.EMBEDDED_WORKER:
                from reviewq.embedded import start_scheduler

                start_scheduler()
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
