"""Outbound webhooks: agents' signed callbacks and on-call pages (webhook or email), retried with
backoff.

A delivery row is written in the same transaction as the decision it reports (one row per
request, event and URL, so one delivery id per decision) and sent after commit; the scheduler
retries what failed. Receivers deduplicate on the ``X-Reviewq-Delivery`` header.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import logging
import smtplib
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core import mail
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from reviewq.models import Request, WebhookDelivery
from reviewq.runtime.dispatch import later

logger = logging.getLogger(__name__)
MAX_ATTEMPTS = 8
# While a sender works on a delivery, nobody else picks it up.
SEND_LEASE_SECONDS = 30


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A redirect is an answer, not a new destination: the receiver is told to fix its URL."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirects)


def callback_url_problem(url: str) -> str | None:
    """Why an agent may not ask for callbacks to ``url`` (WEBHOOK_ALLOWED_HOSTS, and a literal
    private address when WEBHOOK_ALLOW_PRIVATE is off), or None."""
    host = (urllib.parse.urlsplit(url).hostname or "").lower()
    allowed = [entry.lower() for entry in settings.WEBHOOK_ALLOWED_HOSTS]
    if allowed and not any(
        host == entry or (entry.startswith(".") and host.endswith(entry)) for entry in allowed
    ):
        return (
            f"callback_url: {host!r} is not one of the hosts this gateway calls back (WEBHOOK_ALLOWED_HOSTS)"
        )
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None  # a name: checked again where it resolves, at delivery
    if not settings.WEBHOOK_ALLOW_PRIVATE and not address.is_global:
        return f"callback_url: {host} is not a public address"
    return None


def _destination_problem(url: str, kind: str) -> str | None:
    """Why this delivery may not be sent to ``url`` now: its host is not allowed, or resolves to
    an address that is not public while WEBHOOK_ALLOW_PRIVATE is off."""
    if kind == WebhookDelivery.Kind.CALLBACK:
        problem = callback_url_problem(url)
        if problem:
            return problem
    if settings.WEBHOOK_ALLOW_PRIVATE:
        return None
    parts = urllib.parse.urlsplit(url)
    try:
        infos = socket.getaddrinfo(parts.hostname or "", parts.port or 443, proto=socket.IPPROTO_TCP)
    except OSError as exc:
        return f"{parts.hostname} does not resolve: {exc}"
    for info in infos:
        address = str(info[4][0])
        if not ipaddress.ip_address(address.split("%")[0]).is_global:
            return f"{parts.hostname} resolves to {address}, which is not a public address"
    return None


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """``sha256=<hex>`` over ``timestamp.body``, as in the X-Reviewq-Signature header."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def request_payload(request: Request) -> dict[str, Any]:
    return {
        "id": str(request.id),
        "status": request.status,
        "action": request.action,
        "decision": request.decision or None,
    }


def enqueue(*, kind: str, request: Request | None, event: str, url: str, payload: dict[str, Any]) -> None:
    """Records a delivery (once per request, event and URL) and sends it after commit."""
    try:
        with transaction.atomic():
            delivery = WebhookDelivery.objects.create(
                kind=kind,
                request=request,
                event=event,
                url=url,
                payload=payload,
                next_attempt_at=timezone.now(),
            )
    except IntegrityError:
        return  # this decision was already reported: one delivery id per decision
    later("reviewq.tasks.deliver_webhook", delivery.id)


def request_finished(request_id: Any, *, callback_url: str | None = None) -> None:
    """After a request reaches a final state: tell its agent, if it asked for a callback.

    ``callback_url`` is the request's, when the caller knows it (None: look it up).
    """
    if callback_url == "":
        return  # the caller knows none was asked for
    if not Request.objects.filter(id=request_id).exclude(callback_url="").exists():
        return  # no callback asked for: the common case costs one indexed lookup, no row load
    request = Request.objects.get(id=request_id)
    enqueue(
        kind=WebhookDelivery.Kind.CALLBACK,
        request=request,
        event=f"request.{request.status}",
        url=request.callback_url,
        payload={"event": f"request.{request.status}", "request": request_payload(request)},
    )


