from __future__ import annotations

from django.urls import path

from reviewq.consumers import QueueConsumer

websocket_urlpatterns = [path("ws/review/", QueueConsumer.as_asgi())]
