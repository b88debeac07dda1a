from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.utils import timezone

from reviewq.models import ReviewerPresence, ReviewItem, RiskPolicy, WebhookDelivery
from reviewq.notify import alerts, webhooks
from reviewq.services import decisions, intake
from tests.conftest import run_tasks_inline
from tests.factories import read_body, risky_body
from tests.receiver import Receiver

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("seeded", "inline_pipeline")]


@pytest.fixture(autouse=True)
def send_inline(monkeypatch: pytest.MonkeyPatch, settings: Any) -> None:
    """Send webhooks in the test's thread, at once, with no backoff wait."""
    settings.WEBHOOK_BACKOFF_SCALE = 0
    run_tasks_inline(monkeypatch, "reviewq.tasks.deliver_webhook")


def test_a_released_request_calls_the_agent_back_signed(agent: Any, receiver: Receiver) -> None:
    key, _ = agent
    request, _ = intake.request_create(agent_key=key, payload=read_body(callback_url=receiver.url))
    [hook] = receiver.wait_for(1)
    assert hook.json["event"] == "request.released"
    assert hook.json["request"]["id"] == str(request.id)
    assert hook.json["request"]["action"]["tool_calls"][0]["name"] == "get_order_details"
    expected = webhooks.signature(key.webhook_secret, hook.headers["x-reviewq-timestamp"], hook.body)
    assert hook.headers["x-reviewq-signature"] == expected
    assert hook.headers["x-reviewq-delivery"] == hook.json["delivery_id"]


def test_a_failed_delivery_is_retried_with_the_same_delivery_id(agent: Any, receiver: Receiver) -> None:
    receiver.statuses = [500, 503]
    request, _ = intake.request_create(agent_key=agent[0], payload=read_body(callback_url=receiver.url))
    assert len(receiver.wait_for(1)) == 1
    assert webhooks.deliver_due() == 0  # second attempt: 503
    assert webhooks.deliver_due() == 1  # third attempt: delivered
    ids = {hook.headers["x-reviewq-delivery"] for hook in receiver.received}
    assert len(receiver.received) == 3 and len(ids) == 1
    delivery = WebhookDelivery.objects.get(request=request)
    assert (delivery.status, delivery.attempts) == ("delivered", 3)
    assert webhooks.deliver_due() == 0  # nothing left to send


def test_a_human_decision_is_reported_once(agent: Any, receiver: Receiver, reviewer: User) -> None:
    request, _ = intake.request_create(agent_key=agent[0], payload=risky_body(callback_url=receiver.url))
    assert receiver.received == []  # held: nothing final yet
    item = ReviewItem.objects.get(request=request)
    decisions.review_deny(item_id=item.id, reviewer=reviewer, reason="customer did not confirm")
    [hook] = receiver.wait_for(1)
    assert hook.json["event"] == "request.denied"
    assert hook.json["request"]["decision"]["reason"] == "customer did not confirm"
    webhooks.request_finished(request.id)  # a second report of the same decision
    assert WebhookDelivery.objects.filter(request=request).count() == 1


def test_on_call_is_paged_when_nobody_is_watching(agent: Any, receiver: Receiver) -> None:
    RiskPolicy.objects.filter(decision="human").update(notify_url=receiver.url)
    request, _ = intake.request_create(agent_key=agent[0], payload=risky_body())
    [page] = receiver.wait_for(1)
    assert "cancel_pending_order" in page.json["text"]
    assert page.json["request_id"] == str(request.id)
    item = ReviewItem.objects.get(request=request)
    assert item.alerted_at is not None
    assert alerts.page_if_nobody_watching(item.id) is False  # one page per item


def test_a_page_carries_the_decision_facts_and_a_link(agent: Any, receiver: Receiver, settings: Any) -> None:
    settings.PUBLIC_URL = "https://reviewq.example.com"
    RiskPolicy.objects.filter(decision="human").update(notify_url=receiver.url)
    request, _ = intake.request_create(agent_key=agent[0], payload=risky_body())
    [page] = receiver.wait_for(1)
    item = ReviewItem.objects.get(request=request)
    assert page.json["item_url"] == f"https://reviewq.example.com/review/{item.id}/"
    assert f"<https://reviewq.example.com/review/{item.id}/|Open item {item.id}>" in page.json["text"]
    assert page.json["tool"] == "cancel_pending_order"
    assert page.json["arguments"] == {"order_id": "#W2378156", "reason": "no longer needed"}
    assert "order_id=#W2378156" in page.json["text"]
    assert item.policy is not None
    assert page.json["policy"] == item.policy.name and item.policy.name in page.json["text"]


def test_a_page_shows_the_amount_and_keeps_agent_text_inert(agent: Any) -> None:
    request, _ = intake.request_create(agent_key=agent[0], payload=risky_body())
    item = ReviewItem.objects.get(request=request)
    item.action_under_review = {
        "type": "tool_calls",
        "tool_calls": [{"name": "refund", "arguments": {"note": "<!channel> urgent", "amount": 899.0}}],
    }
    page = alerts.page_message(item, alerts.SLA_BREACHED)
    assert page["amount"] == "899.00" and "Amount: 899.00" in str(page["text"])
    assert "Arguments: amount=899.0, note=" in str(page["text"])  # the amount first
    assert "<!channel>" not in str(page["text"]) and "&lt;!channel&gt;" in str(page["text"])


