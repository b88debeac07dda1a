from __future__ import annotations

from typing import Any

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.contrib.auth.models import User
from django.test import Client

from reviewq.asgi import application
from reviewq.models import ReviewItem
from reviewq.services import intake
from tests.conftest import IN_CI
from tests.factories import risky_body

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("seeded", "inline_pipeline")]
ORIGIN = (b"origin", b"http://127.0.0.1:8000")
HOST = (b"host", b"127.0.0.1:8000")


def session_headers(user: User) -> list[tuple[bytes, bytes]]:
    client = Client()
    client.force_login(user)
    return [(b"cookie", f"sessionid={client.cookies['sessionid'].value}".encode()), ORIGIN, HOST]


def test_a_held_item_is_pushed_to_a_connected_reviewer(reviewer: User, agent: Any) -> None:
    if IN_CI:
        # In CI the push must travel through Redis, not the in-process layer.
        assert type(get_channel_layer()).__name__ == "RedisChannelLayer", settings.CHANNEL_LAYERS

    headers = session_headers(reviewer)

    async def scenario() -> tuple[str, str, str]:
        communicator = WebsocketCommunicator(application, "/ws/review/", headers=headers)
        connected, _ = await communicator.connect()
        assert connected
        snapshot = await communicator.receive_from(timeout=5)
        request, _ = await sync_to_async(intake.request_create)(agent_key=agent[0], payload=risky_body())
        pushed = await communicator.receive_from(timeout=10)
        await communicator.disconnect()
        return snapshot, pushed, str(request.id)

    snapshot, pushed, request_id = async_to_sync(scenario)()
    item = ReviewItem.objects.get(request_id=request_id)
    assert 'id="queue-items"' in snapshot and 'class="row item' not in snapshot
    assert f'id="item-{item.id}"' in pushed
    assert 'data-op="upsert"' in pushed
    assert "cancel_pending_order" in pushed


def test_a_reconnecting_reviewer_gets_every_pending_item(reviewer: User, agent: Any) -> None:
    ids = [intake.request_create(agent_key=agent[0], payload=risky_body())[0].id for _ in range(3)]

    headers = session_headers(reviewer)

    async def scenario() -> str:
        communicator = WebsocketCommunicator(application, "/ws/review/", headers=headers)
        connected, _ = await communicator.connect()
        assert connected
        snapshot = await communicator.receive_from(timeout=5)
        await communicator.disconnect()
        return snapshot

    snapshot = async_to_sync(scenario)()
    for item in ReviewItem.objects.filter(request_id__in=ids):
        assert f'id="item-{item.id}"' in snapshot


@pytest.mark.parametrize("who", ["anonymous", "outsider", "foreign_origin", "another_port", "no_origin"])
def test_the_socket_refuses_strangers(who: str, outsider: User, reviewer: User) -> None:
    cookie = session_headers(reviewer)[0]
    if who == "anonymous":
        headers = [ORIGIN, HOST]
    elif who == "outsider":
        headers = session_headers(outsider)
    elif who == "foreign_origin":
        headers = [cookie, (b"origin", b"http://evil.example"), HOST]
    elif who == "another_port":
        # Same host, another port: another application, which the old check let in.
        headers = [cookie, (b"origin", b"http://127.0.0.1:9999"), HOST]
    else:
        headers = [cookie, HOST]

    async def scenario() -> bool:
        communicator = WebsocketCommunicator(application, "/ws/review/", headers=headers)
        connected, _ = await communicator.connect()
        await communicator.disconnect()
        return connected

    assert async_to_sync(scenario)() is False
