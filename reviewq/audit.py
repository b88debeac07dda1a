"""The append-only, hash-chained audit log (see AuditEvent)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from typing import Any

from django.db import connection, transaction
from django.utils import timezone

from reviewq.models import AuditEvent

GENESIS = "0" * 64
_CHAIN_LOCK_ID = 0x5245565751  # an arbitrary constant: "REVWQ"


def _digest(prev_hash: str, fields: dict[str, Any]) -> str:
    canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256((prev_hash + canonical).encode()).hexdigest()


def _fields(event: AuditEvent) -> dict[str, Any]:
    return {
        "created_at": event.created_at.isoformat(),
        "actor": event.actor,
        "kind": event.kind,
        "request_id": str(event.request_id) if event.request_id else None,
        "item_id": event.item_id,
        "payload": event.payload,
    }


def record(
    *, kind: str, actor: str, request_id: Any = None, item_id: int | None = None, **payload: Any
) -> AuditEvent:
    """Appends an event, chained to the one before it. Call inside the decision's transaction."""
    with transaction.atomic():
        if connection.vendor == "postgresql":
            # One writer at a time extends the chain; SQLite serialises writers by itself.
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_CHAIN_LOCK_ID])
        last = AuditEvent.objects.order_by("-seq").values_list("hash", flat=True).first()
        event = AuditEvent(
            created_at=timezone.now(),
            actor=actor,
            kind=kind,
            request_id=request_id,
            item_id=item_id,
            payload=json.loads(json.dumps(payload, default=str)),
            prev_hash=last or GENESIS,
        )
        event.hash = _digest(event.prev_hash, _fields(event))
        event.save(force_insert=True)
    return event


def verify() -> Iterator[str]:
    """Yields a problem for each row whose hash or link does not hold; nothing if the log is intact."""
    previous = GENESIS
    for event in AuditEvent.objects.order_by("seq").iterator(chunk_size=2000):
        if event.prev_hash != previous:
            yield f"event #{event.seq}: its link to the previous event is broken"
        if _digest(event.prev_hash, _fields(event)) != event.hash:
            yield f"event #{event.seq}: its content does not match its hash (altered)"
        previous = event.hash