def test_an_sla_breach_pages_again_even_with_the_queue_open(
    agent: Any, receiver: Receiver, reviewer: User
) -> None:
    RiskPolicy.objects.filter(decision="human").update(notify_url=receiver.url)
    ReviewerPresence.objects.create(channel_name="test!tab", user=reviewer)
    request, _ = intake.request_create(agent_key=agent[0], payload=risky_body())
    assert receiver.received == []  # someone has the queue open: no page on hold
    assert alerts.page_sla_breaches() == 0  # not overdue yet
    ReviewItem.objects.filter(request=request).update(sla_due_at=timezone.now())
    assert alerts.page_sla_breaches() == 1
    [page] = receiver.wait_for(1)
    assert page.json["event"] == alerts.SLA_BREACHED and "breached its review SLA" in page.json["text"]
    assert alerts.page_sla_breaches() == 0  # once per item


def test_email_pages_go_through_the_mail_backend(agent: Any, mailoutbox: Any) -> None:
    RiskPolicy.objects.filter(decision="human").update(notify_email="oncall@example.com, lead@example.com")
    request, _ = intake.request_create(agent_key=agent[0], payload=risky_body())
    assert sorted(address for mail in mailoutbox for address in mail.to) == [
        "lead@example.com",
        "oncall@example.com",
    ]
    item = ReviewItem.objects.get(request=request)
    assert "cancel_pending_order" in mailoutbox[0].subject
    assert f"/review/{item.id}/" in mailoutbox[0].body and "order_id=#W2378156" in mailoutbox[0].body
    emails = WebhookDelivery.objects.filter(kind=WebhookDelivery.Kind.EMAIL)
    assert set(emails.values_list("status", flat=True)) == {"delivered"}


def test_a_policy_refuses_a_malformed_email_address() -> None:
    policy = RiskPolicy(name="p", decision="human", notify_email="oncall@example.com, not-an-address")
    with pytest.raises(ValidationError, match="not-an-address"):
        policy.clean()


def test_no_page_while_a_reviewer_has_the_queue_open(agent: Any, receiver: Receiver, reviewer: User) -> None:
    RiskPolicy.objects.filter(decision="human").update(notify_url=receiver.url)
    ReviewerPresence.objects.create(channel_name="test!abc", user=reviewer)
    intake.request_create(agent_key=agent[0], payload=risky_body())
    assert receiver.received == []


def test_the_requester_watching_their_own_queue_does_not_count(agent: Any, receiver: Receiver) -> None:
    RiskPolicy.objects.filter(decision="human").update(notify_url=receiver.url)
    ReviewerPresence.objects.create(channel_name="test!owner", user=User.objects.get(username="carol"))
    intake.request_create(agent_key=agent[0], payload=risky_body())
    assert len(receiver.wait_for(1)) == 1


def test_stale_presence_does_not_count(agent: Any, receiver: Receiver, reviewer: User) -> None:
    RiskPolicy.objects.filter(decision="human").update(notify_url=receiver.url)
    presence = ReviewerPresence.objects.create(channel_name="test!old", user=reviewer)
    ReviewerPresence.objects.filter(id=presence.id).update(
        connected_at=timezone.now() - alerts.PRESENCE_MAX_AGE * 2
    )
    intake.request_create(agent_key=agent[0], payload=risky_body())
    assert json.loads(receiver.wait_for(1)[0].body)["item_id"]


# --- Where webhooks may go ---


@pytest.fixture
def redirector(receiver: Receiver) -> Iterator[str]:
    """A URL that answers every POST with a redirect to ``receiver``."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            self.send_response(307)
            self.send_header("Location", receiver.url)
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook"
    server.shutdown()
    server.server_close()


def test_a_redirect_is_not_followed(agent: Any, receiver: Receiver, redirector: str) -> None:
    request, _ = intake.request_create(agent_key=agent[0], payload=read_body(callback_url=redirector))
    delivery = WebhookDelivery.objects.get(request=request)
    assert (delivery.status, delivery.last_error) == ("pending", "HTTP 307")  # retried later, never followed
    assert receiver.received == []


def test_ops_can_restrict_callback_hosts(client: Any, agent: Any, receiver: Receiver, settings: Any) -> None:
    settings.WEBHOOK_ALLOWED_HOSTS = ["hooks.example.com", ".partner.example"]
    response = client.post(
        "/api/v1/requests",
        json.dumps(read_body(callback_url=receiver.url)),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {agent[1]}",
    )
    assert (response.status_code, response.json()["code"]) == (422, "invalid_callback_url")
    assert webhooks.callback_url_problem("https://api.partner.example/hook") is None
    assert webhooks.callback_url_problem("https://hooks.example.com/x") is None
    assert webhooks.callback_url_problem("https://evil.example/x") is not None


def test_private_addresses_are_refused_when_not_allowed(
    agent: Any, receiver: Receiver, settings: Any
) -> None:
    """The default in production: a literal private address is refused at intake, and a name that
    resolves to one (here localhost) is refused when the delivery would be sent."""
    settings.WEBHOOK_ALLOW_PRIVATE = False
    assert "not a public address" in (webhooks.callback_url_problem(receiver.url) or "")
    assert webhooks.callback_url_problem("http://169.254.169.254/latest/meta-data") is not None
    by_name = receiver.url.replace("127.0.0.1", "localhost")
    request, _ = intake.request_create(agent_key=agent[0], payload=read_body(callback_url=by_name))
    delivery = WebhookDelivery.objects.get(request=request)
    assert delivery.status == "failed" and "not a public address" in delivery.last_error
    assert receiver.received == []
