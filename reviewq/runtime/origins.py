"""Which pages may open the reviewers' WebSocket: the same origin only (scheme, host and port).

Channels' ``AllowedHostsOriginValidator`` compares the Origin's host with ALLOWED_HOSTS and
ignores its port, so a page on another port of the same host (another app, a dev server) could
ride a reviewer's session cookie into the live queue. Here the Origin must equal the socket's own
origin (``ws`` pairs with ``http``, ``wss`` with ``https``) on a host in ALLOWED_HOSTS, or be one
of CSRF_TRUSTED_ORIGINS exactly.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from channels.security.websocket import WebsocketDenier
from django.conf import settings
from django.http.request import validate_host

_HTTP_FOR_WS = {"ws": "http", "wss": "https"}
_DEFAULT_PORTS = {"http": 80, "https": 443}


def _origin(scheme: str, host: str, port: int | None) -> tuple[str, str, int]:
    return scheme, host.lower(), port or _DEFAULT_PORTS.get(scheme, 0)


def allowed_origin(origin: str, *, socket_scheme: str, socket_host: str) -> bool:
    """Whether a page at ``origin`` may open a socket that was asked for at ``socket_host``."""
    try:
        asked = urlsplit(origin)
        sent = _origin(asked.scheme, asked.hostname or "", asked.port)
        served = urlsplit(f"{_HTTP_FOR_WS.get(socket_scheme, socket_scheme)}://{socket_host}")
        ours = _origin(served.scheme, served.hostname or "", served.port)
    except ValueError:  # an unparsable origin or port
        return False
    trusted = set()
    for entry in settings.CSRF_TRUSTED_ORIGINS:
        parts = urlsplit(entry)
        trusted.add(_origin(parts.scheme, parts.hostname or "", parts.port))
    same_origin = sent == ours and validate_host(ours[1], settings.ALLOWED_HOSTS)
    return same_origin or sent in trusted


class SameOriginValidator:
    """ASGI middleware for WebSocket connections: refuses any whose Origin ``allowed_origin`` refuses."""

    def __init__(self, application: Any) -> None:
        self.application = application

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        headers = dict(scope.get("headers") or [])
        origin = headers.get(b"origin", b"").decode("latin1")
        host = headers.get(b"host", b"").decode("latin1")
        if (
            origin
            and host
            and allowed_origin(origin, socket_scheme=scope.get("scheme", "ws"), socket_host=host)
        ):
            return await self.application(scope, receive, send)
        return await WebsocketDenier()(scope, receive, send)