def deliver_due() -> int:
    """Sends every delivery whose time has come. Returns how many were delivered."""
    due = WebhookDelivery.objects.filter(
        status=WebhookDelivery.Status.PENDING, next_attempt_at__lte=timezone.now()
    ).values_list("id", flat=True)[:100]
    return sum(deliver(delivery_id) for delivery_id in list(due))


def _post(delivery: WebhookDelivery) -> tuple[bool, str]:
    """POSTs the delivery, signed when its agent has a webhook secret. (delivered, error)."""
    body = json.dumps({"delivery_id": str(delivery.delivery_id), **delivery.payload}, default=str).encode()
    timestamp = str(int(time.time()))
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "reviewq-webhooks",
        "X-Reviewq-Delivery": str(delivery.delivery_id),
        "X-Reviewq-Event": delivery.event,
        "X-Reviewq-Timestamp": timestamp,
    }
    if delivery.request is not None and delivery.request.agent_key.webhook_secret:
        headers["X-Reviewq-Signature"] = signature(delivery.request.agent_key.webhook_secret, timestamp, body)
    try:
        with _OPENER.open(
            urllib.request.Request(delivery.url, data=body, headers=headers, method="POST"),
            timeout=settings.WEBHOOK_TIMEOUT_S,
        ) as response:
            ok = 200 <= response.status < 300
            return ok, "" if ok else f"HTTP {response.status}"
    except urllib.error.HTTPError as exc:
        return False, f"HTTP {exc.code}"
    except (OSError, ValueError) as exc:
        return False, str(exc)[:500]


def _send_email(delivery: WebhookDelivery) -> tuple[bool, str]:
    """Sends an email page to the delivery's ``mailto:`` address. (delivered, error)."""
    payload = delivery.payload
    subject = str(payload.get("headline") or delivery.event)[:150]
    body = "\n".join([*map(str, payload.get("details") or []), "", f"Open it: {payload.get('item_url', '')}"])
    try:
        sent = mail.send_mail(
            subject, body, None, [delivery.url.removeprefix("mailto:")], fail_silently=False
        )
    except (OSError, ValueError, smtplib.SMTPException) as exc:  # ValueError: a bad header
        return False, str(exc)[:500]
    return (sent == 1), "" if sent == 1 else "the mail backend sent nothing"


def deliver(delivery_id: int) -> bool:
    """One attempt at one delivery, claimed with a guarded update. True if delivered."""
    now = timezone.now()
    claimed = WebhookDelivery.objects.filter(
        id=delivery_id, status=WebhookDelivery.Status.PENDING, next_attempt_at__lte=now
    ).update(attempts=F("attempts") + 1, next_attempt_at=now + timedelta(seconds=SEND_LEASE_SECONDS))
    if not claimed:
        return False  # someone else is sending it, or it is done
    delivery = WebhookDelivery.objects.select_related("request__agent_key").get(id=delivery_id)
    if delivery.kind == WebhookDelivery.Kind.EMAIL:
        ok, error = _send_email(delivery)
    else:
        refused = _destination_problem(delivery.url, delivery.kind)
        if refused:
            WebhookDelivery.objects.filter(id=delivery.id).update(
                status=WebhookDelivery.Status.FAILED, last_error=refused
            )
            logger.warning("webhook %s to %s refused: %s", delivery.delivery_id, delivery.url, refused)
            return False
        ok, error = _post(delivery)
    if ok:
        WebhookDelivery.objects.filter(id=delivery.id).update(
            status=WebhookDelivery.Status.DELIVERED, delivered_at=timezone.now(), last_error=""
        )
        return True
    failed = delivery.attempts >= MAX_ATTEMPTS
    backoff = min(2 ** (delivery.attempts - 1), 300) * settings.WEBHOOK_BACKOFF_SCALE
    WebhookDelivery.objects.filter(id=delivery.id).update(
        status=WebhookDelivery.Status.FAILED if failed else WebhookDelivery.Status.PENDING,
        next_attempt_at=timezone.now() + timedelta(seconds=backoff),
        last_error=error,
    )
    logger.warning(
        "webhook %s to %s failed (attempt %d): %s",
        delivery.delivery_id,
        delivery.url,
        delivery.attempts,
        error,
    )
    return False
