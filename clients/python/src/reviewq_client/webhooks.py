"""Checking reviewq's signed callbacks (``callback_url``) before believing them.

reviewq signs ``timestamp + "." + body`` with HMAC-SHA256 under the agent key's webhook secret
(shown once, when the key is created) and sends ``X-Reviewq-Signature: sha256=<hex>``,
``X-Reviewq-Timestamp`` (Unix seconds), ``X-Reviewq-Delivery`` (the same id on every retry of one
delivery: deduplicate on it) and ``X-Reviewq-Event`` (``request.released``, ...).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from reviewq_client.errors import ReviewqError
from reviewq_client.outcome import Outcome

SIGNATURE_HEADER = "X-Reviewq-Signature"
TIMESTAMP_HEADER = "X-Reviewq-Timestamp"
DELIVERY_HEADER = "X-Reviewq-Delivery"
EVENT_HEADER = "X-Reviewq-Event"
# A signed delivery older (or newer) than this is refused: a replayed capture, or a bad clock.
DEFAULT_TOLERANCE_S = 300


class InvalidSignature(ReviewqError):
    """The callback is not signed with this secret, or its timestamp is too far from now."""


@dataclass(frozen=True)
class WebhookEvent:
    delivery_id: str
    event: str
    outcome: Outcome
    payload: dict[str, Any]


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The ``X-Reviewq-Signature`` value for ``body`` sent at ``timestamp``."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify_webhook(
    secret: str,
    body: bytes,
    headers: Mapping[str, str],
    *,
    tolerance_s: float = DEFAULT_TOLERANCE_S,
    now: float | None = None,
) -> WebhookEvent:
    """The callback's event, once its signature and timestamp check out; else ``InvalidSignature``.

    ``body`` must be the raw bytes received (re-encoding parsed JSON changes them).
    """
    lowered = {key.lower(): value for key, value in headers.items()}
    signature = lowered.get(SIGNATURE_HEADER.lower(), "")
    timestamp = lowered.get(TIMESTAMP_HEADER.lower(), "")
    if not signature or not timestamp:
        raise InvalidSignature("the callback carries no signature", code="invalid_signature")
    try:
        sent_at = float(timestamp)
    except ValueError:
        raise InvalidSignature(f"bad timestamp {timestamp!r}", code="invalid_signature") from None
    if abs((time.time() if now is None else now) - sent_at) > tolerance_s:
        raise InvalidSignature("the callback's timestamp is too old or in the future", code="stale_signature")
    if not hmac.compare_digest(sign(secret, timestamp, body), signature):
        raise InvalidSignature("the signature does not match this secret", code="invalid_signature")
    payload = json.loads(body)
    return WebhookEvent(
        delivery_id=str(payload.get("delivery_id") or lowered.get(DELIVERY_HEADER.lower(), "")),
        event=str(payload.get("event") or lowered.get(EVENT_HEADER.lower(), "")),
        outcome=Outcome.from_json(payload["request"]),
        payload=payload,
    )
